"""3-D nets over short frame clips, pooled to one vector per clip.

`ResNet3D`: Hara et al.'s 3-D ResNet, the motion (content) stream of MTSC.
`FastPathway`: the Fast pathway of a SlowFast network, SeCo's video net.

Layout of Hara et al.'s 3-D ResNets (`generate_model(depth)`, the one MTSC
loads): a stem conv (7x7x7, stride 1 in time and 2 in space, then 3x3x3 max
pool of stride 2), stages of basic blocks (3x3x3 convs; ResNet-18/34) or
bottleneck blocks (1x1x1 -> 3x3x3 -> 1x1x1 x4 channels; ResNet-50), the first
block of every stage but the first with stride 2 in time and space, and a
global average pool. `[B, T, H, W, 3]` clips -> `[B, out_channels]` vectors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avsep_jax.models import layers

BLOCKS = ("basic", "bottleneck")


class Conv3D(nnx.Module):
  """Bias-free 3-D conv, symmetric `k // 2` padding, He-normal weights `[kt, kh, kw, in, out]`.

  With `fold_time` the conv runs as one 2-D conv over the frames, the kt
  shifted copies of the clip stacked on the channel axis (the same sums in
  another order): XLA:CPU's 3-D convolutions were 3-30x slower than the folded
  form, forward plus backward (e.g. the CPU default's stem 1081 against 61 ms).
  Accelerators run the plain 3-D conv (`fold_time=False`) without that
  activation copy.
  """

  def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int, int], *,
               stride: tuple[int, int, int] = (1, 1, 1), fold_time: bool = True,
               rngs: nnx.Rngs):
    shape = tuple(kernel) + (in_ch, out_ch)
    self.kernel = nnx.Param(layers.normal_init(None)(rngs.params(), shape))
    self.stride, self.fold_time = tuple(stride), fold_time

  def __call__(self, x):
    """`[M, T, H, W, in]` -> `[M, T / st, H / sh, W / sw, out]`."""
    w = self.kernel[...]
    kt, kh, kw = w.shape[:3]
    st, sh, sw = self.stride
    if not self.fold_time:
      return jax.lax.conv_general_dilated(
          x, w, self.stride, [(k // 2, k // 2) for k in (kt, kh, kw)],
          dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    x = jnp.pad(x, ((0, 0), (kt // 2, kt // 2), (0, 0), (0, 0), (0, 0)))
    frames = (x.shape[1] - kt) // st + 1
    shifted = jnp.concatenate([x[:, dt:dt + st * (frames - 1) + 1:st] for dt in range(kt)],
                              axis=-1)                                # [M, T', H, W, kt * in]
    flat = shifted.reshape((-1,) + shifted.shape[2:])
    w2 = jnp.transpose(w, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * w.shape[3], w.shape[4])
    y = jax.lax.conv_general_dilated(flat, w2, (sh, sw), [(kh // 2, kh // 2), (kw // 2, kw // 2)],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(shifted.shape[:2] + y.shape[1:])


def build_stages(channels: int, blocks, widths, make_block):
  """`(stages, out_channels)`: stages of `make_block(in, width, stride)` blocks, the
  first block of every stage but the first with stride 2."""
  stages = []
  for i, (count, width) in enumerate(zip(blocks, widths)):
    stage = []
    for j in range(count):
      stage.append(make_block(channels, width, 2 if i > 0 and j == 0 else 1))
      channels = stage[-1].out_channels
    stages.append(nnx.List(stage))
  return nnx.List(stages), channels


class Residual3D(nnx.Module):
  """Convs in sequence (each normalised, ReLU between) plus a shortcut, then ReLU.

  `shapes`: `(in, out, kernel, stride)` per conv; the shortcut is a strided
  1x1x1 projection where the shape changes (`shortcut_stride` != 1 or other
  channels), else the identity.
  """

  def __init__(self, in_ch: int, shapes, *, shortcut_stride: tuple[int, int, int], norm: str,
               norm_groups: int, fold_time: bool = True, rngs: nnx.Rngs):
    self.out_channels = shapes[-1][1]
    self.convs = nnx.List([Conv3D(a, b, k, stride=st, fold_time=fold_time, rngs=rngs)
                           for a, b, k, st in shapes])
    self.norms = nnx.List([layers.Norm(b, norm, groups=norm_groups, rngs=rngs)
                           for _, b, _, _ in shapes])
    if any(x != 1 for x in shortcut_stride) or in_ch != self.out_channels:
      self.shortcut = Conv3D(in_ch, self.out_channels, (1, 1, 1), stride=shortcut_stride,
                             fold_time=fold_time, rngs=rngs)
      self.shortcut_norm = layers.Norm(self.out_channels, norm, groups=norm_groups, rngs=rngs)
    else:
      self.shortcut = self.shortcut_norm = None

  def __call__(self, x):
    skip = x if self.shortcut is None else self.shortcut_norm(self.shortcut(x))
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = norm(conv(x))
      if i < len(self.convs) - 1:
        x = jax.nn.relu(x)
    return jax.nn.relu(x + skip)


class Block3D(Residual3D):
  """A basic or bottleneck residual block (Hara et al.), strided in time and space."""

  def __init__(self, in_ch: int, width: int, *, block: str, stride: int, norm: str,
               norm_groups: int, fold_time: bool = True, rngs: nnx.Rngs):
    s = (stride,) * 3
    if block == "basic":
      shapes = [(in_ch, width, (3, 3, 3), s), (width, width, (3, 3, 3), (1, 1, 1))]
    else:
      shapes = [(in_ch, width, (1, 1, 1), (1, 1, 1)), (width, width, (3, 3, 3), s),
                (width, 4 * width, (1, 1, 1), (1, 1, 1))]
    super().__init__(in_ch, shapes, shortcut_stride=s, norm=norm, norm_groups=norm_groups,
                     fold_time=fold_time, rngs=rngs)


class ResNet3D(nnx.Module):
  """3-D ResNet trunk + global average pool: clips `[M, T, H, W, 3]` -> `[M, out_channels]`."""

  def __init__(self, *, block: str = "basic", blocks: tuple[int, ...] = (2, 2, 2, 2),
               widths: tuple[int, ...] = (64, 128, 256, 512), stem_kernel: int = 7,
               stem_pool: bool = True, norm: str = "batch", norm_groups: int = 8,
               in_channels: int = 3, fold_time: bool = True, rngs: nnx.Rngs):
    """Builds the net.

    Args:
      block: 'basic' (ResNet-18/34) or 'bottleneck' (ResNet-50: blocks
        (3, 4, 6, 3), 2048 output channels).
      blocks: blocks per stage.
      widths: each stage's width (a bottleneck stage outputs 4x).
      stem_kernel: the stem conv's side (Hara et al.: 7).
      stem_pool: the 3x3x3 stride-2 max pool after the stem.
      norm, norm_groups: 'batch' (the original), 'group' or 'none'.
      in_channels: 3 for RGB.
      fold_time: run the 3-D convs as 2-D convs over stacked frames (`Conv3D`).
    """
    if block not in BLOCKS:
      raise ValueError(f"motion block={block!r}: expected one of {BLOCKS}")
    if len(blocks) != len(widths) or not blocks:
      raise ValueError(f"motion blocks={blocks} and widths={widths} need one entry per stage")
    self.stem_pool = stem_pool
    k = stem_kernel
    self.stem = Conv3D(in_channels, widths[0], (k, k, k), stride=(1, 2, 2), fold_time=fold_time,
                       rngs=rngs)
    self.stem_norm = layers.Norm(widths[0], norm, groups=norm_groups, rngs=rngs)
    self.stages, self.out_channels = build_stages(
        widths[0], blocks, widths,
        lambda c_in, width, stride: Block3D(c_in, width, block=block, stride=stride, norm=norm,
                                            norm_groups=norm_groups, fold_time=fold_time,
                                            rngs=rngs))

  def __call__(self, clips):
    if clips.ndim != 5:
      raise ValueError(f"motion input {clips.shape}: expected [M, T, H, W, C] clips")
    x = jax.nn.relu(self.stem_norm(self.stem(clips)))
    if self.stem_pool:
      x = layers.max_pool(x, (3, 3, 3), (2, 2, 2), ((1, 1),) * 3)
    for stage in self.stages:
      for b in stage:
        x = b(x)
    return x.mean(axis=(1, 2, 3))



class FastBottleneck(Residual3D):
  """A SlowFast Fast-pathway block: (3,1,1) conv -> (1,3,3) conv with the spatial stride
  -> (1,1,1) conv to 4x width (no temporal stride)."""

  def __init__(self, in_ch: int, width: int, *, stride: int, norm: str, norm_groups: int,
               fold_time: bool = True, rngs: nnx.Rngs):
    s = (1, stride, stride)
    shapes = [(in_ch, width, (3, 1, 1), (1, 1, 1)), (width, width, (1, 3, 3), s),
              (width, 4 * width, (1, 1, 1), (1, 1, 1))]
    super().__init__(in_ch, shapes, shortcut_stride=s, norm=norm, norm_groups=norm_groups,
                     fold_time=fold_time, rngs=rngs)


class FastPathway(nnx.Module):
  """SeCo's video net ("FastNet"): the Fast pathway of a SlowFast network, pooled.

  `[M, T, H, W, 3]` clips -> `[M, out_channels]`: a (5,7,7) stem conv of
  stride (1,2,2) and a (1,3,3) max pool of stride (1,2,2); stages of
  `FastBottleneck`s with spatial strides 1, 2, 2, 2 and no temporal stride
  (every frame keeps its own features until the pool); a global average pool
  over time and space. The original: stem 8 channels, blocks (3, 4, 6, 3),
  widths (8, 16, 32, 64), so 256 output channels, on 24 frames of 128 px.
  """

  def __init__(self, *, stem_channels: int = 8, blocks: tuple[int, ...] = (3, 4, 6, 3),
               widths: tuple[int, ...] = (8, 16, 32, 64), norm: str = "batch",
               norm_groups: int = 4, fold_time: bool = True, rngs: nnx.Rngs):
    if len(blocks) != len(widths) or not blocks:
      raise ValueError(f"fast pathway blocks={blocks} and widths={widths} need one entry "
                       "per stage")
    self.stem = Conv3D(3, stem_channels, (5, 7, 7), stride=(1, 2, 2), fold_time=fold_time,
                       rngs=rngs)
    self.stem_norm = layers.Norm(stem_channels, norm, groups=min(norm_groups, stem_channels),
                                 rngs=rngs)
    self.stages, self.out_channels = build_stages(
        stem_channels, blocks, widths,
        lambda c_in, width, stride: FastBottleneck(c_in, width, stride=stride, norm=norm,
                                                   norm_groups=norm_groups,
                                                   fold_time=fold_time, rngs=rngs))

  def __call__(self, clips, pool_time: bool = True):
    """`[M, T, H, W, 3]` -> `[M, C]`, or per frame `[M, T, C]` with `pool_time=False`."""
    if clips.ndim != 5:
      raise ValueError(f"video net input {clips.shape}: expected [M, T, H, W, C] clips")
    x = jax.nn.relu(self.stem_norm(self.stem(clips)))
    x = layers.max_pool(x, (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1)))
    for stage in self.stages:
      for b in stage:
        x = b(x)
    return x.mean(axis=(1, 2, 3) if pool_time else (2, 3))
