"""MTSC (Modeling Two-Stream Correspondence): appearance/timbre and motion/content streams.

Each source's frames feed two visual streams: the appearance net (a 2-D trunk
on a few frames, optionally a sigmoid, a per-pixel linear to the U-Net's bottleneck width,
mean over frames: a `[h, w, C]` map) and the motion net (a 3-D ResNet on the
whole frame clip, linear to C). `TwoStreamFusion` pools the appearance map by
motion-guided attention (`sigmoid(a * <motion, appearance pixel> / sqrt(C) +
b)` weights the pixels, then a max over them); the motion (content) vector and
the pooled appearance (timbre) vector are tiled over the audio U-Net's
bottleneck beside its features, and the U-Net decodes one mask per source.

Top-level modules (what `train.stages` freezes): `unet`, `appearance`,
`motion`, `fusion`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avsep_jax.audio import masks as masks_lib
from avsep_jax.models import layers
from avsep_jax.models import motion as motion_lib
from avsep_jax.models import unet as unet_lib
from avsep_jax.models import visual as visual_lib


class AppearanceNet(nnx.Module):
  """Frames `[B, N, T, H, W, 3]` -> appearance maps `[B, N, h, w, dim]` (mean over frames)."""

  def __init__(self, dim: int, *, backbone: str = "convnet",
               widths: tuple[int, ...] = (16, 32, 64, 64), norm: str = "group",
               norm_groups: int = 8, activation: str = "none", rngs: nnx.Rngs):
    """`activation`: on the trunk's map, 'sigmoid' (the original, on a frozen
    ImageNet trunk) or 'none'."""
    if activation not in ("none", "sigmoid"):
      raise ValueError(f"appearance activation={activation!r}: expected 'none' or 'sigmoid'")
    self.activation = activation
    self.trunk, channels, _ = visual_lib.build_backbone(
        backbone, widths=widths, norm=norm, norm_groups=norm_groups, rngs=rngs)
    self.proj = nnx.Linear(channels, dim, rngs=rngs)

  def __call__(self, frames):
    lead = frames.shape[:3]
    maps = self.trunk(frames.reshape((-1,) + frames.shape[3:]))
    if self.activation == "sigmoid":
      maps = jax.nn.sigmoid(maps)
    maps = self.proj(maps)                                            # [B*N*T, h, w, dim]
    return maps.reshape(lead + maps.shape[1:]).mean(axis=2)


class MotionNet(nnx.Module):
  """Frame clips `[B, N, T, H, W, 3]` -> motion vectors `[B, N, dim]` (3-D ResNet + linear)."""

  def __init__(self, dim: int, *, size: int | None = None, rngs: nnx.Rngs, **resnet):
    """`size`: frames resized to this side first (the original: 112); None: as given."""
    self.size = size
    self.trunk = motion_lib.ResNet3D(**resnet, rngs=rngs)
    self.proj = nnx.Linear(self.trunk.out_channels, dim, rngs=rngs)

  def __call__(self, frames):
    clips = frames.reshape((-1,) + frames.shape[2:])                  # [B*N, T, H, W, 3]
    if self.size and self.size != clips.shape[2]:
      clips = jax.image.resize(clips, clips.shape[:2] + (self.size, self.size, 3), "bilinear")
    return self.proj(self.trunk(clips)).reshape(frames.shape[:2] + (-1,))


class TwoStreamFusion(nnx.Module):
  """The two streams' vectors for the U-Net's bottleneck: motion, and appearance pooled by it."""

  def __init__(self, *, rngs: nnx.Rngs):
    del rngs  # no random parameters
    # The original's 1x1 conv on the one-channel correspondence map: a scale and a bias.
    self.attention_scale = nnx.Param(jnp.ones((), jnp.float32))
    self.attention_bias = nnx.Param(jnp.zeros((), jnp.float32))

  def attention_pool(self, appearance, motion):
    """Appearance maps `[M, h, w, C]` pooled by correspondence with `motion` `[M, C]`."""
    score = jnp.einsum("mhwc,mc->mhw", appearance, motion) / np.sqrt(motion.shape[-1])
    weights = jax.nn.sigmoid(self.attention_scale[...] * score + self.attention_bias[...])
    return (weights[..., None] * appearance).max(axis=(1, 2))         # [M, C]

  def __call__(self, appearance, motion):
    """Appearance `[M, h, w, C]`, motion `[M, C]` -> the bottleneck's condition `[M, 2C]`."""
    return jnp.concatenate([motion, self.attention_pool(appearance, motion)], axis=-1)


