"""ResNet-18 backbone (NHWC, Flax NNX) for the Sound of Pixels family of models.

The layer graph is torchvision's `resnet18` without its global average pool and
classifier: the frame encoders of Sound of Pixels, Co-Separation, CRN and MTSC
keep only the convolutional trunk and add their own heads. Sub-module names
mirror torchvision's (`conv1`, `bn1`, `layer1[0].conv1`, `layer2[0].downsample`,
...) so that a PyTorch state dict maps onto the parameters one to one; a
PyTorch conv weight `[O, I, kh, kw]` becomes a kernel `[kh, kw, I, O]`.

Every convolution gets explicit symmetric padding `dilation * (k - 1) // 2`,
which is what PyTorch's `padding=` does. Flax's default "SAME" padding would
pad stride-2 layers asymmetrically (less on the leading side) and so shift the
sampling grid against pretrained PyTorch weights, although the sizes agree.
Sizes follow PyTorch: 224 -> 112 (conv1) -> 56 (maxpool) -> 56, 28, 14, 7.

`dilated=True` reproduces Sound of Pixels' `ResnetDilated(dilate_scale=16)`,
whose `_nostride_dilate(dilate=2)` is applied to every conv of layer4:

  * a conv with stride 2 loses its stride; if it is 3x3 it gets dilation
    `dilate // 2 = 1` (padding 1). This hits layer4[0].conv1 and the 1x1
    downsample conv (stride 1, no dilation).
  * every other 3x3 conv of layer4 gets dilation 2 (padding 2).

The output stride is then 16 instead of 32 (224 -> 14x14) with the same
parameters as the plain network, so ImageNet weights load unchanged.
"""

from __future__ import annotations

import jax
from flax import nnx

from avsep_jax.models import layers

# torchvision's `kaiming_normal_(mode="fan_out", nonlinearity="relu")`: an
# untruncated normal with variance 2 / (kh * kw * out_channels). Flax kernels
# are [kh, kw, in, out], so "fan_out" counts the same elements as in PyTorch.
_KAIMING_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")

# PyTorch BatchNorm's momentum 0.1 weighs the new batch; Flax's weighs the
# running average, hence 1 - 0.1.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5

STAGE_CHANNELS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2


def conv2d(in_channels: int, out_channels: int, kernel: int, *, stride: int = 1,
           dilation: int = 1, rngs: nnx.Rngs) -> nnx.Conv:
  """Bias-free square conv with PyTorch's symmetric padding `dilation * (k-1) // 2`."""
  pad = dilation * (kernel - 1) // 2
  return nnx.Conv(
      in_channels, out_channels, (kernel, kernel), strides=stride,
      padding=((pad, pad), (pad, pad)), kernel_dilation=dilation, use_bias=False,
      kernel_init=_KAIMING_FAN_OUT, rngs=rngs)


