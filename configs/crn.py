"""CRN / FCSN (Ma et al., ACM MM 2021): Co-Separation + a weight-shared refinement U-Net.

  python -m avsep_jax.main --config=configs/crn.py --workdir=runs/crn          # CPU default
  python -m avsep_jax.main --config=configs/crn.py:full --workdir=gs://.../crn  # paper sizes

Model: Co-Separation's visual vector tiled at the U-Net bottleneck gives the
ratio mask M_0; then T refinement steps of one shared U-Net on
(M_{i-1}, residual mask (|mix| - sum_n M_n |mix|) / |mix|) with the same visual
vector give M_1..M_T (`lax.scan`, gradients through all steps, as the original).
The original's refiner output replaces the mask logits (`:full`); the CPU
default adds it to the step's input logits (`model.refine_update='residual'`).

Loss (original `loss_calc/train.py`): weighted L1 on M_0 (weight 1) +
sum_i f_i L1(M_i) with f = linspace(1, 0, T + 2)[1:-1] normalised (`factor_type
= 'down'`: 0.5, 0.333, 0.167 for T = 3) + 0.05 x object-consistency
cross-entropy on M_0's separated spectrogram + 100 x (`:full`; 0 in the CPU
default, see below) the audio-feature alignment: MSE between
`model.alignment`'s projections (the original's `Down_channels`: 1x1 conv to
128 + norm + ReLU, linear to 512, N(0, 0.02) init) of the classifier's
backbone map of log|source| and of log(M_T |mix|)
(`train.loss.alignment_weight`).

Choices (paper/code vs ours):
- Alignment head: the original flattens the classifier's whole 8 x 8 map of
  its fixed 256 x 256 input; ours averages the map over time first and
  flattens the frequency rows, so it takes any clip length.
- The co-separation loss sums the masks of all objects of one video; our
  mixtures have one object per video, where it is the per-source L1.
- Optimiser: the original's Adam(0.5, 0.999), wd 1e-4, 1e-4 for all modules
  but the classifier (1e-5), x0.1 at epochs 120 and 240 of 300 (here 40% and
  80% of the steps), is the `full` config.
  The CPU default uses the CPU recipe (configs/common.py): Adam(0.9, 0.999)
  at 1e-3, x0.1 for the last 200 of 1600 steps, GroupNorm nets of 5 levels
  on 128-row maps (base ngf 16, refiner ngf 8), 64 px crops and a small conv
  visual net and classifier trained from scratch, ratio targets clipped to
  [0, 1], T = 2 steps.
- Training mixtures (CPU default): 2 or 3 sources (the original trains
  3-mixes), four of each per batch of 8 at fixed positions
  (`dataset.fixed_composition`), so the step runs 8 + 12 source rows instead
  of 24 padded ones: about 0.45 s per step in the loop against 0.62 s, for
  the same loss and gradients as the padded batch. The default's 1600 steps
  (x0.1 from 1400) gave test SDRi 8.54 / 7.59 dB (2- / 3-mix; per-step SDR
  7.77 / 8.40 / 8.68 and 3.63 / 4.63 / 4.66) in an 11.9-minute main command
  from a fresh clone (2026-11-27). The rest of this paragraph was measured
  with `refine_update='replace'`: 8.17 / 7.06 dB. With 1450 steps (x0.1
  from 1250) this gave test SDRi 7.82 / 6.59 dB (2- / 3-mix; per-step SDR
  7.78 / 8.08 / 7.95 and 3.47 / 4.04 / 3.66). Also measured at 1450 steps:
  x0.1 from 1050 instead: 7.43 / 6.25 dB; Adam at 2e-3: no learning
  (validation SDRi -0.07 dB at step 700); loss factors 'up' instead of
  'down': 6.53 / 5.66 dB, with step 1 at -0.71 dB SDR; 8191-sample segments
  (2000 steps, about the same time): 6.17 / 5.10 dB.
  Earlier, with counts drawn per mixture and padded to 3: trained on
  2-mixes only, the refiner never saw a 3-source residual and lowered 3-mix SDR at each step
  (test 3-mix SDRi 3.22 dB, per step 2.26 / 0.82 / 0.29, after 1400 steps);
  with 2-3 mixes, 5.95 dB (2.63 / 3.48 / 3.02), and 2-mixes 7.13 -> 7.48 dB.
  Drawing one count per batch (all-2 or all-3 batches, no padding) learned
  far slower (test 2-mix SDRi 3.68 dB after 1600 steps).
- The refiner is half the base's width (CPU default): it runs 2 x N times
  per mixture against the base's one encoder and N decoders. At full width
  the 1400-step run gave the same 2-mix SDRi (7.48 dB) at about 0.8 s per
  step against 0.65 s.
- Refinement update (`model.refine_update`): the original's refiner output
  becomes the next logits ('replace'), so every step re-synthesises the whole
  mask from (mask, residual mask). In the CPU default its second step was
  always below its first (test 2-mix SDRi 8.17 / 3-mix 7.06 dB, per-step
  2-mix SDR 8.11 / 8.39 / 8.30: last step +0.19 dB over M_0, short of the
  project's +0.5 dB). 'residual' adds the output to the step's input logits,
  so a step only corrects the mask it was given; every step then gains:
  8.54 / 7.59 dB SDRi, per step 7.77 / 8.40 / 8.68 and 3.63 / 4.63 / 4.66
  (seed 1: 8.43 / 7.21 dB, 7.22 / 8.45 / 8.57 and 3.18 / 4.34 / 4.28). It
  is the CPU default; `:full` keeps 'replace'. (Before fixed-composition
  batches, 'residual' had trailed 'replace' at step 700: validation SDRi
  4.67 against 5.95 dB.) Also measured, 1600 steps, SDRi 2- / 3-mix:
  `model.detach_steps` with 'replace' 8.13 / 6.58 dB (per step 7.83 / 8.33 /
  8.26), plus flat step weights (1, 0.5, 0.5) 7.56 / 6.68, plus 'up' weights
  7.13 dB (2-mix); 'residual' with `detach_steps` 7.91 / 6.68 dB (7.85 /
  7.86 / 8.04); 'residual' with `model.refine_sees_mixture` (log|mix| as a
  third refiner input) 7.77 / 6.90 dB (6.87 / 7.42 / 7.91).
- Alignment loss: 0 in the CPU default. At 100 the small classifier's
  projections match within ~50 steps (the term falls to ~3e-4 by step 50
  and ~3e-6 by step 100), so it stops shaping the masks, and it costs 15%
  more per step (265 against 230 ms median, side by side on 2 cores).
- Visual nets train from scratch (no ImageNet weights can be downloaded here).
- The original assumes exactly `num_per_mix` batch rows per mixture; ours
  takes `[B, N]` sources with a `source_mask`, so padded sources stay out of
  the residual.
"""

