"""Training losses of the mask-predicting systems (SoP, Co-Separation, CRN).

One function serves the three: a weighted mask loss on each step's masks
(SoP: weighted BCE on binary masks; Co-Separation/CRN: weighted L1 between
sigmoid masks and ratio targets), summed with per-step weights (CRN: the base
step, then its refinement steps), plus the object-consistency cross-entropy
where the model classifies its separated spectrograms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _masked_mean(values, valid):
  """Mean of `values` `[B, N, F, T]` over valid sources (`valid` `[B, N]`)."""
  weights = jnp.broadcast_to(valid[..., None, None], values.shape).astype(values.dtype)
  return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def mask_loss(outputs: dict, features: dict, batch: dict, *, mask: str,
              step_weights: tuple[float, ...], classification_weight: float = 0.0,
              alignment_weight: float = 0.0, weighted: bool = True):
  """Total loss and its parts.

  Args:
    outputs: the model's `mask_logits` `[S, B, N, F, T]` (and `class_logits` `[B, N, C]`).
    features: `separation_features` with `target` `[B, N, F, T]` and `weight` `[B, F, T]`.
    batch: `labels` `[B, N]` and `source_mask` `[B, N]`.
    mask: 'binary' (weighted BCE on logits) or 'ratio' (weighted L1 on sigmoid masks).
    step_weights: weight of each of the S steps' mask losses.
    classification_weight: weight of the object-consistency cross-entropy.
    alignment_weight: weight of CRN's feature alignment, the mean squared
      difference between `alignment_features[0]` (true sources) and `[1]` (last
      step), `[2, B, N, D]`, over valid sources (the original: 100).
    weighted: weigh each bin by `features["weight"]` (SoP's clip(log1p|mix|,
      1e-3, 10)); False: every bin alike (MTSC).

  Returns:
    `(loss, metrics)`, metrics a dict of scalars (`loss`, `mask_loss/step_i`,
    `classification_loss`, `classification_accuracy`, `alignment_loss`).
  """
  logits = outputs["mask_logits"]
  if len(step_weights) != logits.shape[0]:
    raise ValueError(f"train.loss.step_weights has {len(step_weights)} entries; the model "
                     f"predicts {logits.shape[0]} steps")
  valid = batch["source_mask"]
  target = features["target"]
  weight = features["weight"][:, None] if weighted else 1.0
  total, metrics = 0.0, {}
  for i, w in enumerate(step_weights):
    if mask == "binary":
      per_bin = optax.sigmoid_binary_cross_entropy(logits[i], target)
    else:
      per_bin = jnp.abs(jax.nn.sigmoid(logits[i]) - target)
    term = _masked_mean(weight * per_bin, valid)
    metrics[f"mask_loss/step_{i}"] = term
    total = total + w * term
  if classification_weight and "class_logits" in outputs:
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs["class_logits"],
                                                         batch["labels"])
    valid_f = valid.astype(ce.dtype)
    metrics["classification_loss"] = (ce * valid_f).sum() / jnp.maximum(valid_f.sum(), 1.0)
    hits = (outputs["class_logits"].argmax(-1) == batch["labels"]).astype(ce.dtype)
    metrics["classification_accuracy"] = (hits * valid_f).sum() / jnp.maximum(valid_f.sum(), 1.0)
    total = total + classification_weight * metrics["classification_loss"]
  if alignment_weight:
    if "alignment_features" not in outputs:
      raise ValueError("train.loss.alignment_weight > 0 needs a model with an alignment head "
                       "(CRN's model.alignment)")
    real, fake = outputs["alignment_features"]
    per_source = jnp.mean(jnp.square(real - fake), axis=-1)           # [B, N]
    valid_f = valid.astype(per_source.dtype)
    metrics["alignment_loss"] = (per_source * valid_f).sum() / jnp.maximum(valid_f.sum(), 1.0)
    total = total + alignment_weight * metrics["alignment_loss"]
  metrics["loss"] = total
  return total, metrics
