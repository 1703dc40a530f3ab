"""MTSC, "Modeling Two-Stream Correspondence for Visual Sound Separation".

  python -m avsep_jax.main --config=configs/mtsc.py --workdir=runs/mtsc          # CPU default
  python -m avsep_jax.main --config=configs/mtsc.py:full --workdir=gs://.../mtsc  # paper sizes

Model (`avsep_jax/models/mtsc.py`): per source, an appearance/timbre stream
(2-D trunk on a few frames, sigmoid, per-pixel linear, mean over frames) and a
motion/content stream (3-D ResNet on the frame clip, linear); at the audio
U-Net's bottleneck a content stream adds the motion vector and a timbre stream
adds the appearance map pooled by motion-guided attention; a 1x1 conv merges
them and the U-Net decodes one sigmoid mask per source.

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
- Two-stream block: the original runs two innermost down/up blocks; ours runs
  two 3x3 conv streams on the innermost features and merges them with a 1x1
  conv before the shared way up. The correspondence score is divided by
  sqrt(C) so the attention's sigmoid starts unsaturated.
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
- CPU default: 8 frames of 64 px per source, the CPU recipe's small conv
  trunk for appearance and a 3-stage basic-block 3-D ResNet (8-16-32) for
  motion, 5-level GroupNorm U-Net (ngf 16), Adam 1e-3; about 0.4 s per step
  on 2 cores (the motion net's 3-D convs folded into 2-D ones, `Conv3D`).

Status: the CPU default does not learn yet. Its loss stays at the level of
one mask for every source and validation SDRi is -0.01 dB after 350 and 700
steps: the model gives every source of a mixture the same mask (outputs
differ by ~1e-5 between sources after 800 steps, the fused bottleneck by 0.4%)
while the audio path grows. Measured alike without the curriculum
(`train.stages=()`), with object crops as the appearance input
(`model.appearance_input=crops`) and with the visual vectors stacked on the
bottleneck instead of added, and with Co-Separation's object-consistency
classifier added (weight 0.05: test 2-mix SDRi 0.00 dB after 700 steps, the
estimates half the mixture each). Co-Separation and CRN, whose visual vector
is stacked on the same U-Net's bottleneck, learn on these data; with MTSC's
motion and pooled appearance vectors stacked there the same way, test 2-mix
SDRi was -0.07 dB after 350 steps against Co-Separation's 1.97 dB, so the
visual streams, not the fusion, are where the signal is lost.
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
        appearance=dict(backbone="resnet18_dilated"),
        motion=dict(size=112, block="bottleneck", blocks=(3, 4, 6, 3),
                    widths=(64, 128, 256, 512), norm="batch", fold_time=False),
        fusion=dict(norm="batch"))
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
        name="mtsc", appearance_frames=3 if size == "cpu" else 2, appearance_input="frames",
        unet=common.unet(size),
        appearance=dict(backbone="convnet", widths=(16, 32, 64, 64) if size == "cpu" else (4, 8),
                        norm="group", norm_groups=groups),
        motion=dict(size=None, block="basic", blocks=(1, 1, 1) if size == "cpu" else (1,),
                    widths=(8, 16, 32) if size == "cpu" else (4,), stem_kernel=3,
                    stem_pool=False, norm="group", norm_groups=4),
        fusion=dict(norm="group", norm_groups=groups))
    warmup = {"cpu": 100, "tiny": 1}[size]
  steps = c.train.steps
  c.train.stages = (dict(start=0, frozen=("motion",)),
                    dict(start=int(0.3 * steps), frozen=("appearance",), warmup=warmup),
                    dict(start=int(0.6 * steps), frozen=(), warmup=warmup))
  return c
