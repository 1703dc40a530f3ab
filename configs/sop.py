"""Sound of Pixels (Zhao et al., ECCV 2018): visual channel weights on U-Net features.

  python -m avsep_jax.main --config=configs/sop.py --workdir=runs/sop
  python -m avsep_jax.main --config=configs/sop.py:full --workdir=...

Model (`full`, the original's `train_MUSIC.sh`): dilated ResNet-18 on 3 frames
per source (224 px), 3x3 conv 512 -> 32, max over frames and space, sigmoid;
7-level U-Net (ngf 64, BatchNorm, bilinear up + 3x3 conv) to K = 32 maps;
linear synthesizer `sum_k v_k s_k a_k + b`; binary masks (source > 0.5 x
mixture) with BCE weighted by clip(log1p|mix|, 1e-3, 10).

Choices (paper/code vs ours):
- `full`: SGD momentum 0.9, wd 1e-4; U-Net and synthesizer 1e-3, frame net
  1e-4; x0.1 at epochs 40 and 80 of 100 (the script; argparse says 40, 60),
  here at 40% and 80% of the steps; volume augmentation x U(0.5, 1.5).
- SoP's frame-fc learning rate is lr_sound in the code; our frame net has one
  rate (`visual`).
- The CPU default follows the CPU recipe: 64 px object crops instead of frames,
  small conv visual net to K = 16 with sigmoid, 5-level GroupNorm U-Net (ngf
  16, nearest up), ratio masks clipped to [0, 1] with weighted L1, Adam 1e-3
  (x0.1 for the last 200 of 1400 steps).
- Visual nets train from scratch (no ImageNet weights can be downloaded here).
"""

from __future__ import annotations

from configs import common


def get_config(arg: str | None = None):
  size = common.parse_size(arg)
  c = common.base_config(size)
  if size == "full":
    c.dataset.num_frames = 3
    c.model = dict(name="sop", num_channels=32, visual_input="frames", unet=common.unet(size),
                   visual=dict(backbone="resnet18_dilated", head="conv_max",
                               activation="sigmoid"))
    c.audio.mask = "binary"
    c.train.optimizer = "sgd"
    c.train.weight_decay = 1e-4
    c.train.learning_rate = 1e-3
    c.train.module_learning_rates = dict(visual=1e-4)
    c.train.decay_steps = (int(0.4 * c.train.steps), int(0.8 * c.train.steps))
    c.train.volume_range = (0.5, 1.5)
  else:
    c.model = dict(name="sop", num_channels=16 if size == "cpu" else 4, visual_input="crops",
                   unet=common.unet(size), visual=common.small_visual(size, activation="sigmoid"))
  return common.add_model_defaults(c)