from __future__ import annotations

import numpy as np

from configs import common


def refine_weights(steps: int, kind: str = "down") -> tuple[float, ...]:
  """CRN's per-step loss factors: 'down' (original), 'up' or 'flat', summing to 1."""
  f = np.linspace(1.0, 0.0, steps + 2)[1:-1]
  f = {"down": f, "up": f[::-1], "flat": np.ones(steps)}[kind]
  return tuple(float(v) for v in f / f.sum())


def get_config(arg: str | None = None):
  size = common.parse_size(arg)
  c = common.base_config(size)
  steps = 3 if size == "full" else 2
  if size == "full":
    visual = dict(backbone="resnet18", head="conv1x1_fc", norm="batch", image_size=224)
    classifier = dict(backbone="resnet18", head="avg_linear")
    c.model = dict(name="crn", num_classes=c.dataset.num_classes, refine_steps=steps,
                   visual_dim=512, unet=common.unet(size, upsample="transpose", init_std=0.02),
                   visual=visual, classifier=classifier, detach_steps=False,
                   refine_update="replace", refine_sees_mixture=False,
                   alignment=dict(channels=128, dim=512, norm="batch",
                                  input_rows=c.audio.warp_bins))
    c.train.loss.alignment_weight = 100.0
    c.train.b1 = 0.5
    c.train.weight_decay = 1e-4
    c.train.learning_rate = 1e-4
    c.train.module_learning_rates = dict(classifier=1e-5)
    c.train.decay_steps = (int(0.4 * c.train.steps), int(0.8 * c.train.steps))
  else:
    # The refiner at half the base's width: its 2 x N passes per mixture cost
    # more than the base's shared encoder and N decoders at equal width.
    refine = common.unet(size, ngf=8, norm_groups=4) if size == "cpu" else None
    c.model = dict(name="crn", num_classes=c.dataset.num_classes, refine_steps=steps,
                   visual_dim=64 if size == "cpu" else 8, unet=common.unet(size),
                   refine_unet=refine, visual=common.small_visual(size),
                   classifier=common.small_visual(size), detach_steps=False,
                   refine_update="residual", refine_sees_mixture=False,
                   alignment=dict(channels=32, dim=64, norm="group",
                                  input_rows=c.audio.warp_bins))
    if size == "cpu":  # 2- and 3-mixes (the original trains 3-mixes)
      c.dataset.num_mix, c.dataset.min_mix = 3, 2
      c.dataset.fixed_composition = True  # each count's rows run unpadded
      # Steps that fit the main command's 20 minutes on 2 cores (~0.45 s each).
      c.train.steps = 1600
      c.train.decay_steps = (1400,)
  c.train.loss.step_weights = (1.0,) + refine_weights(steps)
  c.train.loss.classification_weight = 0.05
  return common.add_model_defaults(c)
