"""Small building blocks shared by the separation models (NHWC, Flax NNX).

Spectrograms enter the networks as images `[B, F, T, C]`: height is the
(log-)frequency axis, width is time.
"""

from __future__ import annotations

import functools
import itertools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_NHWC = ("NHWC", "HWIO", "NHWC")

NORMS = ("batch", "group", "none")
UPSAMPLES = ("bilinear", "nearest", "transpose")


def normal_init(std: float | None):
  """N(0, std) weights (SoP: 1e-3 for convs, 1e-4 for linears), or He-normal when None."""
  if std is None:
    return nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
  return nnx.initializers.normal(std)


def l2_normalise(x, axis: int = -1, eps: float = 1e-8):
  """`x` divided by its L2 norm along `axis` (eps inside the root)."""
  return x / jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True) + eps)


def probabilities_to_logits(probs, eps: float = 1e-6):
  """Logits whose sigmoid is `probs`, kept within [eps, 1 - eps] so BCE stays finite.

  For models whose masks are not one sigmoid per source (class-weighted or
  softmax-normalised masks) but must hand `mask_logits` to the shared losses
  and evaluation.
  """
  probs = jnp.clip(probs, eps, 1 - eps)
  return jnp.log(probs) - jnp.log1p(-probs)


def _scale_init(key, shape, dtype=jnp.float32):
  """Normalisation scales ~ N(1, 0.02), SoP's BatchNorm init."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class Norm(nnx.Module):
  """BatchNorm (PyTorch's momentum 0.1 and eps 1e-5), GroupNorm, or nothing.

  BatchNorm uses batch statistics in training and running averages once the
  model is viewed with `use_running_average=True` (`nnx.view`).
  """

  def __init__(self, channels: int, kind: str, *, groups: int = 8, rngs: nnx.Rngs):
    if kind not in NORMS:
      raise ValueError(f"norm={kind!r}: expected one of {NORMS}")
    self.kind, self.channels = kind, channels
    if kind == "batch":
      self.layer = nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, scale_init=_scale_init,
                                 rngs=rngs)
    elif kind == "group":
      groups = min(groups, channels)
      if channels % groups:
        raise ValueError(f"GroupNorm: {channels} channels do not split into {groups} groups")
      self.layer = nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-5,
                                 scale_init=_scale_init, rngs=rngs)
    else:
      self.layer = None

  def __call__(self, x):
    return x if self.layer is None else self.layer(x)


def conv(in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, padding: int | None = None,
         use_bias: bool = True, init_std: float | None = None, rngs: nnx.Rngs) -> nnx.Conv:
  """A 2-D convolution with PyTorch-style symmetric padding (default: kernel // 2)."""
  pad = kernel // 2 if padding is None else padding
  return nnx.Conv(in_ch, out_ch, (kernel, kernel), strides=stride, padding=((pad, pad),) * 2,
                  use_bias=use_bias, kernel_init=normal_init(init_std), rngs=rngs)


def _conv_down(x, kernel):
  return lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_NHWC)


@jax.custom_vjp
def _conv_down_even(x, kernel):
  return _conv_down(x, kernel)


def _conv_down_fwd(x, kernel):
  return _conv_down(x, kernel), (x, kernel)


def _conv_down_bwd(residuals, dy):
  x, kernel = residuals
  b, h, w, c = x.shape
  # The input gradient of a stride-2 conv is a stride-1 conv over a zero-dilated
  # dy, which XLA:CPU runs ~5x slower than the forward. The same conv is a
  # stride-1 2x2 conv of the padded input's space-to-depth (2x2 blocks to
  # channels); its transpose is a plain convolution, then depth-to-space.
  k2 = kernel.reshape(2, 2, 2, 2, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, -1)
  blocks = jax.ShapeDtypeStruct((b, h // 2 + 1, w // 2 + 1, 4 * c), x.dtype)
  (d_blocks,) = jax.linear_transpose(
      lambda s: lax.conv_general_dilated(s, k2, (1, 1), "VALID", dimension_numbers=_NHWC),
      blocks)(dy)
  dx = d_blocks.reshape(b, h // 2 + 1, w // 2 + 1, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  dx = dx.reshape(b, h + 2, w + 2, c)[:, 1:-1, 1:-1]
  _, kernel_vjp = jax.vjp(lambda k: _conv_down(x, k), kernel)
  return dx, kernel_vjp(dy)[0]


_conv_down_even.defvjp(_conv_down_fwd, _conv_down_bwd)


def _on_cpu() -> bool:
  """Whether XLA:CPU runs what is being traced: the rewrites below are for its
  convolution gradients; cuDNN (and TPUs) run the plain strided forms well."""
  return jax.default_backend() == "cpu"


def conv_down(x, kernel):
  """4x4 stride-2 convolution with padding 1 (halves H and W): `[B, H, W, C]` -> `[B, H/2, W/2, O]`.

  Same values as `lax.conv_general_dilated`; on the CPU backend, for even H
  and W, its gradient takes the faster space-to-depth route (2.6x faster
  forward + backward on XLA:CPU at the U-Net's sizes).
  """
  if x.shape[1] % 2 or x.shape[2] % 2 or not _on_cpu():
    return _conv_down(x, kernel)
  return _conv_down_even(x, kernel)


class _KernelConv(nnx.Module):
  """A square kernel `[size, size, in, out]` and optional bias (`nnx.Conv`'s names and
  shapes), applied by the subclass's `conv(x, kernel)`; the subclass sets `size`."""

  conv = None
  size = 4

  def __init__(self, in_ch: int, out_ch: int, *, use_bias: bool = True,
               init_std: float | None = None, rngs: nnx.Rngs):
    shape = (self.size, self.size, in_ch, out_ch)
    self.kernel = nnx.Param(normal_init(init_std)(rngs.params(), shape))
    self.bias = nnx.Param(jnp.zeros((out_ch,))) if use_bias else None
    self.dtype = None  # compute dtype (`set_compute_dtype`); None: the inputs'

  def __call__(self, x):
    kernel = self.kernel[...]
    bias = None if self.bias is None else self.bias[...]
    if self.dtype is not None:
      x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
      bias = None if bias is None else bias.astype(self.dtype)
    y = type(self).conv(x, kernel)
    return y if bias is None else y + bias


class DownConv(_KernelConv):
  """The U-Net's and ConvNet's way down: 4x4 conv, stride 2, padding 1 (`conv_down`).

  Parameters are named and shaped as `nnx.Conv`'s (`kernel` `[4, 4, in, out]`,
  optional `bias`).
  """

  conv = staticmethod(conv_down)


def conv_up(x, kernel):
  """4x4 stride-2 transposed convolution (PyTorch's `ConvTranspose2d(4, 2, padding=1)`,
  Flax's `ConvTranspose` with padding 2): `[B, H, W, C]` -> `[B, 2H, 2W, O]`.

  Computed as its four output phases: output row `2i + r` only meets kernel rows
  of parity r (`y[2i] = k[0] x[i-1] + k[2] x[i]`, `y[2i+1] = k[1] x[i] + k[3] x[i+1]`),
  so each phase is a stride-1 2x2 convolution and the phases are interleaved.
  The same values as the zero-inserted convolution; its gradients are stride-1
  convolutions too, where XLA:CPU's gradient of the dilated form is about 15x
  slower than the forward pass (measured: 23 s against 1.6 s for an upsample +
  3x3 conv at the full U-Net's second level). Off the CPU backend it is the
  zero-inserted (input-dilated) convolution itself, which cuDNN runs natively.
  """
  if not _on_cpu():  # y[n] = sum_t k[t] x_dilated[n + t - 2]: the same taps as below
    return lax.conv_general_dilated(x, kernel, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                    dimension_numbers=_NHWC)
  pads = {0: (1, 0), 1: (0, 1)}   # phase 0 reads x[i-1], x[i]; phase 1 x[i], x[i+1]
  rows = []
  for r in (0, 1):
    cols = []
    for c in (0, 1):
      phase_kernel = kernel[r::2, c::2]                              # [2, 2, C, O]
      cols.append(lax.conv_general_dilated(x, phase_kernel, (1, 1), (pads[r], pads[c]),
                                           dimension_numbers=_NHWC))
    rows.append(jnp.stack(cols, axis=3))                             # [B, H, W, 2, O]
  y = jnp.stack(rows, axis=2)                                        # [B, H, 2, W, 2, O]
  b, h, _, w, _, o = y.shape
  return y.reshape(b, 2 * h, 2 * w, o)


class UpConv(_KernelConv):
  """The U-Net's transposed-conv way up (`conv_up`); parameters as `nnx.ConvTranspose`'s
  (`kernel` `[4, 4, in, out]`, optional `bias`)."""

  conv = staticmethod(conv_up)


def _nearest_up_taps(kernel, axis: int):
  """The 4 taps along `axis` that `conv_up` applies, from the 3 taps of a 3x3 kernel
  applied after a nearest 2x upsample: y[2i] = k0 x[i-1] + (k1 + k2) x[i] and
  y[2i+1] = (k0 + k1) x[i] + k2 x[i+1], where conv_up reads taps 0, 2 and 1, 3.

  Sums of slices rather than a matrix product: for a deep level's small
  input, an `einsum` here cost more than the convolution itself.
  """
  k0, k1, k2 = (jax.lax.index_in_dim(kernel, i, axis) for i in range(3))
  return jnp.concatenate([k0, k0 + k1, k1 + k2, k2], axis)


def upsample_conv3x3(x, kernel):
  """A nearest 2x upsample, then a 3x3 convolution with padding 1, in one step:
  `[B, H, W, C]`, kernel `[3, 3, C, O]` -> `[B, 2H, 2W, O]`.

  Every output pixel of the upsampled image's 3x3 conv sees only 2x2 input
  pixels, with some of the kernel's taps summed, so the whole is `conv_up`
  with a 4x4 kernel made of those sums (`_nearest_up_taps`): the same values,
  16 instead of 36 multiply-adds per output pixel and channel pair, and no
  upsampled copy of the input (in the forward pass or the gradient).
  """
  return conv_up(x, _nearest_up_taps(_nearest_up_taps(kernel, 0), 1))


class NearestUpConv(_KernelConv):
  """A nearest 2x upsample and a 3x3 conv (`upsample_conv3x3`); parameters named and
  shaped as that conv's `nnx.Conv` (`kernel` `[3, 3, in, out]`, optional `bias`)."""

  conv = staticmethod(upsample_conv3x3)
  size = 3


def _max_pool_forward(x, window: tuple[int, ...], strides: tuple[int, ...], padding):
  edge = ((0, 0),)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1,) + window + (1,),
                           (1,) + strides + (1,), edge + tuple(padding) + edge)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_phased(x, window, strides, padding):
  return _max_pool_forward(x, window, strides, padding)


def _max_pool_phased_fwd(x, window, strides, padding):
  y = _max_pool_forward(x, window, strides, padding)
  return y, (x, y)


def _max_pool_phased_bwd(window, strides, padding, residuals, dy):
  # XLA's gradient of reduce_window (select-and-scatter) takes ~20x the forward
  # pass on the CPU. The same gradient, phase by phase: view the -inf padded
  # input as blocks of `strides` (input index = block * stride + phase); window
  # tap u reads phase u % stride of block (output index + u // stride), a plain
  # slice. Each window's gradient goes to its first tap equal to the max, in
  # raster order, as XLA's (and PyTorch's) max pool picks it; every phase's
  # gradient is a sum of shifted masked copies of dy, interleaved at the end.
  x, y = residuals
  nd = len(window)
  out = y.shape[1:-1]
  shifts = [(w - 1) // s for w, s in zip(window, strides)]
  blocks = [o + k for o, k in zip(out, shifts)]
  # Pad (or crop: positions no window reaches get no gradient) to whole blocks.
  cover = [(lo, b * s - lo - n) for (lo, _), b, s, n in zip(padding, blocks, strides,
                                                           x.shape[1:-1])]
  edge = [(0, 0, 0)]
  xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype), edge + [(lo, hi, 0) for lo, hi in cover] + edge)
  phased = xp.reshape((x.shape[0],) + tuple(v for b, s in zip(blocks, strides) for v in (b, s))
                      + x.shape[-1:])                              # [B, b0, s0, b1, s1, ..., C]
  zero = jnp.zeros((), dy.dtype)
  taken = jnp.zeros(y.shape, bool)
  sums = {}
  for tap in itertools.product(*(range(w) for w in window)):
    phase = tuple(u % s for u, s in zip(tap, strides))
    shift = tuple(u // s for u, s in zip(tap, strides))
    index = (slice(None),) + tuple(v for k, p, o in zip(shift, phase, out)
                                   for v in (slice(k, k + o), p)) + (slice(None),)
    hit = (phased[index] == y) & ~taken
    taken = taken | hit
    part = lax.pad(jnp.where(hit, dy, zero), zero,
                   edge + [(k, b - o - k, 0) for k, b, o in zip(shift, blocks, out)] + edge)
    sums[phase] = part if phase not in sums else sums[phase] + part
  empty = jnp.zeros((dy.shape[0],) + tuple(blocks) + dy.shape[-1:], dy.dtype)
  stacked = jnp.stack([sums.get(p, empty)
                       for p in itertools.product(*(range(s) for s in strides))])
  stacked = stacked.reshape(tuple(strides) + stacked.shape[1:])    # [s0, .., B, b0, .., C]
  order = [nd] + [a for d in range(nd) for a in (nd + 1 + d, d)] + [2 * nd + 1]
  dxp = stacked.transpose(order).reshape(xp.shape)
  return (lax.pad(dxp, zero, edge + [(-lo, -hi, 0) for lo, hi in cover] + edge),)


_max_pool_phased.defvjp(_max_pool_phased_fwd, _max_pool_phased_bwd)


def max_pool(x, window: tuple[int, ...], strides: tuple[int, ...],
             padding: tuple[tuple[int, int], ...]):
  """Max pool of `[B, *spatial, C]` over `window` (padded positions are -inf, as in
  PyTorch's MaxPool): the values of `nnx.max_pool`.

  On the CPU backend its gradient is computed phase by phase (forward and
  backward of ResNet-18's 3x3 stride-2 pool on `[12, 112, 112, 64]`: 90 ms
  against 186 ms with XLA's select-and-scatter), giving each window's gradient
  to the same input (its first maximum).
  """
  window, strides = tuple(window), tuple(strides)
  padding = tuple(tuple(p) for p in padding)
  if not len(window) == len(strides) == len(padding) == x.ndim - 2:
    raise ValueError(f"max_pool of {x.shape}: window {window}, strides {strides} and "
                     f"padding {padding} need one entry per spatial axis ({x.ndim - 2})")
  if not _on_cpu():
    return _max_pool_forward(x, window, strides, padding)
  return _max_pool_phased(x, window, strides, padding)


@functools.lru_cache(maxsize=None)
def _linear_upsample_matrix(size: int) -> np.ndarray:
  """`[2 * size, size]` linear interpolation with align_corners=True (PyTorch's)."""
  out = 2 * size
  pos = np.arange(out) * (size - 1) / max(out - 1, 1)
  low = np.clip(np.floor(pos).astype(int), 0, size - 1)
  high = np.clip(low + 1, 0, size - 1)
  frac = pos - low
  matrix = np.zeros((out, size), np.float32)
  matrix[np.arange(out), low] += 1.0 - frac
  matrix[np.arange(out), high] += frac
  return matrix


def upsample2x(x, method: str):
  """Doubles height and width of `[B, H, W, C]`: 'nearest' or 'bilinear' (align_corners=True).

  The bilinear form is two small interpolation matrices, as SoP's
  `nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)`.
  """
  if method == "nearest":
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  if method != "bilinear":
    raise ValueError(f"upsample method {method!r}: expected 'nearest' or 'bilinear'")
  rows = jnp.asarray(_linear_upsample_matrix(x.shape[1]), x.dtype)
  cols = jnp.asarray(_linear_upsample_matrix(x.shape[2]), x.dtype)
  x = jnp.einsum("hi,biwc->bhwc", rows, x)
  return jnp.einsum("wj,bhjc->bhwc", cols, x)


class ConvNet(nnx.Module):
  """A small image encoder: stride-2 4x4 convs, each with norm and ReLU.

  The CPU recipe's visual net (16-32-64-64 channels on a 64 px crop gives a
  4x4 map) and, with one input channel, a small spectrogram classifier.
  """

  def __init__(self, in_channels: int, widths: tuple[int, ...], *, norm: str = "group",
               norm_groups: int = 8, rngs: nnx.Rngs):
    chans = (in_channels,) + tuple(widths)
    self.convs = nnx.List([DownConv(a, b, use_bias=norm == "none", rngs=rngs)
                           for a, b in zip(chans[:-1], chans[1:])])
    self.norms = nnx.List([Norm(b, norm, groups=norm_groups, rngs=rngs) for b in chans[1:]])
    self.out_channels = chans[-1]

  def __call__(self, x):
    """`[B, H, W, in_channels]` -> `[B, H / 2^k, W / 2^k, widths[-1]]`."""
    for conv_layer, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv_layer(x)))
    return x


