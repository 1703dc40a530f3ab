"""Training losses: the mask loss (SoP, Co-Separation, CRN, MTSC, the thesis
variant), IAL-CMS's losses (`ial_loss`) and SeCo's (`seco_loss`).

`mask_loss` serves the mask-predicting systems: a weighted mask loss on each step's masks
(SoP: weighted BCE on binary masks; Co-Separation/CRN: weighted L1 between
sigmoid masks and ratio targets), summed with per-step weights (CRN: the base
step, then its refinement steps), plus the object-consistency cross-entropy
where the model classifies its separated spectrograms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from avsep_jax import audio
from avsep_jax.audio import masks as masks_lib
from avsep_jax.models import layers


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


def si_snr(estimate, reference, *, cap_db: float = 30.0, eps: float = 1e-8):
  """Scale-invariant SNR (dB) `[...]` of waveforms `[..., L]`, soft-capped at `cap_db`.

  Both are made zero-mean; the noise gets a floor of 10^(-cap/10) x the
  projection's energy (IAL-CMS), so no term exceeds `cap_db`; a silent
  estimate scores about -80 dB.
  """
  estimate = estimate - estimate.mean(-1, keepdims=True)
  reference = reference - reference.mean(-1, keepdims=True)
  scale = (estimate * reference).sum(-1, keepdims=True) / (
      jnp.square(reference).sum(-1, keepdims=True) + eps)
  projection = scale * reference
  signal = jnp.square(projection).sum(-1)
  noise = jnp.square(estimate - projection).sum(-1)
  # eps outside the ratio: a silent estimate scores 10 log10(eps) = -80 dB, not
  # the 0 dB of eps / eps, so silence never beats a poor separation.
  return 10.0 * jnp.log10(signal / (noise + 10.0**(-cap_db / 10.0) * signal + eps) + eps)


def contrastive_av_loss(audio_embedding, visual_maps, valid, *, temperature: float,
                        drop_hardest: int):
  """Symmetric InfoNCE between each source's audio embedding and every source's visual map.

  Args:
    audio_embedding: `[B, N, D]`, L2-normalised.
    visual_maps: `[B, N, h, w, D]`, L2-normalised pixels.
    valid: `[B, N]` sources that take part.
    temperature: of the softmax (IAL-CMS: 0.3).
    drop_hardest: the most similar negatives left out of each row and column
      (false-negative tolerance; IAL-CMS: 6).

  Returns:
    The mean over valid sources of both directions' cross-entropy.
  """
  d = audio_embedding.shape[-1]
  audio = audio_embedding.reshape(-1, d)                                # [M, D]
  maps = visual_maps.reshape(audio.shape[0], -1, d)                      # [M, P, D]
  # sim[i, j]: audio i against the best-matching pixel of picture j.
  sim = jnp.einsum("id,jpd->ijp", audio, maps).max(-1) / temperature   # [M, M]
  ok = valid.reshape(-1)
  eye = jnp.eye(sim.shape[0], dtype=bool)

  def one_direction(s):
    negatives = ok[None, :] & ~eye & ok[:, None]
    if drop_hardest and s.shape[0] > 2:
      k = min(drop_hardest, s.shape[0] - 2)  # at least one negative stays
      ranked = jnp.where(negatives, s, -jnp.inf)
      kth = jax.lax.top_k(ranked, k)[0][:, -1:]                          # [M, 1]
      negatives &= ranked < kth
    logits = jnp.where(negatives | eye, s, -jnp.inf)
    ce = -jnp.diagonal(jax.nn.log_softmax(logits, axis=-1))
    return jnp.where(ok, ce, 0.0).sum() / jnp.maximum(ok.sum(), 1)

  return 0.5 * (one_direction(sim) + one_direction(sim.T))


def step_weight(base: float, boundaries: tuple[int, ...], factor: float, step):
  """`base` x `factor` for every boundary in `boundaries` that `step` has reached."""
  passed = sum((step >= b).astype(jnp.float32) for b in boundaries) if boundaries else 0.0
  return base * factor**passed


def ial_loss(model, outputs: dict, features: dict, batch: dict, shares, *, step, key,
             length: int, hop_length: int, align_corners: bool, video_size: int,
             si_snr_cap: float, avc_weight: float, avc_steps: tuple[int, ...],
             independence_weight: float, independence_steps: tuple[int, ...],
             weight_factor: float, temperature: float, drop_hardest: int,
             hinge_c: float):
  """IAL-CMS's losses: -SI-SNR, audio-visual contrast, independency critic and its term.

  Args:
    model: the `IALCMS` model (its critic and memory bank; None critic: no
      adversarial terms).
    outputs: the model's `masks`, `audio_embedding`, `visual_maps`.
    features: `mix_spec` and `mix_mag` of the mixtures.
    batch: `source_mask` `[B, N]`.
    shares: each source's waveform in the mixture `[B, N, L]`.
    step, key: the update's step (loss-weight schedules) and randomness.
    length, hop_length, align_corners: of the waveforms and the front end.
    video_size: sources per "video": the separation loss compares the sum of
      each video's estimates with the video's audio (1: every source on its
      own, the supervised setting; 2: synthetic duets, the unsupervised one).
    si_snr_cap: the SI-SNR soft cap (dB).
    avc_weight, avc_steps: the contrastive weight and the steps where it
      grows `weight_factor`-fold.
    independence_weight, independence_steps: likewise the adversarial term's.
    weight_factor: growth at each of those steps (IAL-CMS: 10).
    temperature, drop_hardest: of the contrastive loss.
    hinge_c: the critic's hinge-loss weight C.

  Returns:
    `(loss, metrics)`: the separator's loss plus the critic's (each reaches
    only its own parameters: the critic sees separated spectra without their
    gradient, the separator's term a gradient-free copy of the critic).
  """
  masks = outputs["masks"][-1]                                           # [B, N, F, T]
  valid = batch["source_mask"]
  b, n = valid.shape
  if n % video_size:
    raise ValueError(f"train.loss.ial.video_size={video_size} does not divide the {n} sources")
  estimates = audio.masks_to_waveforms(masks, features["mix_spec"], length,
                                       hop_length=hop_length, align_corners=align_corners)
  group = lambda x: x.reshape((b, n // video_size, video_size) + x.shape[2:]).sum(2)
  video_valid = valid.reshape(b, n // video_size, video_size).any(-1)
  snr = si_snr(group(estimates * valid[..., None]), group(shares * valid[..., None]),
               cap_db=si_snr_cap)
  video_valid_f = video_valid.astype(snr.dtype)
  separation = -(snr * video_valid_f).sum() / jnp.maximum(video_valid_f.sum(), 1.0)
  metrics = {"si_snr": -separation}
  total = separation
  if avc_weight:
    contrast = contrastive_av_loss(outputs["audio_embedding"], outputs["visual_maps"], valid,
                                   temperature=temperature, drop_hardest=drop_hardest)
    weight = step_weight(avc_weight, avc_steps, weight_factor, step)
    metrics.update(avc_loss=contrast, avc_weight=weight)
    total = total + weight * contrast
  if getattr(model, "critic", None) is not None:
    separated = masks * features["mix_mag"][:, None]                     # [B, N, F, T]
    critic_loss, generator_term, critic_metrics = independence_terms(
        model, separated, valid, key, hinge_c=hinge_c)
    weight = step_weight(independence_weight, independence_steps, weight_factor, step)
    metrics.update(critic_metrics, independence_weight=weight, critic_loss=critic_loss,
                   independence_term=generator_term)
    total = total + weight * generator_term + critic_loss
  metrics["loss"] = total
  return total, metrics


def independence_terms(model, separated, valid, key, *, hinge_c: float):
  """The critic's hinge loss and the separator's adversarial term; updates the bank.

  Dependent pairs: each source with the next source of its mixture; independent
  pairs: each source with a random memory-bank entry (earlier steps'
  separated sources). The bank then takes this step's sources.

  Returns:
    `(critic_loss, generator_term, metrics)`.
  """
  b, n = valid.shape
  flat = separated.reshape((b * n,) + separated.shape[2:])
  # Each source's partner is the next source of its mixture; the encoder reads
  # one spectrum at a time, so a partner's encoding is its row rolled.
  next_in_mixture = lambda g: jnp.roll(g.reshape(b, n, -1), -1, axis=1).reshape(g.shape)
  dep_valid = (valid & jnp.roll(valid, -1, axis=1)).reshape(-1)
  ok = valid.reshape(-1)
  bank, count = model.bank[...], model.bank_count[...]
  if bank.shape[1:] != flat.shape[1:]:
    raise ValueError(f"model.bank_shape={tuple(bank.shape[1:])} but the separated spectra are "
                     f"{tuple(flat.shape[1:])} (audio.warp_bins x frames)")
  filled = jnp.clip(count, 1, bank.shape[0])
  drawn = bank[jax.random.randint(key, (flat.shape[0],), 0, filled)]
  ind_valid = ok & (count > 0)

  def mean(x, where):
    w = where.astype(x.dtype)
    return (x * w).sum() / jnp.maximum(w.sum(), 1.0)

  # The critic's loss: its own parameters, the separated spectra held fixed;
  # each spectrum is encoded once.
  fixed = jax.lax.stop_gradient(flat)
  g_fixed, g_drawn = model.critic.encode(fixed), model.critic.encode(drawn)
  s_ind = model.critic.score_pairs(g_fixed, g_drawn)
  s_dep = model.critic.score_pairs(g_fixed, next_in_mixture(g_fixed))
  critic_loss = model.critic.weight_norm2() + hinge_c * (
      mean(jax.nn.relu(1.0 - s_ind), ind_valid) + mean(jax.nn.relu(1.0 + s_dep), dep_valid))
  # The separator's term: through a gradient-free copy of the critic.
  graphdef, state = nnx.split(model.critic)
  frozen = nnx.merge(graphdef, jax.lax.stop_gradient(state))
  g_flat = frozen.encode(flat)
  g_ind = frozen.score_pairs(g_flat, jax.lax.stop_gradient(g_drawn))
  g_dep = frozen.score_pairs(g_flat, next_in_mixture(g_flat))
  generator_term = mean(g_ind, ind_valid) - mean(g_dep, dep_valid)
  # Write this step's valid sources into the ring buffer.
  slots = (count + jnp.cumsum(ok) - 1) % bank.shape[0]
  slots = jnp.where(ok, slots, bank.shape[0])                            # invalid: dropped
  model.bank[...] = bank.at[slots].set(fixed, mode="drop")
  model.bank_count[...] = count + ok.sum()
  return critic_loss, generator_term, {"critic_independent": mean(s_ind, ind_valid),
                                       "critic_dependent": mean(s_dep, dep_valid)}


def _feature_distance(a, b):
  """SeCo's `l2_distance`: mean squared difference of L2-normalised vectors `[..., D]`."""
  return jnp.mean((layers.l2_normalise(a) - layers.l2_normalise(b)) ** 2, axis=-1)


def _mean_over_valid(values, valid):
  """Sum over sources of each source's batch mean of `values` `[B, N]` (valid rows)."""
  valid = valid.astype(values.dtype)
  return jnp.sum((values * valid).sum(0) / jnp.maximum(valid.sum(0), 1.0))


def seco_gt_ratio(step, *, decay: float, every: float, floor: float):
  """The share of the true sources' features in the positive sync term:
  `max(floor, decay ** (step / every))` (SeCo: 0.9, 100, 0.1)."""
  return jnp.maximum(floor, decay ** (step / every))


def seco_loss(outputs: dict, features: dict, batch: dict, *, step, mask: str, weighted: bool,
              sync_weight: float, temp_weight: float, sync_margin: float, negatives: str,
              gt_decay: float, gt_every: float, gt_floor: float):
  """SeCo's losses, as its released code computes them (configs/seco.py).

  With d(a, v) the mean squared difference of L2-normalised features
  (`_feature_distance`), valid sources n, m of a mixture and batch means:

  - the mask loss (`mask_loss`; SeCo: binary masks, weighted BCE);
  - sync (inter-modal), weight `sync_weight`:
    positive `sum_n d(sep_n, v_n) + g * sum_n d(gt_n, v_n)` with g the
    `seco_gt_ratio` schedule; negative, 'easy' (the code's choice):
    `sum_n mean_{m != n} relu(margin - d(sep_n, v_m))`, or 'same_class':
    `sum_n relu(margin - d(temp_n, v_n))`;
  - temporal (intra-modal), weight `temp_weight`: positive
    `sum_n mean((l2(temp_n) - l2(sep_n))^2)`, negative the mean over pairs
    n < m of `relu(1 - mean((l2(sep_n) - l2(sep_m))^2))`.

  Returns:
    `(loss, metrics)` as `mask_loss`, with `sync_pos`, `sync_neg`,
    `temp_pos`, `temp_neg`.
  """
  if negatives not in ("easy", "same_class"):
    raise ValueError(f"seco negatives={negatives!r}: expected 'easy' or 'same_class'")
  total, metrics = mask_loss(outputs, features, batch, mask=mask, step_weights=(1.0,),
                             weighted=weighted)
  valid = batch["source_mask"]
  sep, vision = outputs["audio_sep_feat"], outputs["vision_feat"]     # [B, N, D]
  n = valid.shape[1]
  pos = _mean_over_valid(_feature_distance(sep, vision), valid)
  if "audio_gt_feat" in outputs:
    ratio = seco_gt_ratio(step, decay=gt_decay, every=gt_every, floor=gt_floor)
    pos = pos + ratio * _mean_over_valid(_feature_distance(outputs["audio_gt_feat"], vision),
                                         valid)
  pair = valid[:, :, None] & valid[:, None, :] & ~jnp.eye(n, dtype=bool)   # [B, N, M]
  if negatives == "easy":
    hinge = jax.nn.relu(sync_margin - _feature_distance(sep[:, :, None], vision[:, None]))
    per_source = (hinge * pair).sum(2) / jnp.maximum(pair.sum(2), 1)
    neg = _mean_over_valid(per_source, valid)
  else:
    neg = _mean_over_valid(jax.nn.relu(
        sync_margin - _feature_distance(outputs["audio_temp_feat"], vision)), valid)
  metrics.update(sync_pos=pos, sync_neg=neg)
  total = total + sync_weight * (pos + neg)
  if temp_weight:
    temp_pos = _mean_over_valid(_feature_distance(outputs["audio_temp_feat"], sep), valid)
    unit = layers.l2_normalise(sep)
    apart = jnp.mean((unit[:, :, None] - unit[:, None]) ** 2, axis=-1)
    upper = pair & jnp.triu(jnp.ones((n, n), bool), 1)
    temp_neg = (jax.nn.relu(1.0 - apart) * upper).sum() / jnp.maximum(upper.sum(), 1)
    metrics.update(temp_pos=temp_pos, temp_neg=temp_neg)
    total = total + temp_weight * (temp_pos + temp_neg)
  metrics["loss"] = total
  return total, metrics
