"""A DeepLabv3+ decoder over ResNet stage outputs (IAL-CMS's visual net).

ASPP on the deepest map: parallel branches (a 1x1 conv for rate 1, 3x3 convs
dilated by each other rate, and an image-pooling branch), each normalised and
rectified, concatenated and projected by a 1x1 conv; then up-sampled
(bilinear) to a shallower map, which a 1x1 conv reduces to a few channels;
both concatenated and fused by one 3x3 conv. IAL-CMS: rates (1, 3, 6, 9) to
512 channels, the shallower map reduced to 48, the fused map 512 channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avsep_jax.models import layers


class DeepLabV3PlusHead(nnx.Module):
  """`(shallow [M, h, w, C_s], deep [M, h', w', C_d])` -> `[M, h, w, out_channels]`."""

  def __init__(self, shallow_channels: int, deep_channels: int, *,
               rates: tuple[int, ...] = (1, 3, 6, 9), aspp_channels: int = 512,
               reduced_channels: int = 48, out_channels: int = 512, norm: str = "batch",
               norm_groups: int = 8, rngs: nnx.Rngs):
    def branch(c_in, c_out, kernel, rate=1):
      conv = nnx.Conv(c_in, c_out, (kernel, kernel), kernel_dilation=rate,
                      padding=((rate * (kernel // 2),) * 2,) * 2, use_bias=False, rngs=rngs)
      return conv, layers.Norm(c_out, norm, groups=norm_groups, rngs=rngs)

    self.out_channels = out_channels
    self.aspp = nnx.List([nnx.List(branch(deep_channels, aspp_channels, 1 if r == 1 else 3, r))
                          for r in rates])
    self.pool_branch = nnx.List(branch(deep_channels, aspp_channels, 1))
    self.project = nnx.List(branch((len(rates) + 1) * aspp_channels, aspp_channels, 1))
    self.reduce = nnx.List(branch(shallow_channels, reduced_channels, 1))
    self.fuse = nnx.List(branch(aspp_channels + reduced_channels, out_channels, 3))

  @staticmethod
  def _apply(pair, x):
    conv, norm = pair
    return jax.nn.relu(norm(conv(x)))

  def __call__(self, shallow, deep):
    pooled = self._apply(self.pool_branch, deep.mean(axis=(1, 2), keepdims=True))
    branches = [self._apply(b, deep) for b in self.aspp]
    branches.append(jnp.broadcast_to(pooled, deep.shape[:3] + pooled.shape[-1:]))
    x = self._apply(self.project, jnp.concatenate(branches, axis=-1))
    x = jax.image.resize(x, shallow.shape[:3] + x.shape[-1:], "bilinear")
    x = jnp.concatenate([x, self._apply(self.reduce, shallow)], axis=-1)
    return self._apply(self.fuse, x)