class MTSC(nnx.Module):
  """MTSC: `{mix_mag, frames}` -> mask logits `[1, B, N, F, T]`."""

  def __init__(self, *, appearance_frames: int = 3, appearance_input: str = "frames",
               unet: dict | None = None,
               appearance: dict | None = None, motion: dict | None = None,
               rngs: nnx.Rngs):
    """Builds the model.

    Args:
      appearance_frames: frames of each clip (evenly spaced) the appearance
        net sees (the original: 3); the motion net sees all of them.
      appearance_input: 'frames' (the original) or 'crops' (each source's
        object crop instead of its frames).
      unet: `AudioUNet` arguments other than the channel counts.
      appearance: `AppearanceNet` arguments (trunk).
      motion: `MotionNet` arguments (`size` and the `ResNet3D` ones).
    """
    if appearance_frames < 1:
      raise ValueError(f"appearance_frames={appearance_frames} must be >= 1")
    self.appearance_frames = appearance_frames
    self.appearance_input = visual_lib.check_visual_input(appearance_input, "appearance_input")
    unet = dict(unet or {})
    channels = unet_lib.level_channels(**{k: unet[k] for k in ("ngf", "num_levels",
                                                               "max_channels") if k in unet})[-1]
    self.unet = unet_lib.AudioUNet(1, 1, cond_dim=2 * channels, **unet, rngs=rngs)
    self.appearance = AppearanceNet(channels, **(appearance or {}), rngs=rngs)
    self.motion = MotionNet(channels, **(motion or {}), rngs=rngs)
    self.fusion = TwoStreamFusion(rngs=rngs)

  def __call__(self, inputs: dict) -> dict:
    """Mask logits of every source.

    Args:
      inputs: `mix_mag` `[B, F, T]` warped mixture magnitude and `frames`
        `[B, N, T', H, W, 3]` (T' >= appearance_frames).

    Returns:
      `{"mask_logits": [1, B, N, F, T]}`.
    """
    if "frames" not in inputs:
      raise ValueError("MTSC needs frames: set dataset.num_frames > 0")
    frames = inputs["frames"]
    b, n, clip = frames.shape[:3]
    if clip < self.appearance_frames:
      raise ValueError(f"frames {frames.shape}: {clip} per source, fewer than "
                       f"appearance_frames={self.appearance_frames}")
    if self.appearance_input == "crops":
      appearance = self.appearance(inputs["crops"][:, :, None])       # [B, N, h, w, C]
    else:
      picks = np.linspace(0, clip - 1, self.appearance_frames).round().astype(int)
      appearance = self.appearance(frames[:, :, picks])
    motion = self.motion(frames)                                      # [B, N, C]
    log_mix = masks_lib.log_magnitude(inputs["mix_mag"])[..., None]    # [B, F, T, 1]
    # One way down per mixture; the fused bottleneck and the way up per source.
    skips = [jnp.repeat(h, n, axis=0) for h in self.unet.encode(log_mix)]
    cond = self.fusion(appearance.reshape((b * n,) + appearance.shape[2:]),
                       motion.reshape(b * n, -1))                     # [B*N, 2C]
    out = self.unet.decode(skips, cond)                               # [B*N, F, T, 1]
    return {"mask_logits": out[..., 0].reshape((b, n) + out.shape[1:3])[None]}