# Layers whose `dtype` attribute is their compute dtype (Flax's own and ours).
_COMPUTE_DTYPE_LAYERS = (nnx.Conv, nnx.ConvTranspose, nnx.Linear, nnx.Einsum, _KernelConv)
COMPUTE_DTYPES = ("float32", "bfloat16")


def set_compute_dtype(model: nnx.Module, dtype: str) -> nnx.Module:
  """Runs every convolution and linear layer of `model` in `dtype` (in place).

  Parameters stay float32 (the optimiser updates them in full precision); each
  layer casts its input and weights to `dtype` and returns `dtype`. Norm
  layers are left as they are: with float32 scales they compute (and keep
  their running statistics) in float32, so activations are bfloat16 from a
  conv to the next norm. 'float32' leaves the model unchanged.
  """
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f"model.compute_dtype={dtype!r}: expected one of {COMPUTE_DTYPES}")
  if dtype == "float32":
    return model
  for _, node in nnx.iter_graph(model):
    if isinstance(node, _COMPUTE_DTYPE_LAYERS):
      node.dtype = jnp.dtype(dtype)
  return model


def float32_outputs(tree):
  """Floating leaves of a model's outputs as float32 (losses and masks in full precision)."""
  return jax.tree.map(
      lambda x: x.astype(jnp.float32)
      if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
