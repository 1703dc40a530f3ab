"""SeCo (separation with consistency guidance) for categories unseen in training.

A Co-Separation-style separator without any class-specific part: each
source's object crop gives a visual vector tiled at the audio U-Net's
bottleneck, which predicts that source's ratio-mask logits. For the
consistency losses (`avsep_jax.losses.seco_loss`) the model also embeds each
separated spectrogram (`audio_embed`, a small conv net on log(|mix| x mask))
and each visual vector (`visual_embed`) in one L2-normalised space, and can
separate any mixture map with any crops again (`separate`), which the
re-mixing consistency uses.

With `motion`, each source's frames also pass a `FrameTrack`, and its
per-frame features, resampled to each decoder level's time axis, scale and
shift that level's features (time-varying FiLM): the separator can then give
a source the time frames where its player moves, a cue that carries over to
categories never seen in training, where the crop's appearance does not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avsep_jax.audio import masks as masks_lib
from avsep_jax.models import coseparation
from avsep_jax.models import layers
from avsep_jax.models import motion as motion_lib
from avsep_jax.models import unet as unet_lib
from avsep_jax.models import visual as visual_lib


class SeCo(nnx.Module):
  """`{mix_mag, crops}` -> mask logits `[1, B, N, F, T]` and audio/visual embeddings `[B, N, D]`."""

  def __init__(self, *, visual_dim: int = 64, embed_dim: int = 64, unet: dict | None = None,
               visual: dict | None = None, audio_embed: dict | None = None,
               mask_activation: str = "sigmoid", motion: dict | None = None,
               rngs: nnx.Rngs):
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
      motion: None (crops only), or the `FrameTrack` arguments (`out_dim`,
        `frame_net`, ...) of a motion track over each source's `frames`.
    """
    if mask_activation not in ("sigmoid", "softmax"):
      raise ValueError(f"mask_activation={mask_activation!r}: expected 'sigmoid' or 'softmax'")
    self.mask_activation = mask_activation
    self.visual = visual_lib.VisualEncoder(visual_dim, **(visual or {}), rngs=rngs)
    self.unet = unet_lib.AudioUNet(1, 1, cond_dim=visual_dim, **(unet or {}), rngs=rngs)
    self.audio_embed = visual_lib.VisualEncoder(embed_dim, in_channels=1,
                                                **(audio_embed or {}), rngs=rngs)
    self.visual_embed = nnx.Linear(visual_dim, embed_dim, rngs=rngs)
    if motion:
      motion = dict(motion)
      dim = motion.pop("out_dim")
      self.motion = motion_lib.FrameTrack(dim, **motion, rngs=rngs)
      # Zero-initialised: training starts from the crop-only separator.
      self.motion_film = nnx.List([
          nnx.Linear(dim, 2 * c, kernel_init=nnx.initializers.zeros, rngs=rngs)
          for c in self.unet.up_channels()])
    else:
      self.motion = self.motion_film = None

  def motion_track(self, frames):
    """Each source's per-frame motion features: `[B, N, K, H, W, 3]` -> `[B, N, K, D]`."""
    if frames is None:
      raise ValueError("SeCo with model.motion needs each source's frames: set "
                       "dataset.frame_rate (or dataset.num_frames)")
    track = self.motion(frames.reshape((-1,) + frames.shape[2:]))
    return track.reshape(frames.shape[:3] + track.shape[-1:])

  def motion_film_params(self, track, time_frames: int) -> list:
    """Per decoder level `(gamma, beta)` `[B*N, T / 2**level, C_level]` from the motion
    track `[B, N, K, D]`; `time_frames` is T, the spectrogram's length."""
    track = track.reshape((-1,) + track.shape[2:])                      # [B*N, K, D]
    film = []
    for level, linear in enumerate(self.motion_film):
      # Frames sit at the centres of K equal spans of the segment, STFT frames
      # near the centres of T: half-pixel linear resampling lines them up.
      length = max(1, time_frames // 2**level)
      resampled = jax.image.resize(track, (track.shape[0], length, track.shape[2]), "linear")
      film.append(tuple(jnp.split(linear(resampled), 2, axis=-1)))
    return film

  def separate(self, mix_mag, crops, source_mask=None, track=None):
    """Visual vectors `[B, N, V]` and mask logits `[B, N, F, T]` of `mix_mag` `[B, F, T]`.

    `source_mask` `[B, N]`: the valid sources (the softmax runs over them).
    `track` `[B, N, K, D]`: each source's `motion_track` (models with `motion`).
    """
    film = None
    if self.motion is not None:
      if track is None:
        raise ValueError("SeCo with model.motion: separate() needs each source's motion track")
      film = self.motion_film_params(track, mix_mag.shape[-1])
    vectors, logits = coseparation.query_pass(self.visual, self.unet, mix_mag, crops, film)
    if self.mask_activation == "softmax":
      b, n = vectors.shape[:2]
      valid = (jnp.ones((b, n), bool) if source_mask is None else source_mask)[..., None, None]
      probs = jax.nn.softmax(jnp.where(valid, logits, -1e9), axis=1)
      logits = layers.probabilities_to_logits(probs)
    return vectors, logits

  def __call__(self, inputs: dict) -> dict:
    """Mask logits and the embeddings of the consistency losses.

    Args:
      inputs: `mix_mag` `[B, F, T]` warped mixture magnitude, `crops` `[B, N, H, W, 3]`,
        `frames` `[B, N, K, H, W, 3]` (with `motion`).

    Returns:
      `mask_logits` `[1, B, N, F, T]`; `audio_embedding` and `visual_embedding`
      `[B, N, D]`, L2-normalised; with `motion`, `motion_track` `[B, N, K, D_m]`
      (the re-mixing consistency reuses it).
    """
    track = None if self.motion is None else self.motion_track(inputs.get("frames"))
    vectors, logits = self.separate(inputs["mix_mag"], inputs["crops"],
                                    inputs.get("source_mask"), track)
    separated = inputs["mix_mag"][:, None] * jax.nn.sigmoid(logits)    # [B, N, F, T]
    audio = self.audio_embed(masks_lib.log_magnitude(separated)[..., None])
    out = {"mask_logits": logits[None], "audio_embedding": layers.l2_normalise(audio),
           "visual_embedding": layers.l2_normalise(self.visual_embed(vectors))}
    if track is not None:
      out["motion_track"] = track
    return out
