"""CRN / FCSN (Ma et al., 2021): Co-Separation plus a weight-shared refinement cycle.

Step 0 is Co-Separation's mask M_0. Each refinement step i = 1..T feeds one
shared U-Net the current mask and the residual mask — what the mixture still
holds after all sources' separated spectrograms are taken out,
`(|mix| - sum_n M_n |mix|) / |mix|` — with the source's visual vector at the
bottleneck, and gives M_i. The T steps are one `lax.scan` over the refiner's
state (compiled once, whatever T), with gradients through every step as in
the original (or, with `detach_steps`, through each step only).

Alignment (the original's audio-feature loss): in training, when the inputs
carry the sources' magnitudes, the object-consistency classifier's backbone
maps `log |source|` and `log(M_T |mix|)` and an `AlignmentHead` projects both;
the loss pulls the refined spectrogram's features to the true source's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avsep_jax.audio import masks as masks_lib
from avsep_jax.models import coseparation
from avsep_jax.models import layers
from avsep_jax.models import unet as unet_lib


# How a refinement step's output becomes the next mask logits (`CRN`).
REFINE_UPDATES = ("replace", "residual")


class AlignmentHead(nnx.Module):
  """The original's `Down_channels`: classifier map -> one feature vector per spectrogram.

  1x1 conv to `channels` + norm + ReLU, then the map's rows flattened and a
  linear layer to `dim`. The original flattens the whole 8 x 8 map of its fixed
  256 x 256 input; here the time axis is averaged first, so the head takes any
  clip length (training segments and full clips differ) and keeps the
  frequency layout.
  """

  def __init__(self, map_channels: int, rows: int, *, channels: int = 128, dim: int = 512,
               norm: str = "batch", norm_groups: int = 8, init_std: float | None = 0.02,
               rngs: nnx.Rngs):
    """Builds the head.

    Args:
      map_channels: channels of the classifier's backbone map.
      rows: frequency rows of that map (input rows / the backbone's stride).
      channels: after the 1x1 conv (original: 128).
      dim: output length (original: 512).
      norm, norm_groups: after the 1x1 conv (original: BatchNorm).
      init_std: N(0, std) weights of the conv and the linear (original: 0.02);
        None: He-normal.
    """
    self.rows = rows
    self.proj = layers.conv(map_channels, channels, 1, use_bias=norm == "none",
                            init_std=init_std, rngs=rngs)
    self.norm = layers.Norm(channels, norm, groups=norm_groups, rngs=rngs)
    self.out = nnx.Linear(rows * channels, dim, kernel_init=layers.normal_init(init_std),
                          rngs=rngs)

  def __call__(self, feature_map):
    """`[M, rows, W, map_channels]` -> `[M, dim]`."""
    if feature_map.shape[1] != self.rows:
      raise ValueError(f"alignment head: the classifier map has {feature_map.shape[1]} rows, "
                       f"the head was built for {self.rows} (model.alignment.input_rows must "
                       "be audio.warp_bins)")
    x = jax.nn.relu(self.norm(self.proj(feature_map))).mean(axis=2)  # [M, rows, channels]
    return self.out(x.reshape(x.shape[0], -1))


class CRN(coseparation.CoSeparation):
  """CRN: `{mix_mag, crops, source_mask}` -> mask logits `[1 + T, B, N, F, T']`."""

  def __init__(self, *, num_classes: int, refine_steps: int = 3, visual_dim: int = 512,
               unet: dict | None = None, refine_unet: dict | None = None,
               visual: dict | None = None, classifier: dict | None = None,
               unroll: bool = True, detach_steps: bool = False, refine_update: str = "replace",
               refine_sees_mixture: bool = False, alignment: dict | None = None,
               rngs: nnx.Rngs):
    """Builds the model.

    Args:
      num_classes, visual_dim, unet, visual, classifier: as `CoSeparation`.
      refine_steps: T, refinement steps (the original's `refine_iteration`: 3).
      refine_unet: `AudioUNet` arguments of the refiner (default: as `unet`).
      unroll: compile the scan's T steps as straight-line code. XLA:CPU runs
        convolutions inside a loop about 13x slower (measured: CRN CPU default
        13 s vs 1.0 s per train step); on TPU/GPU a rolled loop (False)
        compiles faster for large T at the same speed.
      detach_steps: stop gradients at each refinement step's input masks, so
        a step's loss trains the refiner on the masks it was given and never
        the steps before it (the original lets gradients flow through every
        step: False).
      refine_update: how a step's refiner output becomes the next mask
        logits: 'replace' (the original: the output is the new logits, so
        every step re-synthesises the whole mask) or 'residual' (the output
        is added to the step's input logits, so a step only corrects them).
      refine_sees_mixture: also give the refiner log|mix| as a third input
        channel (the original's refiner sees only the mask and the residual
        mask: False).
      alignment: `AlignmentHead` arguments plus `input_rows` (the spectrogram
        rows, `audio.warp_bins`); None: no alignment features.
    """
    super().__init__(num_classes=num_classes, visual_dim=visual_dim, unet=unet, visual=visual,
                     classifier=classifier, rngs=rngs)
    if refine_steps < 1:
      raise ValueError(f"refine_steps={refine_steps}: CRN needs at least one step")
    if refine_update not in REFINE_UPDATES:
      raise ValueError(f"refine_update={refine_update!r}: expected one of {REFINE_UPDATES}")
    self.refine_update, self.refine_sees_mixture = refine_update, refine_sees_mixture
    self.refine_steps, self.unroll, self.detach_steps = refine_steps, unroll, detach_steps
    self.refine = unet_lib.AudioUNet(3 if refine_sees_mixture else 2, 1, cond_dim=visual_dim,
                                     **(unet if refine_unet is None else refine_unet), rngs=rngs)
    head = None
    if alignment:
      alignment = dict(alignment)
      rows = -(-alignment.pop("input_rows") // self.classifier.map_stride)
      head = AlignmentHead(self.classifier.map_channels, rows, **alignment, rngs=rngs)
    self.align = head

  def __call__(self, inputs: dict) -> dict:
    """Mask logits of the base and every refinement step, class logits of the base.

    Args:
      inputs: `mix_mag` `[B, F, T]`, `crops` `[B, N, H, W, 3]`, optional
        `source_mask` `[B, N]` (padded sources are left out of the residual)
        and, in training, `source_mag` `[B, N, F, T]` (the sources' magnitudes
        in `mix_mag`'s bins, for the alignment features).

    Returns:
      `{"mask_logits": [1 + refine_steps, B, N, F, T], "class_logits": [B, N, C]}`,
      plus `"alignment_features": [2, B, N, dim]` (true source, last step) when
      the model has an alignment head and `source_mag` is given.
    """
    vectors, base_logits = self.first_pass(inputs)                      # [B, N, D], [B, N, F, T]
    mix_mag = inputs["mix_mag"]                                         # [B, F, T]
    valid = inputs.get("source_mask")
    valid = (jnp.ones(vectors.shape[:2], mix_mag.dtype) if valid is None
             else valid.astype(mix_mag.dtype))
    log_mix = masks_lib.log_magnitude(mix_mag)                          # [B, F, T]
    graphdef, refiner_state = nnx.split(self.refine)

    def step(carry, _):
      state, logits = carry
      refiner = nnx.merge(graphdef, state)
      if self.detach_steps:
        logits = jax.lax.stop_gradient(logits)
      masks = jax.nn.sigmoid(logits)                                    # [B, N, F, T]
      separated = (masks * valid[..., None, None]).sum(1) * mix_mag     # [B, F, T]
      residual = (mix_mag - separated) / (mix_mag + masks_lib.MAG_EPS)
      channels = [masks, jnp.broadcast_to(residual[:, None], masks.shape)]
      if self.refine_sees_mixture:
        channels.append(jnp.broadcast_to(log_mix[:, None], masks.shape))
      x = jnp.stack(channels, axis=-1)                                  # [B, N, F, T, 2|3]
      update = self.separate(refiner, x, vectors)
      logits = logits + update if self.refine_update == "residual" else update
      return (nnx.state(refiner), logits), logits

    carry = (refiner_state, base_logits)
    if self.unroll and self.refine_steps == 1:  # scan keeps a 1-step loop even unrolled
      (refiner_state, _), refined = step(carry, None)
      refined = refined[None]
    else:
      (refiner_state, _), refined = jax.lax.scan(step, carry, length=self.refine_steps,
                                                 unroll=self.unroll)
    nnx.update(self.refine, refiner_state)  # BatchNorm statistics of the last step
    outputs = {"mask_logits": jnp.concatenate([base_logits[None], refined]),
               "class_logits": self.classify(mix_mag, base_logits)}
    if self.align is not None and "source_mag" in inputs:
      final = mix_mag[:, None] * jax.nn.sigmoid(refined[-1])            # [B, N, F, T]

      def features(mag):  # one classifier call each, as the original (BatchNorm batches)
        maps = self.classifier.feature_map(masks_lib.log_magnitude(mag).reshape(
            (-1,) + mag.shape[2:] + (1,)))
        return self.align(maps).reshape(mag.shape[:2] + (-1,))

      outputs["alignment_features"] = jnp.stack([features(inputs["source_mag"]),
                                                 features(final)])
    return outputs
