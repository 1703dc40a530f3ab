"""Co-Separation (Gao & Grauman, ICCV 2019): object crops as visual queries.

  python -m avsep_jax.main --config=configs/coseparation.py --workdir=runs/coseparation
  python -m avsep_jax.main --config=configs/coseparation.py:full --workdir=...

Model: ResNet-18 on the object crop, 1x1 conv to 128 + BN + ReLU, flatten,
linear to 512, tiled over the 7-level U-Net's 2 x 2 bottleneck before the
audio features; transposed-conv up path; sigmoid ratio mask. An
object-consistency ResNet-18 (1-channel conv1) classifies log(|mix| x mask).

Loss: weighted L1 (weight clip(log1p|mix|, 1e-3, 10)) between the mask and the
ratio target clipped to [0, 5], + 0.05 x cross-entropy (the README command's
weight; argparse default 1).

Choices (paper/code vs ours):
- The co-separation loss sums the masks of all objects of one video; our
  mixtures have one object per video, where it is the per-source L1.
- No ADE scene image as an extra 'background' object.
- `full`: Adam(0.9, 0.999), wd 1e-4; visual 1e-5, U-Net and classifier 1e-4;
  x0.1 at 15000 and 30000 of 35000 batches of 80; conv init N(0, 0.02). The
  CPU default uses the CPU recipe (see configs/common.py) with visual_dim 64.
- Visual nets train from scratch (no ImageNet weights can be downloaded here).
"""

from __future__ import annotations

from configs import common


def get_config(arg: str | None = None):
  size = common.parse_size(arg)
  c = common.base_config(size)
  if size == "full":
    c.model = dict(name="coseparation", num_classes=c.dataset.num_classes, visual_dim=512,
                   unet=common.unet(size, upsample="transpose", init_std=0.02),
                   visual=dict(backbone="resnet18", head="conv1x1_fc", norm="batch",
                               image_size=224),
                   classifier=dict(backbone="resnet18", head="avg_linear"))
    c.train.weight_decay = 1e-4
    c.train.learning_rate = 1e-4
    c.train.module_learning_rates = dict(visual=1e-5)
    c.train.decay_steps = (15000, 30000)
  else:
    c.model = dict(name="coseparation", num_classes=c.dataset.num_classes,
                   visual_dim=64 if size == "cpu" else 8, unet=common.unet(size),
                   visual=common.small_visual(size), classifier=common.small_visual(size))
  c.train.loss.classification_weight = 0.05
  return common.add_model_defaults(c)
