"""SeCo (Zhou et al., WACV 2023): separating instruments of categories unseen in training.

  python -m avsep_jax.main --config=configs/seco.py --workdir=runs/seco            # fold 1
  python -m avsep_jax.main --config=configs/seco.py:fold2 --workdir=runs/seco_f2
  python -m avsep_jax.main --config=configs/seco.py:full,fold1 --workdir=...
  python -m avsep_jax.main --config=configs/seco.py:fold2,timing --workdir=runs/seco_f2_timing

The argument is `[size][,foldK][,timing]`. A fold splits the dataset's classes
into training classes (`dataset.train_classes`: training mixtures use only them)
and held-out classes (`eval.class_subset`: validation and test lists use only
them), so every reported figure is on categories the model never heard.
MUSIC-21 (`:full`): 16 training / 5 held-out classes; `synthetic_music`: 10 /
3 of its 13. The original's fold lists are neither in its code nor in its
README (they point to the paper, which could not be read here): our folds
are seeded random splits (`FOLD_SEED` + K), listed by `fold_classes`.

Follows the released code (DongzhanZhou/SeCo: main.py, models/, dataset/):
- Model (`avsep_jax/models/seco.py`): Sound of Pixels with a video net. The
  audio U-Net (BatchNorm on the input, 5 levels 64-128-256-512-512, bilinear
  up-sampling, 64 output channels); each source's 24-frame, 128 px clip
  through "FastNet", the Fast pathway of a SlowFast network (stem 8 channels,
  bottleneck blocks (3, 4, 6, 3), 256 outputs; `motion.FastPathway`); a
  bias-free linear 256 -> 64, sigmoid, and SoP's synthesizer; sigmoid masks.
- Consistency features: a ResNet-10 (32-64-128-256) on log spectrograms
  embeds the separated sources (the mixture's log magnitude times the mask,
  as the code does), the true sources, and a segment of another clip of the
  same class (`dataset.class_companions`; the code's `normal_temp`).
- Losses (`losses.seco_loss`): weighted BCE on binary masks (source > 0.5 x
  mixture); sync (inter-modal) 0.01 x (positive + negative) with d the mean
  squared difference of L2-normalised features, positive
  d(separated, own video) + g d(true source, own video), g =
  max(0.1, 0.9^(step / 100)), negative relu(1 - d(separated, the other
  source's video)) (the code's "easy" negatives, `neg_param=0.1`);
  temporal (intra-modal) 0.01 x (MSE(same-class segment, separated) +
  relu(1 - MSE(separated 1, separated 2))), features L2-normalised.
- The ResNet-10 is never given to the optimiser in the original, so it keeps
  its random initialisation while gradients pass through it: kept here with
  a zero learning rate (`train.module_learning_rates.sync_net`).
- Optimiser: Adam, video net 1e-4, U-Net and synthesizer 1e-3, batch 16,
  no schedule (100 epochs of 10 x the clips there).
- Frames: 24 over each 6 s segment (4 per second; `dataset.frame_rate=4`);
  the original reads them from frames extracted at 12 fps, every third.

Differences, each a choice:
- FastNet's pretrained weights (`fast_pretrained.pth`, on Google Drive) are
  not reachable: the video net trains from scratch (also at 1e-3 on CPU).
- Its STFT hop is 259 (oddly); ours is the family's 256. Its segments are
  66150 samples; ours 65535. Its sync net has no linear after the pool; our
  spectrogram encoder has one (`head='avg_linear'`).
- The original's data are SeCo pickles (`data/fold{N}/train.pkl`: clips of
  `category`, `index`, `audio`; `test.pkl`: those plus `samples` pairs);
  here any dataset with the feature contract, and the shared mixture lists
  restricted to the held-out classes (CPU: 10 mixtures per pair and triple).
- CPU size: 16383-sample segments (12 frames of 64 px at 8 per second), K =
  16, a U-Net of 5 levels from 16 channels, a video net of one block per stage
  (widths 4-8-16-16, 64 outputs, GroupNorm), the CPU recipe's small conv net as
  the spectrogram encoder, 1e-3 everywhere but the frozen encoder.
- CPU size, two departures from the released model (`:full` keeps its
  choices). Without FastNet's pretrained weights, the appearance a video net
  learns from 10 classes says nothing about an unseen class: the original's
  choices score below the mixture on held-out classes (below). The motion of
  `synthetic_music`'s players does carry over: each picture bounces on every
  note onset, the same way for every class. This is the category-independent
  audio-visual correspondence the paper's inter-modal consistency relies on.
  So:
  - `model.frame_input='differences'`: the video net sees each frame minus
    the one before, that is, only what moves;
  - `model.per_frame_weights=True`: each frame gives the channel weights of
    its own time span, so a source's mask can follow its player in time. The
    original pools the clip into one set of weights.
  Also `dataset.frame_rate=8`: the bounce decays in 0.15 s, and at 4 frames
  per second it is mostly missed. Of the variants measured (below), these
  choices are the only ones above the original's on both folds.

Measured (CPU default, 2 cores; 30 held-out 2-mixes, 10 3-mixes; SDRi;
"validation" is the validation split's held-out 2-mixes at step 700):
- fold 1 (held out: flute, maracas, trombone), 1400 steps: 2-mix +1.86 dB
  (SDR 1.94, SIR 5.80, SAR 9.86; flute +3.85, trombone +2.73, maracas
  -1.01), 3-mix +1.47 dB.
- fold 2 (held out: accordion, piano, trumpet), 1400 steps: 2-mix -2.48 dB
  (SDR -2.39, SIR 2.36, SAR 4.82; accordion -5.17, piano -0.23, trumpet
  -2.04), 3-mix -2.69 dB: below the mixture. With its sigmoid outputs used
  as soft masks instead of thresholded ones (`--config.audio.mask=ratio`, at
  evaluation only): -0.14 / -0.07 dB (SAR 12.4 dB, but SIR only 2.0 dB).
- The variants compared (1400 steps each; "validation" is the validation
  split's held-out 2-mixes at step 700). Training and test SDRi disagree
  often on 30 mixtures, so read single differences of a dB or two as noise:

  | fold | video input | channel weights | frames/s | 2-mix | 3-mix | validation |
  |---|---|---|---|---|---|---|
  | 1 | frames (original) | one set per clip (original) | 4 | -2.83 | -3.37 | +2.22 |
  | 1 | frames | per frame | 8 | -2.56 | -2.85 | -4.90 |
  | 1 | differences | one set per clip | 8 | +2.16 | +1.31 | -1.66 |
  | 1 | differences (default) | per frame | 8 | +1.86 | +1.47 | +4.51 |
  | 2 | frames (original) | one set per clip (original) | 4 | -3.68 | -3.73 | |
  | 2 | differences | one set per clip | 8 | -4.12 | -3.97 | -6.05 |
  | 2 | differences (default) | per frame | 8 | -2.48 | -2.69 | -4.60 |

  Two further variants, fold 2 only (2026-11-28; neither is a default):
  - `model.motion_channels=4` (each source's per-frame video features as 4
    extra U-Net input maps, one U-Net pass per source) on the default:
    -3.41 / -2.43 dB (validation -3.23); 904 s of training (the default's
    fold-2 run: 965 s).
  - the same with `model.video_net='energy'` (`MotionEnergyNet`: only how
    much each half of the picture moves per frame, nothing of what it looks
    like; widths (16, 32), 64 outputs): -0.93 / -1.29 dB (validation -1.15),
    439 s.
    Its training loss stayed at 0.22-0.23 (the default's fell to 0.16): its
    masks stay near 0.5.
  Why motion energy is a weak cue here: on a training batch (16 mixtures,
  fold 2, 8 frames/s), a source's per-frame motion energy correlates 0.20
  with its own audio onsets and 0.05 with the other source's. Notes come
  every 0.2-0.4 s, the bounce decays in 0.15 s, and frames come every
  0.125 s, so about half of all frames show a bounce of either player.
  The direction of motion is a strong cue (2026-11-28, 20 training clips,
  the builder's own note events): the mean absolute frame difference at
  64 px follows the absolute change of the bounce drive between frames
  (correlation 0.83), but the frame difference correlates -0.06 with the
  onsets in the frame's interval, while the signed change of the drive
  correlates 0.85 (55 clips; 0.94 at 16 frames/s): a picture moves as much
  when a bounce decays as when a note starts.
  - `model.video_net='cost_volume'` (`CostVolumeNet`: a correlation layer
    between each frame and the one before, over displacements of up to 2 px
    at 64 px, on locally normalised grey pictures; widths (16, 32), 64
    outputs) keeps which way each part of the picture moved. Fold 2, per
    frame weights: validation -6.33 dB at step 700 (the run was stopped
    there): what moves how much and how often identifies the training
    classes as well as their pictures do. With
    `model.centre_frame_features=True` (each frame's features minus their
    clip mean, so only when a player moves is left): validation -1.47,
    test -2.43 / -2.32 dB (SAR 1.65), 1384 s of training; with its outputs
    as soft masks at evaluation (`--config.audio.mask=ratio`), +0.28 /
    +0.26 dB (SIR 0.95). The same with `model.motion_channels=4` (each
    source's centred motion as U-Net input maps, one U-Net pass per source):
    validation -2.39, test -0.98 / -0.93 dB (SIR 2.39, SAR 4.58), 1735 s;
    soft masks +0.65 / +0.49 dB (SIR 1.24). These runs padded the net's
    neighbourhood means with zeros at the picture's border; it now averages
    the in-frame pixels only.
  - `dataset.same_class_fraction=0.5` (half the training mixtures are two
    clips of one class, whose pictures and timbres are alike, so only when
    each player moves tells them apart): on the default, -2.32 / -1.51 dB
    (validation -1.01; accordion -4.18, piano -1.29, trumpet -1.49), 762 s;
    on the cost volume net with centred features and `motion_channels=4`,
    -1.21 / -0.71 dB (validation -1.36, SIR 2.47, SAR 3.94), 1084 s; soft masks
    +0.51 / +0.55 dB. Against the same variants without it (-2.48 / -2.69
    and -0.98 / -0.93 dB): no clear change.
  - 2800 steps (learning rate x0.1 at 2600): -2.40 / -1.65 dB (validation
    -2.40, -0.58, -2.45 at steps 700, 1400, 2100), 1710 s of training. On
    the test split's mixtures of training classes (45, one per pair) the same
    model scores +6.42 dB SDRi, the 1400-step default about 0 dB (fold 1's
    default: +4.91 dB there, +1.86 on its held-out classes): with more
    steps fold 2 learns its training classes but does not carry them over.
    Accordion stays the worst held-out class (-6.10 dB; piano +0.40, trumpet
    -1.51).
  - `train.source_eq_db=15` (each training source through its own random
    smooth gain curve over log-frequency, within +-15 dB, so a class's
    spectral envelope varies from mixture to mixture): -1.65 / -1.17 dB
    (validation -0.85; accordion -5.48, piano +1.84, trumpet -1.30; training
    classes +5.54 dB), 1019 s. Fold 1 with it: +2.48 / +1.35 dB (SDR 2.56,
    SIR 6.02, SAR 11.73; validation +1.26), 1114 s, against the default's
    +1.86 / +1.47. (Both runs drew the curves from a key split off the
    step's key.) Fold 2 again with the equaliser's own key, as the code now
    draws it: -3.03 / -1.80 dB (validation -1.94), 856 s. So the two fold-2
    runs of one setting span 1.4 dB on 2-mixes: the equaliser's gains are
    within run-to-run noise. Not a default.
  - What a model takes from the frames (2026-11-28). `eval.frame_controls`
    (on here) scores the test lists again with each source's frames rolled
    in time by half the clip: the same pictures and motion, out of step with
    the audio. Fold 1's default falls from +1.86 / +1.47 to +0.70 / +0.30 dB:
    most of its gain on unseen classes comes from when each player moves.
    Fold 2's 2800-step model, scored by a scratch script: on held-out
    classes -2.40 dB, and -2.43 with each source's frames taken from
    another mixture (other clips, mostly of other classes), so its video
    helps nothing there; on training classes +6.42 dB, -0.93 with other
    mixtures' frames, +5.87 with frames rolled by 3 of 12. It learned what
    each training class looks like, hardly when it plays.
  - `dataset.same_class_fraction=1.0` (every training mixture two clips of
    one class, so appearance tells the sources nothing and only timing
    does): -1.36 / -0.98 dB at 1400 steps (validation -1.69), 769 s; at
    2800 steps (learning rate x0.1 at 2600) -0.69 / -0.51 dB (validation
    -1.69, -2.79, -0.52 at 700, 1400, 2100; SIR 1.60, SAR 6.82), 1357 s;
    rolled frames -2.39 / -1.63 dB; soft masks +0.39 / +0.34 dB. On the
    training classes' mixtures the 2800-step model scores -0.18 dB, about
    its held-out figure: it carries over to new classes and it uses timing,
    but it has not learned to separate well. Its loss was still falling
    (0.22 at step 700, 0.195 at 2800). With the cost volume net, centred
    features and `motion_channels=4` as well (the `timing` argument):
    -0.53 / -0.26 dB at 1400 steps (validation -1.60 at 700; SIR 2.15,
    SAR 5.70), rolled frames -2.21 / -1.53 dB, 1029 s; at 2800 steps (x0.1
    at 2600) -0.05 / -0.06 dB, at the mixture (validation -1.60, -1.64,
    -0.55; SIR 2.61, SAR 6.16; accordion -0.71, piano +0.19, trumpet +0.38),
    rolled frames -2.62 / -1.88 dB, 2790 s (a slowed machine); at 4200 steps
    (x0.1 at 3900) +0.50 / +0.28 dB, just above it (validation -0.93 at 2800,
    -0.28 at 3500; accordion +0.27, piano +0.61, trumpet +0.62), rolled
    frames -2.67 / -2.13 dB, 5009 s. Accordion, -4.2 to -6.1 dB in every
    variant trained on mixed classes, is no longer the outlier.
    The same on fold 1 (`seco.py:fold1,timing`, 4200 steps, x0.1 at 3900;
    2026-12-07): -0.65 / +0.17 dB (SDR -0.57, SIR 4.69, SAR 4.25; flute
    -1.63, maracas +1.03, trombone -1.34; validation -0.83, -1.36, -0.21,
    -0.53, +0.01 at steps 700 to 3500, loss 0.19 at the end), rolled frames
    -4.97 / -4.20 dB, about 3950 s of training. It separates fold 1's
    noise-like maracas, which the default cannot (-1.01), by timing alone
    (rolling its frames costs 4.3 dB), but not flute and trombone, which the
    default separates (+3.85, +2.73). Neither set of choices is above the
    mixture on both folds with binary masks, so `timing` stays an option.
    Its sigmoid outputs used as soft masks at evaluation
    (`--mode=eval --config.audio.mask=ratio`; 2026-12-07) put it above the
    mixture on both folds and in every held-out class: fold 1 (4200 steps)
    +1.35 / +1.61 dB (flute +0.96, maracas +1.84, trombone +1.26; SIR 2.95,
    SAR 10.82; rolled frames -1.16 / -1.08), fold 2 (1400 steps; binary
    masks -0.90 / -0.50 in this run) +0.74 / +0.53 dB (accordion +0.45,
    piano +1.02, trumpet +0.75; rolled -0.47 / -0.25).
  With the original's choices, fold 1's maracas scored -12.25 dB: this
  noise-like class, unlike any training class, got almost no bins.
- The original choices with the spectrogram net trained too
  (`--config.train.module_learning_rates.sync_net=0.001`), fold 1: -3.43 / -3.49 dB.
- Our earlier interpretation (Co-Separation-style separator, softmax masks,
  InfoNCE, mask sum and re-mixing terms), replaced when the code was found:
  -0.76 / +0.30 dB; Co-Separation on the same 10 classes: -2.43 / -2.06 dB.
"""

