"""Class-channel masks (the binary-mask thesis variant of Sound of Pixels).

The audio U-Net reads only the mixture and predicts one mask per class of the
dataset `[B, F, T, C]`; a visual classifier names each source's class from its
picture `[B, N, C]`; a source's mask is the class masks weighted by the
classifier's probabilities, `sum_c p_n(c) * sigmoid(a_c[f, t])`. The visual
net is a plain classifier, so it can be trained first on its own (a
`train.stages` stage with the U-Net frozen) and the class loss
(`train.loss.classification_weight`) keeps training it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avsep_jax.audio import masks as masks_lib
from avsep_jax.models import layers
from avsep_jax.models import unet as unet_lib
from avsep_jax.models import visual as visual_lib

class ClassMaskUNet(nnx.Module):
  """`{mix_mag, crops | frames}` -> mask logits `[1, B, N, F, T]` and class logits `[B, N, C]`."""

  def __init__(self, *, num_classes: int, visual_input: str = "crops",
               unet: dict | None = None, visual: dict | None = None, rngs: nnx.Rngs):
    """Builds the model.

    Args:
      num_classes: C, the dataset's classes (one mask channel and one logit each).
      visual_input: 'crops' (object crops) or 'frames' (the thesis: one frame).
      unet: `AudioUNet` arguments other than the channel counts.
      visual: `VisualEncoder` arguments other than `out_dim` (the classifier).
    """
    if num_classes < 2:
      raise ValueError(f"num_classes={num_classes}: class masks need at least 2 classes")
    self.visual_input = visual_lib.check_visual_input(visual_input)
    self.unet = unet_lib.AudioUNet(1, num_classes, **(unet or {}), rngs=rngs)
    self.visual = visual_lib.VisualEncoder(num_classes, **(visual or {}), rngs=rngs)

  def __call__(self, inputs: dict) -> dict:
    """Mask logits of every source and each source's class logits.

    Args:
      inputs: `mix_mag` `[B, F, T]` warped mixture magnitude, and `crops`
        `[B, N, H, W, 3]` or `frames` `[B, N, T', H, W, 3]` (per `visual_input`).

    Returns:
      `{"mask_logits": [1, B, N, F, T], "class_logits": [B, N, C]}`.
    """
    class_logits = self.visual(inputs[self.visual_input])              # [B, N, C]
    log_mix = masks_lib.log_magnitude(inputs["mix_mag"])[..., None]    # [B, F, T, 1]
    class_masks = jax.nn.sigmoid(self.unet(log_mix))                   # [B, F, T, C]
    probs = jax.nn.softmax(class_logits, axis=-1)
    masks = jnp.einsum("bnc,bftc->bnft", probs, class_masks)
    return {"mask_logits": layers.probabilities_to_logits(masks)[None],
            "class_logits": class_logits}
