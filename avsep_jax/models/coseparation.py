"""Co-Separation (Gao & Grauman, 2019): one U-Net pass per visual query.

Each source's object crop gives a visual vector that is tiled over the U-Net's
bottleneck; the U-Net predicts that source's ratio-mask logits. An
object-consistency classifier labels the separated spectrogram
`log(|mix| * mask + eps)` with the object's class.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avsep_jax.audio import masks as masks_lib
from avsep_jax.models import unet as unet_lib
from avsep_jax.models import visual as visual_lib


def query_pass(visual: visual_lib.VisualEncoder, net: unet_lib.AudioUNet, mix_mag, crops):
  """Visual vectors `[B, N, D]` and mask logits `[B, N, F, T]`, each source's vector tiled
  at the U-Net's bottleneck.

  Every source of a mixture has the same U-Net input, so the way down runs once
  per mixture and only the way up once per source (the same numbers as one
  full pass per source, as Co-Separation runs it, for about half the work).
  """
  vectors = visual(crops)                                             # [B, N, D]
  b, n = vectors.shape[:2]
  log_mix = masks_lib.log_magnitude(mix_mag)[..., None]               # [B, F, T, 1]
  skips = [jnp.repeat(h, n, axis=0) for h in net.encode(log_mix)]     # [B*N, ...]
  out = net.decode(skips, vectors.reshape(b * n, -1))
  return vectors, out.reshape((b, n) + out.shape[1:3])


class CoSeparation(nnx.Module):
  """Co-Separation: `{mix_mag, crops}` -> mask logits `[1, B, N, F, T]` and class logits."""

  def __init__(self, *, num_classes: int, visual_dim: int = 512, unet: dict | None = None,
               visual: dict | None = None, classifier: dict | None = None, rngs: nnx.Rngs):
    """Builds the model.

    Args:
      num_classes: classes of the object-consistency classifier (the dataset's).
      visual_dim: length of the visual vector tiled at the bottleneck.
      unet: `AudioUNet` arguments other than channels and `cond_dim`.
      visual: `VisualEncoder` arguments other than `out_dim`.
      classifier: `VisualEncoder` arguments of the classifier, which reads one
        channel (Co-Separation: ResNet-18 with a 1-channel conv1).
    """
    self.visual = visual_lib.VisualEncoder(visual_dim, **(visual or {}), rngs=rngs)
    self.unet = unet_lib.AudioUNet(1, 1, cond_dim=visual_dim, **(unet or {}), rngs=rngs)
    self.classifier = visual_lib.VisualEncoder(num_classes, in_channels=1,
                                               **(classifier or {}), rngs=rngs)

  def separate(self, net: unet_lib.AudioUNet, x, vectors):
    """Runs `net` once per source: `x` `[B, N, F, T, C]`, vectors `[B, N, D]` -> `[B, N, F, T]`."""
    b, n = vectors.shape[:2]
    out = net(x.reshape((b * n,) + x.shape[2:]), vectors.reshape(b * n, -1))
    return out.reshape((b, n) + out.shape[1:3])

  def classify(self, mix_mag, mask_logits):
    """Class logits `[B, N, C]` of the separated spectrograms `log(|mix| * mask)`."""
    separated = mix_mag[:, None] * jax.nn.sigmoid(mask_logits)          # [B, N, F, T]
    return self.classifier(masks_lib.log_magnitude(separated)[..., None])

  def __call__(self, inputs: dict) -> dict:
    """Mask and class logits.

    Args:
      inputs: `mix_mag` `[B, F, T]` warped mixture magnitude, `crops` `[B, N, H, W, 3]`.

    Returns:
      `{"mask_logits": [1, B, N, F, T], "class_logits": [B, N, C]}`.
    """
    vectors, logits = self.first_pass(inputs)
    return {"mask_logits": logits[None],
            "class_logits": self.classify(inputs["mix_mag"], logits)}

  def first_pass(self, inputs: dict):
    """Visual vectors `[B, N, D]` and the U-Net's mask logits `[B, N, F, T]` (`query_pass`)."""
    return query_pass(self.visual, self.unet, inputs["mix_mag"], inputs["crops"])
