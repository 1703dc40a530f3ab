"""SeCo (separation with consistency guidance) for categories unseen in training.

A Co-Separation-style separator without any class-specific part: each
source's object crop gives a visual vector tiled at the audio U-Net's
bottleneck, which predicts that source's ratio-mask logits. For the
consistency losses (`avsep_jax.losses.seco_loss`) the model also embeds each
separated spectrogram (`audio_embed`, a small conv net on log(|mix| x mask))
and each visual vector (`visual_embed`) in one L2-normalised space, and can
separate any mixture map with any crops again (`separate`), which the
re-mixing consistency uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avsep_jax.audio import masks as masks_lib
from avsep_jax.models import coseparation
from avsep_jax.models import layers
from avsep_jax.models import unet as unet_lib
from avsep_jax.models import visual as visual_lib


class SeCo(nnx.Module):
  """`{mix_mag, crops}` -> mask logits `[1, B, N, F, T]` and audio/visual embeddings `[B, N, D]`."""

  def __init__(self, *, visual_dim: int = 64, embed_dim: int = 64, unet: dict | None = None,
               visual: dict | None = None, audio_embed: dict | None = None,
               mask_activation: str = "sigmoid", rngs: nnx.Rngs):
    """Builds the model.

    Args:
      visual_dim: length of the visual vector tiled at the bottleneck.
      embed_dim: D, the shared audio-visual embedding's length.
      unet: `AudioUNet` arguments other than channels and `cond_dim`.
      visual: `VisualEncoder` arguments of the crop encoder.
      audio_embed: `VisualEncoder` arguments of the separated-spectrogram
        encoder (one input channel).
      mask_activation: 'sigmoid' (each source's mask on its own) or 'softmax'
        (over the mixture's valid sources: the masks add up to one, so the
        estimates add up to the mixture; the logits returned are those of the
        normalised masks).
    """
    if mask_activation not in ("sigmoid", "softmax"):
      raise ValueError(f"mask_activation={mask_activation!r}: expected 'sigmoid' or 'softmax'")
    self.mask_activation = mask_activation
    self.visual = visual_lib.VisualEncoder(visual_dim, **(visual or {}), rngs=rngs)
    self.unet = unet_lib.AudioUNet(1, 1, cond_dim=visual_dim, **(unet or {}), rngs=rngs)
    self.audio_embed = visual_lib.VisualEncoder(embed_dim, in_channels=1,
                                                **(audio_embed or {}), rngs=rngs)
    self.visual_embed = nnx.Linear(visual_dim, embed_dim, rngs=rngs)

  def separate(self, mix_mag, crops, source_mask=None):
    """Visual vectors `[B, N, V]` and mask logits `[B, N, F, T]` of `mix_mag` `[B, F, T]`.

    `source_mask` `[B, N]`: the valid sources (the softmax runs over them).
    """
    vectors, logits = coseparation.query_pass(self.visual, self.unet, mix_mag, crops)
    if self.mask_activation == "softmax":
      b, n = vectors.shape[:2]
      valid = (jnp.ones((b, n), bool) if source_mask is None else source_mask)[..., None, None]
      probs = jax.nn.softmax(jnp.where(valid, logits, -1e9), axis=1)
      logits = layers.probabilities_to_logits(probs)
    return vectors, logits

  def __call__(self, inputs: dict) -> dict:
    """Mask logits and the embeddings of the consistency losses.

    Args:
      inputs: `mix_mag` `[B, F, T]` warped mixture magnitude, `crops` `[B, N, H, W, 3]`.

    Returns:
      `mask_logits` `[1, B, N, F, T]`; `audio_embedding` and `visual_embedding`
      `[B, N, D]`, L2-normalised.
    """
    vectors, logits = self.separate(inputs["mix_mag"], inputs["crops"],
                                    inputs.get("source_mask"))
    separated = inputs["mix_mag"][:, None] * jax.nn.sigmoid(logits)    # [B, N, F, T]
    audio = self.audio_embed(masks_lib.log_magnitude(separated)[..., None])
    return {"mask_logits": logits[None], "audio_embedding": layers.l2_normalise(audio),
            "visual_embedding": layers.l2_normalise(self.visual_embed(vectors))}
