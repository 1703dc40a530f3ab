"""IAL-CMS (independency-adversarial learning for cross-modal sound separation).

Separator: each source's picture gives L2-normalised visual feature maps
(`VisualMaps`); the mixture's U-Net bottleneck, pooled, and the maps meet in
the audio-visual module (`AVModule`): a fused audio feature, spatial attention
(a learned sigmoid of its cosine with every pixel) pooling the maps, channel
attention re-weighting the fused feature; their concatenation (the context)
gives a per-level scale and shift of the U-Net's way up (AdaIN-style dense
guidance). The mask is `relu(a * s + b + 0.5)` ("IRM", unbounded above).

Independency critic (`IndependenceCritic`, a top-level module `critic`): a
shared spectrally-normalised conv encoder `g` of each separated (warped)
magnitude and an MLP `h` on the pair, score `w . h([g(x1), g(x2)]) + b`;
pairs are dependent (two sources of one mixture) or independent (a source
and an entry of a memory bank of past separated sources, `MemoryBank`).
The critic's loss and the separator's adversarial term are in
`avsep_jax.losses.ial_loss`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avsep_jax.audio import masks as masks_lib
from avsep_jax.models import deeplab
from avsep_jax.models import layers
from avsep_jax.models import resnet
from avsep_jax.models import unet as unet_lib
from avsep_jax.models import visual as visual_lib


class VisualMaps(nnx.Module):
  """Images `[B, N, (T,) H, W, 3]` -> L2-normalised maps `[B, N, h, w, dim]` (mean over T)."""

  def __init__(self, dim: int, *, backbone: str = "convnet",
               widths: tuple[int, ...] = (16, 32, 64, 64), norm: str = "group",
               norm_groups: int = 8, decoder: dict | None = None, rngs: nnx.Rngs):
    """Builds the net.

    Args:
      dim: D, the maps' channels.
      backbone, widths, norm, norm_groups: the trunk (`visual.build_backbone`).
      decoder: None, or `deeplab.DeepLabV3PlusHead` arguments plus
        `shallow_stage` (1-4, the ResNet stage it reads besides the last; the
        original: 3): IAL-CMS's DeepLabv3+ on a ResNet-18 (`backbone='resnet18'`).
    """
    self.trunk, channels, _ = visual_lib.build_backbone(
        backbone, widths=widths, norm=norm, norm_groups=norm_groups, rngs=rngs)
    if not decoder:
      self.decoder, self.shallow_stage = None, None
    else:
      if backbone != "resnet18":
        raise ValueError(f"visual decoder needs backbone='resnet18', not {backbone!r}")
      decoder = dict(decoder)
      self.shallow_stage = int(decoder.pop("shallow_stage", 3))
      shallow = resnet.STAGE_CHANNELS[self.shallow_stage - 1]
      self.decoder = deeplab.DeepLabV3PlusHead(shallow, channels, norm=norm,
                                               norm_groups=norm_groups, **decoder, rngs=rngs)
      channels = self.decoder.out_channels
    # The original's common-space MLP: 1x1 conv, ReLU, norm, 1x1 conv.
    self.common_in = layers.conv(channels, dim, 1, rngs=rngs)
    self.common_norm = layers.Norm(dim, norm, groups=norm_groups, rngs=rngs)
    self.common_out = layers.conv(dim, dim, 1, rngs=rngs)

  def __call__(self, images):
    lead = images.shape[:-3]
    flat = images.reshape((-1,) + images.shape[-3:])
    if self.decoder is None:
      x = self.trunk(flat)
    else:
      stages = self.trunk.stage_outputs(flat)
      x = self.decoder(stages[self.shallow_stage - 1], stages[-1])
    x = self.common_out(self.common_norm(jax.nn.relu(self.common_in(x))))
    x = x.reshape(lead + x.shape[1:])
    if images.ndim == 6:
      x = x.mean(axis=2)
    return layers.l2_normalise(x)


class AVModule(nnx.Module):
  """Audio vector `[M, C]` and visual maps `[M, h, w, D]` -> context `[M, 2D]`, embedding `[M, D]`."""

  def __init__(self, audio_channels: int, dim: int, *, rngs: nnx.Rngs):
    self.fuse_in = nnx.Linear(audio_channels + dim, dim, rngs=rngs)
    self.fuse_out = nnx.Linear(dim, dim, rngs=rngs)
    # The original's ParamSigmoid on the cosine: a learned slope and offset.
    self.attention_scale = nnx.Param(jnp.full((), 10.0, jnp.float32))
    self.attention_bias = nnx.Param(jnp.zeros((), jnp.float32))
    self.gate_in = nnx.Linear(dim, dim, rngs=rngs)
    self.gate_out = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, audio_vec, maps):
    pooled_max = maps.max(axis=(1, 2))                                   # [M, D]
    fused = self.fuse_out(jax.nn.relu(self.fuse_in(
        jnp.concatenate([audio_vec, pooled_max], axis=-1))))             # [M, D]
    embedding = layers.l2_normalise(fused)
    cosine = jnp.einsum("mhwd,md->mhw", maps, embedding)
    weights = jax.nn.sigmoid(self.attention_scale[...] * cosine + self.attention_bias[...])
    attended = (weights[..., None] * maps).sum((1, 2)) / (
        weights.sum((1, 2))[:, None] + 1e-6)                              # [M, D]
    gate = jax.nn.sigmoid(self.gate_out(jax.nn.relu(self.gate_in(attended * embedding))))
    fused = gate * fused + fused
    return jnp.concatenate([attended, fused], axis=-1), embedding


class SpectralNormalised(nnx.Module):
  """A conv or linear layer whose kernel is divided by its largest singular value.

  The raw kernel is the parameter; one power-iteration step per call refines
  the singular vector `u` (kept as a batch statistic, updated in training).
  """

  def __init__(self, layer: nnx.Conv | nnx.Linear, *, rngs: nnx.Rngs):
    self.layer = layer
    out = layer.kernel.shape[-1]
    self.u = nnx.BatchStat(layers.l2_normalise(jax.random.normal(rngs.params(), (out,))))

  def __call__(self, x, update: bool = True):
    kernel = self.layer.kernel[...]
    matrix = kernel.reshape(-1, kernel.shape[-1])                         # [in, out]
    u = self.u[...]
    v = jax.lax.stop_gradient(layers.l2_normalise(matrix @ u))
    u = jax.lax.stop_gradient(layers.l2_normalise(matrix.T @ v))
    sigma = v @ matrix @ u
    if update:
      self.u[...] = u
    normalised = (kernel / sigma).astype(kernel.dtype)
    if isinstance(self.layer, nnx.Linear):
      y = x @ normalised
    else:
      y = jax.lax.conv_general_dilated(x, normalised, self.layer.strides, self.layer.padding,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + self.layer.bias[...] if self.layer.bias is not None else y


class IndependenceCritic(nnx.Module):
  """Scores pairs of separated magnitudes `[M, F, T]`: high = independent sources."""

  def __init__(self, *, widths: tuple[int, ...] = (16, 32, 64, 128), hidden: int = 128,
               rngs: nnx.Rngs):
    chans = (1,) + tuple(widths)
    self.encoder = nnx.List([
        SpectralNormalised(nnx.Conv(a, b, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                                    rngs=rngs), rngs=rngs) for a, b in zip(chans[:-1], chans[1:])])
    self.pair_in = SpectralNormalised(nnx.Linear(2 * widths[-1], hidden, rngs=rngs), rngs=rngs)
    self.pair_out = SpectralNormalised(nnx.Linear(hidden, hidden, rngs=rngs), rngs=rngs)
    self.score = nnx.Linear(hidden, 1, rngs=rngs)

  def encode(self, magnitudes):
    """`g`: `[M, F, T]` magnitudes -> `[M, widths[-1]]` (on log magnitudes)."""
    x = masks_lib.log_magnitude(magnitudes)[..., None]
    for layer in self.encoder:
      x = jax.nn.leaky_relu(layer(x), 0.2)
    return x.mean(axis=(1, 2))

  def score_pairs(self, first, second):
    """Scores `[M]` of pairs of `encode`d spectra `[M, widths[-1]]` each (`w . h([g1, g2]) + b`)."""
    h = jnp.concatenate([first, second], axis=-1)
    h = jax.nn.leaky_relu(self.pair_out(jax.nn.leaky_relu(self.pair_in(h), 0.2)), 0.2)
    return self.score(h)[..., 0]

  def weight_norm2(self):
    """`||w||^2` of the score layer (the geometric-GAN hinge loss's regulariser)."""
    return jnp.sum(jnp.square(self.score.kernel[...]))


class MemoryBank(nnx.Variable):
  """Past separated magnitudes (not trained; written every training step)."""


class IALCMS(nnx.Module):
  """IAL-CMS: `{mix_mag, crops | frames}` -> masks `[1, B, N, F, T]` and the loss's features."""

  def __init__(self, *, visual_input: str = "crops", dim: int = 64,
               unet: dict | None = None, visual: dict | None = None,
               critic: dict | None = None, bank_size: int = 1000,
               bank_shape: tuple[int, int] = (128, 64), rngs: nnx.Rngs):
    """Builds the model.

    Args:
      visual_input: 'crops' (detected objects, the original) or 'frames'.
      dim: D, the visual maps' and fused audio feature's width (original 512).
      unet: `AudioUNet` arguments other than the channel counts.
      visual: `VisualMaps` trunk arguments.
      critic: `IndependenceCritic` arguments; None: no critic (supervised
        setting without the adversarial term).
      bank_size: separated magnitudes the memory bank holds (original 1000).
      bank_shape: `(F, T)` of each bank entry (the training segment's warped
        magnitude: warp bins x frames).
    """
    self.visual_input = visual_lib.check_visual_input(visual_input)
    self.visual = VisualMaps(dim, **(visual or {}), rngs=rngs)
    self.unet = unet_lib.AudioUNet(1, 1, **(unet or {}), rngs=rngs)
    channels = self.unet.up_channels()
    bottleneck = self.unet.down[-1].kernel.shape[-1]
    self.av = AVModule(bottleneck, dim, rngs=rngs)
    # One scale-and-shift layer per level of the way up but the output conv.
    self.film = nnx.List([nnx.Linear(2 * dim, 2 * c, kernel_init=nnx.initializers.zeros,
                                     rngs=rngs) for c in channels[1:]])
    self.mask_scale = nnx.Param(jnp.ones((), jnp.float32))
    self.mask_bias = nnx.Param(jnp.zeros((), jnp.float32))
    if critic is not None:
      self.critic = IndependenceCritic(**critic, rngs=rngs)
      self.bank = MemoryBank(jnp.zeros((bank_size,) + tuple(bank_shape), jnp.float32))
      self.bank_count = MemoryBank(jnp.zeros((), jnp.int32))
    else:
      self.critic = None

  def __call__(self, inputs: dict) -> dict:
    """Masks and what the IAL-CMS losses read.

    Args:
      inputs: `mix_mag` `[B, F, T]` warped mixture magnitude, and `crops`
        `[B, N, H, W, 3]` or `frames` `[B, N, T', H, W, 3]`.

    Returns:
      `masks` `[1, B, N, F, T]` (>= 0), `audio_embedding` `[B, N, D]` and
      `visual_maps` `[B, N, h, w, D]` (both L2-normalised; the contrastive loss).
    """
    maps = self.visual(inputs[self.visual_input])                        # [B, N, h, w, D]
    b, n = maps.shape[:2]
    log_mix = masks_lib.log_magnitude(inputs["mix_mag"])[..., None]      # [B, F, T, 1]
    skips = [jnp.repeat(h, n, axis=0) for h in self.unet.encode(log_mix)]
    audio_vec = skips[-1].mean(axis=(1, 2))                              # [B*N, C]
    context, embedding = self.av(audio_vec, maps.reshape((b * n,) + maps.shape[2:]))
    film = [None] + [tuple(jnp.split(layer(context), 2, axis=-1)) for layer in self.film]
    out = self.unet.decode(skips, film=film)[..., 0]                     # [B*N, F, T]
    masks = jax.nn.relu(self.mask_scale[...] * out + self.mask_bias[...] + 0.5)
    return {"masks": masks.reshape((b, n) + masks.shape[1:])[None],
            "audio_embedding": embedding.reshape(b, n, -1),
            "visual_maps": maps}