from __future__ import annotations

import numpy as np

from configs import common

FOLD_SEED = 1000
HELD_OUT = {"cpu": 3, "tiny": 3, "full": 5}


def fold_classes(num_classes: int, held_out: int, fold: int) -> tuple[tuple[int, ...],
                                                                     tuple[int, ...]]:
  """`(training classes, held-out classes)` of fold `fold` (seeded, sorted)."""
  order = np.random.default_rng(FOLD_SEED + fold).permutation(num_classes)
  return (tuple(sorted(int(c) for c in order[held_out:])),
          tuple(sorted(int(c) for c in order[:held_out])))


def get_config(arg: str | None = None):
  usage = "[size][,foldK][,timing] with K >= 1 (e.g. seco.py:full,fold2 or seco.py:fold2,timing)"
  parts = [p for p in (arg or "").split(",") if p]
  timing = "timing" in parts
  size, fold_arg = common.parse_size_and_option(
      ",".join(p for p in parts if p != "timing"), lambda p: p.startswith("fold"), usage)
  fold_arg = fold_arg or "fold1"
  if not fold_arg[4:].isdigit() or int(fold_arg[4:]) < 1:
    raise ValueError(f"config argument {arg!r}: expected {usage}")
  fold = int(fold_arg[4:])
  c = common.base_config(size)
  train_classes, held_out = fold_classes(c.dataset.num_classes, HELD_OUT[size], fold)
  c.dataset.train_classes = train_classes
  c.eval.class_subset = held_out
  c.dataset.frame_rate = 4.0            # 24 frames per 6 s window, as the original (:full)
  c.dataset.class_companions = True     # the same-class segments of the temporal term
  c.audio.mask = "binary"
  if size == "full":
    c.dataset.frame_size = 128
    c.train.batch_size = 16
    c.model = dict(name="seco", num_channels=64,
                   unet=dict(ngf=64, num_levels=5, max_channels=512, norm="batch",
                             upsample="bilinear", init_std=1e-3),
                   video=dict(stem_channels=8, blocks=(3, 4, 6, 3), widths=(8, 16, 32, 64),
                              norm="batch"),
                   sync_net=dict(backbone="resnet10", head="avg_linear"),
                   per_frame_weights=False, frame_input="frames", motion_channels=0,
                   video_net="fast", centre_frame_features=False)
    c.train.learning_rate = 1e-3
    c.train.module_learning_rates = dict(video=1e-4, sync_net=0.0)
  else:
    c.dataset.frame_size = 64 if size == "cpu" else 32
    c.dataset.frame_rate = 8.0          # the players' bounce lasts ~0.15 s
    c.model = dict(name="seco", num_channels=16 if size == "cpu" else 4,
                   unet=common.unet(size),
                   video=dict(stem_channels=8 if size == "cpu" else 4, blocks=(1, 1, 1, 1),
                              widths=(4, 8, 16, 16) if size == "cpu" else (4, 4, 4, 4),
                              norm="group", norm_groups=4),
                   sync_net=common.small_visual(size), per_frame_weights=True,
                   frame_input="differences", motion_channels=0, video_net="fast",
                   centre_frame_features=False)
    c.train.module_learning_rates = dict(sync_net=0.0)
    c.eval.per_combination = (10, 10) if size == "cpu" else (1, 1)
    c.eval.validation_per_combination = 10 if size == "cpu" else 1
    # Scored again with frames out of step: how much comes from when players move.
    c.eval.frame_controls = ("rolled",) if size == "cpu" else ()
  if timing:
    if size == "full":
      raise ValueError(f"config argument {arg!r}: 'timing' is defined for the cpu and tiny sizes")
    # Only when each player moves, never what it looks like (docstring: fold 2's variants).
    c.model.video_net = "cost_volume"
    c.model.video = dict(max_shift=2, window=5, widths=(16, 32) if size == "cpu" else (4, 4),
                         temporal_kernel=3, out_channels=64 if size == "cpu" else 8)
    c.model.centre_frame_features = True
    c.model.motion_channels = 4
    c.dataset.same_class_fraction = 1.0
  c.train.loss.name = "seco"
  c.train.loss.seco = dict(sync_weight=0.01, temp_weight=0.01, sync_margin=1.0,
                           negatives="easy", gt_decay=0.9, gt_every=100.0, gt_floor=0.1)
  return common.add_model_defaults(c)
