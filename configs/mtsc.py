"""MTSC, "Modeling Two-Stream Correspondence for Visual Sound Separation".

  python -m avsep_jax.main --config=configs/mtsc.py --workdir=runs/mtsc          # CPU default
  python -m avsep_jax.main --config=configs/mtsc.py:full --workdir=gs://.../mtsc  # paper sizes

Model (`avsep_jax/models/mtsc.py`): per source, an appearance/timbre stream
(2-D trunk on a few frames or the object crop, per-pixel linear, mean over
frames) and a motion/content stream (3-D ResNet on the frame clip, linear);
the appearance map is pooled by motion-guided attention, and the motion and
pooled appearance vectors are tiled over the audio U-Net's bottleneck beside
its features; the U-Net decodes one sigmoid mask per source.

Loss: the mask loss of `train.loss` on the single step: `:full` as the
original, unweighted BCE on binary masks (source > 0.5 x mixture); the CPU
default the CPU recipe's weighted L1 on ratio masks.

Curriculum (`train.stages`, three stages, an unfrozen stream's learning rate
ramping up over `warmup` steps): 1. appearance/timbre (the motion net
frozen), 2. motion/content (the appearance net frozen), 3. everything,
starting at 30% and 60% of the steps.

Choices (paper/code vs ours):
- The curriculum is named in the original's README ("three-stage curriculum
  training strategy with soft transition") but is not in its released code;
  the stages above are ours, and every part of them is a config field.
- The original freezes ImageNet ResNet-18 (appearance) and a Kinetics-trained
  3-D ResNet-50 (motion); no pretrained weights can be downloaded here, so
  both train from scratch, frozen only by the curriculum.
- Two-stream block: the original runs two innermost down/up blocks, adding
  the motion vector to one stream's bottleneck and the pooled appearance
  vector to the other's, and concatenates them before the way up. Ours tiles
  both vectors beside the bottleneck features before the first up conv (a
  linear map of all three, as the original's up conv of the two sums). A
  first version with the original's additions (each stream a 3x3 conv, norm
  and ReLU on bottleneck + vector, merged by a 1x1 conv) did not learn on
  the CPU default (every source got the same mask; validation SDRi -0.01 dB
  after 700 steps). The correspondence score is divided by sqrt(C) so the
  attention's sigmoid starts unsaturated.
- The original applies a sigmoid to the appearance trunk's (post-ReLU) map,
  which suits its frozen ImageNet trunk. Trained from scratch through that
  sigmoid the visual streams carried no usable signal (with the visual
  vectors tiled at the bottleneck as above: test 2-mix SDRi -0.01 dB after
  350 steps with the sigmoid, 1.90 dB without); `model.appearance.activation`
  is 'none' in every size ('sigmoid' restores the original).
- One frame clip per source feeds both streams: the appearance net sees
  `model.appearance_frames` of its frames, evenly spaced (the original: 3
  frames at 224 px), the motion net all of them, resized to `model.motion.size`
  (the original: 16 frames at 112 px).
- The original unwarps masks to the 512 linear-frequency bins before its loss
  (`grid_sample(align_corners=False)`); ours computes the loss on the warped
  bins, as the other systems (the same bins the evaluation unwarps).
- `:full` optimiser: SGD momentum 0.9, wd 1e-4, 1e-3, x0.1 at epochs 40, 50
  and 60 of 100 (here at 40%, 50% and 60% of the steps); evaluation
  threshold 0.55 (`eval.mask_threshold`).
- CPU default: the appearance net reads the object crop (64 px; as the CPU
  defaults of the other systems; from frames, Co-Separation's visual net
  did not learn in 350 steps either: 0.01 dB against 1.97 dB from crops),
  the motion net 8 frames of 64 px per source; the CPU recipe's small conv
  trunk for appearance and a 3-stage basic-block 3-D ResNet (8-16-32) for
  motion, 5-level GroupNorm U-Net (ngf 16), Adam 1e-3; about 0.4 s per step
  on 2 cores (the motion net's 3-D convs folded into 2-D ones, `Conv3D`).

Measured (CPU default, 1400 steps on 2 cores, 641 s of training): test
2-mix / 3-mix SDRi 4.59 / 2.88 dB on the shared lists (validation SDRi
4.07 dB at step 700, in the second, motion stage).
"""

from __future__ import annotations

from configs import common


def get_config(arg: str | None = None):
  size = common.parse_size(arg)
  c = common.base_config(size)
  if size == "full":
    c.dataset.num_frames = 16
    c.dataset.frame_size = 224
    c.model = dict(
        name="mtsc", appearance_frames=3, appearance_input="frames",
        unet=common.unet(size, num_levels=6),
        appearance=dict(backbone="resnet18_dilated", activation="none"),
        motion=dict(size=112, block="bottleneck", blocks=(3, 4, 6, 3),
                    widths=(64, 128, 256, 512), norm="batch", fold_time=False))
    c.audio.mask = "binary"
    c.train.loss.weighted = False
    c.train.optimizer = "sgd"
    c.train.weight_decay = 1e-4
    c.train.learning_rate = 1e-3
    c.train.decay_steps = tuple(int(f * c.train.steps) for f in (0.4, 0.5, 0.6))
    c.eval.mask_threshold = 0.55
    warmup = 1000
  else:
    c.dataset.num_frames = 8 if size == "cpu" else 4
    c.dataset.frame_size = 64 if size == "cpu" else 32
    groups = 8 if size == "cpu" else 4
    c.model = dict(
        name="mtsc", appearance_frames=3 if size == "cpu" else 2, appearance_input="crops",
        unet=common.unet(size),
        appearance=dict(backbone="convnet", widths=(16, 32, 64, 64) if size == "cpu" else (4, 8),
                        norm="group", norm_groups=groups, activation="none"),
        motion=dict(size=None, block="basic", blocks=(1, 1, 1) if size == "cpu" else (1,),
                    widths=(8, 16, 32) if size == "cpu" else (4,), stem_kernel=3,
                    stem_pool=False, norm="group", norm_groups=4))
    warmup = {"cpu": 100, "tiny": 1}[size]
  steps = c.train.steps
  c.train.stages = (dict(start=0, frozen=("motion",)),
                    dict(start=int(0.3 * steps), frozen=("appearance",), warmup=warmup),
                    dict(start=int(0.6 * steps), frozen=(), warmup=warmup))
  return common.add_model_defaults(c)
