"""The audio U-Net of the Sound of Pixels family, with configurable depth and width.

One class covers SoP's `unet7` (bilinear upsampling + 3x3 conv, K output
channels), Co-Separation's `AudioVisual7layerUNet` (transposed convolutions,
visual vector tiled at the bottleneck), CRN's refinement net (2 input
channels) and the CPU recipe's 5-level GroupNorm net (nearest upsampling).

Structure (pix2pix skip blocks, as the originals): level i (0 = outermost) has
`min(ngf * 2**i, max_channels)` channels; the way down is 4x4 stride-2 convs,
`LeakyReLU(0.2) -> conv -> norm` (no norm at the outermost and innermost
level); the way up is `ReLU -> x2 up -> norm` with the skip concatenated after
it, the outermost up-conv giving the output channels with no activation. Only
the output conv has a bias (SoP's `UnetBlock`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avsep_jax.models import layers


def level_channels(ngf: int = 64, num_levels: int = 7, max_channels: int = 512) -> list[int]:
  """Channels of each level's way down, outermost first (the last: the bottleneck's).

  The defaults are `AudioUNet`'s.
  """
  return [min(ngf * 2**i, max_channels) for i in range(num_levels)]


class AudioUNet(nnx.Module):
  """U-Net over spectrogram images `[B, F, T, C]` (F, T divisible by 2**num_levels)."""

  def __init__(self, in_channels: int = 1, out_channels: int = 1, *, ngf: int = 64,
               num_levels: int = 7, max_channels: int = 512, norm: str = "batch",
               norm_groups: int = 8, upsample: str = "bilinear", cond_dim: int = 0,
               input_norm: bool = True, init_std: float | None = 1e-3, rngs: nnx.Rngs):
    """Builds the net.

    Args:
      in_channels: input channels (1: log magnitude; CRN's refiner: 2).
      out_channels: output channels (SoP: K = 32 features; mask nets: 1).
      ngf: channels of the outermost level.
      num_levels: down/up levels (SoP: 7, 256 -> 2 at the bottleneck).
      max_channels: cap on a level's channels (SoP: 8 * ngf).
      norm: 'batch' (originals), 'group' (CPU recipe) or 'none'.
      norm_groups: groups of GroupNorm.
      upsample: 'bilinear' (SoP, align_corners=True) or 'nearest', each followed
        by a 3x3 conv (for 'nearest' the two are one phase-wise conv,
        `layers.upsample_conv3x3`), or 'transpose' (Co-Separation: 4x4 stride-2
        transposed conv).
      cond_dim: length of a conditioning vector tiled over the bottleneck and
        concatenated before the audio features (Co-Separation); 0: none.
      input_norm: normalise the input with `norm` first (SoP's BatchNorm(1)).
      init_std: conv weights ~ N(0, init_std) (SoP: 1e-3; Co-Separation: 0.02);
        None: He-normal.
    """
    if num_levels < 2:
      raise ValueError(f"num_levels={num_levels}: a U-Net needs at least 2 levels")
    if upsample not in layers.UPSAMPLES:
      raise ValueError(f"upsample={upsample!r}: expected one of {layers.UPSAMPLES}")
    self.num_levels, self.upsample, self.cond_dim = num_levels, upsample, cond_dim
    ch = level_channels(ngf, num_levels, max_channels)
    self.input_norm = layers.Norm(in_channels, norm if input_norm else "none", groups=1,
                                  rngs=rngs)
    # As SoP's UnetBlock: no conv biases but the output conv's.
    self.down = nnx.List([
        layers.DownConv(in_channels if i == 0 else ch[i - 1], ch[i], use_bias=False,
                        init_std=init_std, rngs=rngs) for i in range(num_levels)])
    self.down_norms = nnx.List([
        layers.Norm(ch[i], norm if 0 < i < num_levels - 1 else "none", groups=norm_groups,
                    rngs=rngs) for i in range(num_levels)])
    up, up_norms = [], []
    for i in range(num_levels):
      c_in = ch[i] + cond_dim if i == num_levels - 1 else 2 * ch[i]
      c_out = out_channels if i == 0 else ch[i - 1]
      if upsample == "transpose":
        # PyTorch's ConvTranspose2d(k=4, s=2, p=1), computed by output phases.
        up.append(layers.UpConv(c_in, c_out, use_bias=i == 0, init_std=init_std, rngs=rngs))
      elif upsample == "nearest":
        # Upsample + 3x3 conv as one phase-wise conv (same values and parameters).
        up.append(layers.NearestUpConv(c_in, c_out, use_bias=i == 0, init_std=init_std,
                                       rngs=rngs))
      else:
        up.append(layers.conv(c_in, c_out, 3, use_bias=i == 0, init_std=init_std, rngs=rngs))
      up_norms.append(layers.Norm(c_out, norm if i > 0 else "none", groups=norm_groups,
                                  rngs=rngs))
    self.up, self.up_norms = nnx.List(up), nnx.List(up_norms)

  def __call__(self, x, cond=None):
    """U-Net forward.

    Args:
      x: `[B, F, T, in_channels]`.
      cond: `[B, cond_dim]` when the net was built with `cond_dim > 0`.

    Returns:
      `[B, F, T, out_channels]`, no output activation.
    """
    return self.decode(self.encode(x), cond)

  def encode(self, x) -> list:
    """The way down: each level's features (pre-activation), outermost first.

    Separate from `decode` so that several queries of one input (Co-Separation's
    sources of one mixture) share one pass down.
    """
    size = 2**self.num_levels
    if x.shape[1] % size or x.shape[2] % size:
      raise ValueError(f"U-Net input {x.shape}: F and T must be multiples of 2**num_levels "
                       f"= {size}")
    skips = []
    h = self.input_norm(x)
    for i, (conv, norm) in enumerate(zip(self.down, self.down_norms)):
      h = norm(conv(h if i == 0 else jax.nn.leaky_relu(h, 0.2)))
      skips.append(h)
    return skips

  def up_channels(self) -> list[int]:
    """Channels of each level's up-conv output, outermost first (`decode`'s `film` sizes)."""
    return [norm.channels for norm in self.up_norms]

  def decode(self, skips: list, cond=None, film=None):
    """The way up from `encode`'s features (leading axes `[B]`).

    Args:
      skips: `encode`'s features.
      cond: `[B, cond_dim]`, tiled at the bottleneck (nets built with `cond_dim`).
      film: per level (outermost first) None or `(gamma, beta)` `[B, C_level]`:
        the level's normalised up-conv output becomes `h * (1 + gamma) + beta`
        (AdaIN-style dense conditioning, IAL-CMS; sizes from `up_channels`).
    """
    if (cond is None) != (self.cond_dim == 0):
      raise ValueError(f"U-Net built with cond_dim={self.cond_dim} but called with "
                       f"cond={'None' if cond is None else cond.shape}")
    h = skips[-1]
    if cond is not None:
      tiled = jnp.broadcast_to(cond[:, None, None, :], h.shape[:3] + cond.shape[-1:])
      h = jnp.concatenate([tiled.astype(h.dtype), h], axis=-1)
    for i in reversed(range(self.num_levels)):
      h = jax.nn.relu(h)
      if self.upsample == "bilinear":  # the other two upsample inside their conv
        h = layers.upsample2x(h, self.upsample)
      h = self.up_norms[i](self.up[i](h))
      if film is not None and film[i] is not None:
        gamma, beta = film[i]
        h = h * (1 + gamma[:, None, None, :]) + beta[:, None, None, :]
      if i > 0:
        h = jnp.concatenate([skips[i - 1], h], axis=-1)
    return h
