"""Visual encoders: a picture (object crop) or frames of each source -> one vector.

Backbones: the CPU recipe's small `ConvNet`, ResNet-18, or SoP's dilated
ResNet-18. Heads:

- 'avg_linear': global average pool, linear to `out_dim` (CPU recipe).
- 'conv1x1_fc': Co-Separation's `visual_pool=conv1x1`: 1x1 conv to 128 + norm +
  ReLU, flatten, linear to `out_dim` (512 in the paper).
- 'conv_max': SoP's frame net: 3x3 conv to `out_dim`, max over frames, height
  and width jointly.

Several frames of one source (`[..., T, H, W, 3]` with `num_frames`) are
encoded one by one and pooled: max for 'conv_max', mean otherwise.
"""

from __future__ import annotations

import jax
from flax import nnx

from avsep_jax.models import layers

# resnet10: SeCo's spectrogram net (one basic block per stage, 32-64-128-256).
BACKBONES = ("convnet", "resnet18", "resnet18_dilated", "resnet10")
HEADS = ("avg_linear", "conv1x1_fc", "conv_max")
ACTIVATIONS = ("none", "sigmoid", "relu")
# What a model's visual queries are: the batch's `frames` or object `crops`.
VISUAL_INPUTS = ("frames", "crops")


def check_visual_input(value: str, field: str = "visual_input") -> str:
  """`value` if it is one of VISUAL_INPUTS; otherwise an error naming `field`."""
  if value not in VISUAL_INPUTS:
    raise ValueError(f"{field}={value!r}: expected 'frames' or 'crops'")
  return value


def build_backbone(backbone: str, *, widths: tuple[int, ...] = (16, 32, 64, 64),
                   norm: str = "group", norm_groups: int = 8, in_channels: int = 3,
                   rngs: nnx.Rngs):
  """`(module, channels, stride)`: an image trunk `[M, H, W, C]` -> `[M, H/s, W/s, channels]`."""
  if backbone not in BACKBONES:
    raise ValueError(f"visual backbone={backbone!r}: expected one of {BACKBONES}")
  if backbone == "convnet":
    net = layers.ConvNet(in_channels, tuple(widths), norm=norm, norm_groups=norm_groups,
                         rngs=rngs)
    return net, net.out_channels, 2**len(widths)
  from avsep_jax.models import resnet  # pylint: disable=g-import-not-at-top
  if backbone == "resnet10":
    return resnet.ResNet18(in_channels=in_channels, stage_channels=(32, 64, 128, 256),
                           blocks_per_stage=1, rngs=rngs), 256, 32
  dilated = backbone == "resnet18_dilated"
  return resnet.ResNet18(in_channels=in_channels, dilated=dilated, rngs=rngs), 512, (
      16 if dilated else 32)


class VisualEncoder(nnx.Module):
  """Images `[B, N, (T,) H, W, 3]` -> vectors `[B, N, out_dim]`."""

  def __init__(self, out_dim: int, *, backbone: str = "convnet",
               widths: tuple[int, ...] = (16, 32, 64, 64), head: str = "avg_linear",
               activation: str = "none", norm: str = "group", norm_groups: int = 8,
               image_size: int = 64, in_channels: int = 3, linear_init_std: float | None = None,
               rngs: nnx.Rngs):
    """Builds the encoder.

    Args:
      out_dim: length of each source's vector.
      backbone: one of BACKBONES.
      widths: ConvNet channels (backbone 'convnet' only).
      head: one of HEADS.
      activation: on the output vector (SoP: sigmoid).
      norm, norm_groups: ConvNet's and the 1x1 head's normalisation.
      image_size: input side in pixels (sizes the 'conv1x1_fc' linear).
      in_channels: 3 for RGB; 1 for spectrogram classifiers.
      linear_init_std: N(0, std) for the output linear; None: He-normal.
    """
    for name, value, valid in (("backbone", backbone, BACKBONES), ("head", head, HEADS),
                               ("activation", activation, ACTIVATIONS)):
      if value not in valid:
        raise ValueError(f"visual {name}={value!r}: expected one of {valid}")
    self.head, self.activation = head, activation
    self.backbone, channels, stride = build_backbone(
        backbone, widths=widths, norm=norm, norm_groups=norm_groups, in_channels=in_channels,
        rngs=rngs)
    # The backbone's map (`feature_map`): CRN's alignment head reads it.
    self.map_channels, self.map_stride = channels, stride
    if head == "avg_linear":
      self.proj = None
      self.out = nnx.Linear(channels, out_dim, kernel_init=layers.normal_init(linear_init_std),
                            rngs=rngs)
    elif head == "conv1x1_fc":
      side = -(-image_size // stride)
      self.proj = layers.conv(channels, 128, 1, use_bias=norm == "none", rngs=rngs)
      self.proj_norm = layers.Norm(128, norm, groups=norm_groups, rngs=rngs)
      self.out = nnx.Linear(128 * side * side, out_dim,
                            kernel_init=layers.normal_init(linear_init_std), rngs=rngs)
    else:
      self.proj = None
      self.out = layers.conv(channels, out_dim, 3, rngs=rngs)

  def feature_map(self, images):
    """The backbone's map before the head: `[M, H, W, C]` -> `[M, H/s, W/s, map_channels]`."""
    return self.backbone(images)

  def __call__(self, images):
    """Encodes `[B, N, H, W, C]` or `[B, N, T, H, W, C]` images to `[B, N, out_dim]`."""
    if images.ndim not in (5, 6):
      raise ValueError(f"visual input {images.shape}: expected [B, N, H, W, C] crops or "
                       "[B, N, T, H, W, C] frames")
    lead = images.shape[:-3]
    x = self.backbone(images.reshape((-1,) + images.shape[-3:]))   # [B*N*T, h, w, c]
    if self.head == "conv_max":
      x = self.out(x).max(axis=(1, 2))                               # [B*N*T, D]
      x = x.reshape(lead + x.shape[-1:])
      x = x.max(axis=2) if images.ndim == 6 else x                   # SoP: max over T too
    else:
      if self.head == "avg_linear":
        x = x.mean(axis=(1, 2))
      else:
        x = jax.nn.relu(self.proj_norm(self.proj(x))).reshape(x.shape[0], -1)
      x = self.out(x).reshape(lead + (-1,))
      x = x.mean(axis=2) if images.ndim == 6 else x
    if self.activation == "sigmoid":
      return jax.nn.sigmoid(x)
    return jax.nn.relu(x) if self.activation == "relu" else x