def batch_norm(channels: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """BatchNorm over the last axis with PyTorch's defaults (γ = 1, β = 0)."""
  # Built in training mode (batch statistics), like a fresh PyTorch module.
  return nnx.BatchNorm(channels, use_running_average=False, momentum=_BN_MOMENTUM,
                       epsilon=_BN_EPSILON, rngs=rngs)


class Downsample(nnx.Module):
  """Shortcut projection of a block: 1x1 conv (with the block's stride) + BN.

  torchvision's `downsample = Sequential(conv1x1, BatchNorm2d)`, i.e.
  `downsample.0` / `downsample.1` correspond to `conv` / `bn`.
  """

  def __init__(self, in_channels: int, out_channels: int, *, stride: int,
               rngs: nnx.Rngs):
    self.conv = conv2d(in_channels, out_channels, 1, stride=stride, rngs=rngs)
    self.bn = batch_norm(out_channels, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """`[B, H, W, C_in]` -> `[B, H / stride, W / stride, C_out]`."""
    return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
  """torchvision's ResNet BasicBlock: two 3x3 convs with a residual shortcut.

  `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, where the shortcut is
  the identity, or a `Downsample` projection when the stride is not 1 or the
  channel count changes.

  Args:
    in_channels: C_in.
    out_channels: C_out.
    stride: stride of conv1 and of the projection.
    dilations: dilation of conv1 and of conv2 (padding follows the dilation).
    rngs: parameter initialisation keys.
  """

  def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1,
               dilations: tuple[int, int] = (1, 1), rngs: nnx.Rngs):
    self.conv1 = conv2d(in_channels, out_channels, 3, stride=stride,
                        dilation=dilations[0], rngs=rngs)
    self.bn1 = batch_norm(out_channels, rngs=rngs)
    self.conv2 = conv2d(out_channels, out_channels, 3, dilation=dilations[1],
                        rngs=rngs)
    self.bn2 = batch_norm(out_channels, rngs=rngs)
    if stride != 1 or in_channels != out_channels:
      self.downsample = Downsample(in_channels, out_channels, stride=stride,
                                   rngs=rngs)
    else:
      self.downsample = None

  def __call__(self, x: jax.Array) -> jax.Array:
    """`[B, H, W, C_in]` -> `[B, H / stride, W / stride, C_out]`."""
    shortcut = x if self.downsample is None else self.downsample(x)
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return nnx.relu(y + shortcut)


class ResNet18(nnx.Module):
  """ResNet-18 trunk (torchvision's `resnet18` minus avgpool and fc), NHWC.

  `[B, H, W, in_channels]` float -> `[B, H/32, W/32, 512]` feature map, or
  `[B, H/16, W/16, 512]` with `dilated=True` (sizes rounded as PyTorch does,
  e.g. 224 -> 7 or 14; 64 -> 2 or 4). 11,176,512 parameters for 3 input
  channels, either variant.

  Train / eval mode. Every BatchNorm is built in training mode
  (`use_running_average=False`): a call normalises with the batch's statistics
  and updates the running `mean` / `var` (`nnx.BatchStat` variables, not
  `nnx.Param`) in place, also through `nnx.jit` / `nnx.grad`, which write
  the changed state back to the module. In Flax 0.12 the mode is switched by
  setting that attribute on all sub-modules:

    model.eval()    # in place: use_running_average=True, deterministic, no updates
    model.train()   # in place: back to batch statistics
    eval_model = nnx.view(model, use_running_average=True)  # a copy sharing the
                                                            # arrays; model unchanged

  `nnx.jit` treats the attribute as static, so each mode compiles once.

  Args:
    in_channels: input channels (3 for RGB frames, 1 for a spectrogram as in
      Co-Separation's object-consistency classifier).
    dilated: Sound of Pixels' `ResnetDilated(dilate_scale=16)`: layer4 without
      stride, its 3x3 convs dilated (module docstring for the exact rule).
    rngs: parameter initialisation keys (`rngs.params()` is used).
  """

  def __init__(self, *, in_channels: int = 3, dilated: bool = False,
               stage_channels: tuple[int, ...] = STAGE_CHANNELS,
               blocks_per_stage: int = BLOCKS_PER_STAGE, rngs: nnx.Rngs):
    """See the class docstring; `stage_channels` and `blocks_per_stage` give other
    depths and widths (SeCo's ResNet-10 sync net: 32-64-128-256, one block each)."""
    self.in_channels = in_channels
    self.dilated = dilated
    self.out_channels = stage_channels[-1]
    self.conv1 = conv2d(in_channels, stage_channels[0], 7, stride=2, rngs=rngs)
    self.bn1 = batch_norm(stage_channels[0], rngs=rngs)
    stages = []
    prev = stage_channels[0]
    for i, channels in enumerate(stage_channels):
      stride = 1 if i == 0 else 2
      dilations = [(1, 1)] * blocks_per_stage
      if dilated and i == len(stage_channels) - 1:
        # `_nostride_dilate(dilate=2)`: the strided 3x3 conv gets dilate // 2,
        # every other 3x3 conv gets dilate.
        stride = 1
        dilations = [(1, 2)] + [(2, 2)] * (blocks_per_stage - 1)
      blocks = []
      for j in range(blocks_per_stage):
        blocks.append(BasicBlock(prev, channels, stride=stride if j == 0 else 1,
                                 dilations=dilations[j], rngs=rngs))
        prev = channels
      # Flax 0.12 treats a plain list attribute as static and refuses one that
      # holds modules; `nnx.List` makes it pytree data (paths `layer1/0/...`).
      stages.append(nnx.List(blocks))
    self.layer1, self.layer2, self.layer3, self.layer4 = stages

  def __call__(self, x: jax.Array) -> jax.Array:
    """Feature map of images `x` `[B, H, W, in_channels]` -> `[B, H', W', 512]`."""
    return self.stage_outputs(x)[-1]

  def stage_outputs(self, x: jax.Array) -> list[jax.Array]:
    """Each stage's output (layer1..layer4; strides 4, 8, 16, 32), for decoders that
    also read shallower features (DeepLabv3+)."""
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(
          f"x must be [B, H, W, {self.in_channels}] (NHWC); got shape {x.shape}")
    x = nnx.relu(self.bn1(self.conv1(x)))
    # Padded positions are -inf inside `max_pool`, as in PyTorch's MaxPool2d.
    x = layers.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
    outputs = []
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in stage:
        x = block(x)
      outputs.append(x)
    return outputs
