"""Sound of Pixels (Zhao et al., 2018): visual channel weights x audio U-Net features.

The U-Net turns the mixture's log magnitude into K feature maps; the visual
net turns each source's picture into K weights; SoP's linear synthesizer
(`InnerProd`) gives each source's mask logits
`sum_k v_k * s_k * a_k[f, t] + b` with a learned scale s and bias b.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from avsep_jax.audio import masks as masks_lib
from avsep_jax.models import unet as unet_lib
from avsep_jax.models import visual as visual_lib


class SoundOfPixels(nnx.Module):
  """SoP: `{mix_mag, crops | frames}` -> mask logits `[1, B, N, F, T]`."""

  def __init__(self, *, num_channels: int = 32, visual_input: str = "frames",
               unet: dict | None = None, visual: dict | None = None, rngs: nnx.Rngs):
    """Builds the model.

    Args:
      num_channels: K, the U-Net's output features = the visual vector's length.
      visual_input: 'frames' (SoP: 3 frames per source) or 'crops' (object crops).
      unet: `AudioUNet` arguments other than the channel counts.
      visual: `VisualEncoder` arguments other than `out_dim`.
    """
    self.visual_input = visual_lib.check_visual_input(visual_input)
    self.unet = unet_lib.AudioUNet(1, num_channels, **(unet or {}), rngs=rngs)
    self.visual = visual_lib.VisualEncoder(num_channels, **(visual or {}), rngs=rngs)
    # InnerProd: scale starts at 1, bias at 0 (SoP's synthesizer).
    self.synth_scale = nnx.Param(jnp.ones((num_channels,), jnp.float32))
    self.synth_bias = nnx.Param(jnp.zeros((), jnp.float32))

  def __call__(self, inputs: dict) -> dict:
    """Mask logits of every source.

    Args:
      inputs: `mix_mag` `[B, F, T]` warped mixture magnitude, and `crops`
        `[B, N, H, W, 3]` or `frames` `[B, N, T', H, W, 3]` (per `visual_input`).

    Returns:
      `{"mask_logits": [1, B, N, F, T]}`.
    """
    log_mix = masks_lib.log_magnitude(inputs["mix_mag"])[..., None]   # [B, F, T, 1]
    features = self.unet(log_mix)                                      # [B, F, T, K]
    weights = self.visual(inputs[self.visual_input])                   # [B, N, K]
    logits = jnp.einsum("bftk,bnk->bnft", features, weights * self.synth_scale[...])
    return {"mask_logits": (logits + self.synth_bias[...])[None]}
