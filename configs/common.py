"""Sections every system's config shares: dataset, audio front end, training, evaluation.

A system's file (`sop.py`, `coseparation.py`, `crn.py`) calls `base_config(size)`
and fills in `model` and the system's loss and learning rates. Sizes:

- `cpu` (no argument): the main command's CPU recipe on the embedded
  `synthetic_music/small`: 16383-sample training segments (64 frames; the
  nets are fully convolutional), log-frequency warp to 128 rows, 64 px object
  crops, GroupNorm nets, Adam 1e-3, batch 8; evaluation on full 65535-sample
  test segments. Half-length segments halve the step (CRN: 1.0 -> 0.43 s) and
  gave more SDR per minute: CRN test 2-mix SDRi 7.19 dB after 1500 steps of
  16383 samples (14 min) against 5.80 dB after 700 steps of 32767 (14 min).
  The learning rate drops x0.1 for the last 200 of 1400 steps: at a constant
  1e-3 the test SDRi of the final weights swung between 5.66 dB (step 1400)
  and 7.19 dB (step 1500); the decayed run gave 7.13 dB at step 1400.
- `full`: the papers' sizes on MUSIC (`music`): 65535 samples, 256 rows,
  224 px crops, BatchNorm, 7-level U-Nets.
- `tiny`: a seconds-long smoke run on `synthetic_music/tiny` (tests).
"""

from __future__ import annotations

from ml_collections import config_dict

SIZES = ("cpu", "full", "tiny")


def parse_size(arg: str | None) -> str:
  size = arg or "cpu"
  if size not in SIZES:
    raise ValueError(f"config argument {arg!r}: expected one of {SIZES} (e.g. crn.py:full)")
  return size


def parse_size_and_option(arg: str | None, is_option, usage: str) -> tuple[str, str | None]:
  """A `[size][,option]` config argument: the size (default cpu) and the option or None.

  `is_option(part)` tells the option from the size; `usage` (e.g.
  "[size][,setting] with setting one of ...") completes the error message.
  """
  parts = [p for p in (arg or "").split(",") if p]
  options = [p for p in parts if is_option(p)]
  sizes = [p for p in parts if not is_option(p)]
  if len(options) > 1 or len(sizes) > 1:
    raise ValueError(f"config argument {arg!r}: expected {usage}; sizes: {SIZES}")
  return parse_size(sizes[0] if sizes else None), (options[0] if options else None)


def add_model_defaults(c: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """Model keys every system takes, added after the system's file sets `c.model`.

  `compute_dtype`: 'float32' (default) or 'bfloat16', the compute dtype of the
  model's convolutions and linear layers (parameters, norms, the STFT and the
  losses stay float32; `models.layers.set_compute_dtype`). Measured on one H200
  at the paper sizes (batch 2), bfloat16 cut CRN's peak device memory 3.6x
  (10.4 -> 2.9 GB) but was no faster than float32 (benchmarks/README.md).
  """
  c.model.compute_dtype = c.model.get("compute_dtype", "float32")
  return c


def base_config(size: str) -> config_dict.ConfigDict:
  """Everything but the model, for `size` in SIZES."""
  c = config_dict.ConfigDict()
  c.seed = 42

  c.dataset = config_dict.ConfigDict()
  c.dataset.name = {"cpu": "synthetic_music/small", "full": "music",
                    "tiny": "synthetic_music/tiny"}[size]
  c.dataset.data_dir = config_dict.placeholder(str)  # None: TFDS's ~/tensorflow_datasets
  # Your downloaded recordings, for datasets built from them (music/...); read
  # once, when the dataset is first prepared under data_dir.
  c.dataset.manual_dir = config_dict.placeholder(str)
  c.dataset.train_split = "train"
  c.dataset.validation_split = "validation"
  c.dataset.test_split = "test"
  c.dataset.num_classes = {"cpu": 13, "full": 21, "tiny": 13}[size]
  c.dataset.num_mix = 2
  c.dataset.train_classes = ()    # class ids training mixtures use; (): all (SeCo: its fold's)
  c.dataset.min_mix = 0           # >0: each training mixture has U{min_mix..num_mix} sources
  # With min_mix: every batch holds each count in [min_mix, num_mix] in equal
  # shares at fixed positions instead of random counts, and the train step runs
  # each count's rows without padded sources (same loss, fewer rows of work).
  c.dataset.fixed_composition = False
  c.dataset.segment_length = {"cpu": 16383, "full": 65535, "tiny": 16383}[size]
  c.dataset.crop_size = {"cpu": 64, "full": 224, "tiny": 32}[size]
  c.dataset.num_frames = 0        # frames per source for frame-based systems (SoP full: 3)
  c.dataset.frame_size = 224
  # > 0: that many frames per second of each segment instead of num_frames, so
  # training segments and longer evaluation windows see frames equally spaced.
  c.dataset.frame_rate = 0.0
  # Training batches also hold `companions`: for each source a random segment
  # of another clip of its class (SeCo).
  c.dataset.class_companions = False
  # The share of training mixtures made of different clips of one class: their
  # sources look and sound alike, so only each player's motion in time tells
  # them apart (0: none; measured on SeCo's fold 2, see configs/seco.py).
  c.dataset.same_class_fraction = 0.0
  c.dataset.num_workers = {"cpu": 1, "full": 8, "tiny": 0}[size]  # grain worker processes
  # Decoded training examples kept per worker process (MB; 0: none): the
  # embedded dataset's train split (~460 MB decoded) then is read and parsed once.
  c.dataset.cache_mb = {"cpu": 1024, "full": 0, "tiny": 64}[size]

  c.audio = config_dict.ConfigDict()  # audio is 11025 Hz mono (the feature contract)
  c.audio.n_fft = 1022
  c.audio.hop_length = 256
  c.audio.warp_bins = {"cpu": 128, "full": 256, "tiny": 64}[size]
  c.audio.align_corners = True    # SoP/Co-Sep/CRN under PyTorch 0.4; MTSC used False
  c.audio.mask = "ratio"          # ground truth: 'ratio' or 'binary'
  c.audio.mask_max = {"cpu": 1.0, "full": 5.0, "tiny": 1.0}[size]  # ratio clip
  c.audio.binary_threshold = 0.5

  c.train = config_dict.ConfigDict()
  c.train.steps = {"cpu": 1400, "full": 35000, "tiny": 4}[size]
  c.train.batch_size = {"cpu": 8, "full": 80, "tiny": 2}[size]  # global, over all devices
  c.train.optimizer = "adam"      # 'adam' or 'sgd' (momentum b1)
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.weight_decay = 0.0      # L2 added to the gradient, as PyTorch's optimizers
  c.train.learning_rate = 1e-3
  # Per top-level module (e.g. {'visual': 1e-4}); modules not named use learning_rate.
  c.train.module_learning_rates = config_dict.ConfigDict()
  # Per top-level module: its own b1, b2, weight_decay and update interval
  # `every` (e.g. IAL-CMS's critic: dict(b1=0.0, b2=0.9, weight_decay=1e-3, every=1)).
  c.train.module_optimizers = config_dict.ConfigDict()
  # Update the parameters every this many steps (skipped steps leave the
  # optimiser state as it was); modules may override it (`every` above).
  c.train.update_every = 1
  c.train.warmup_steps = 0
  # Learning rate x decay_factor at each of these steps.
  c.train.decay_steps = {"cpu": (1200,), "full": (), "tiny": ()}[size]
  c.train.decay_factor = 0.1
  # Curriculum: () is one stage where everything trains. Otherwise stages
  # dict(start=step, frozen=(top-level module names), warmup=steps), the first
  # at step 0: a stage's frozen modules keep their values (learning rate 0) and
  # a module it unfreezes ramps up over `warmup` steps (`train.stage_schedule`).
  c.train.stages = ()
  c.train.volume_range = ()       # (lo, hi): SoP's per-source gain U(lo, hi) in training
  # > 0: each training source is filtered by its own random smooth gain curve
  # over log-frequency, within +-this many dB (`audio.random_equalizer`): a
  # class's spectral envelope then varies, so it identifies the class less.
  c.train.source_eq_db = 0.0
  # Probability that a training source's object crop is blanked (zeros after
  # normalisation), so a model that also reads frames must use them (no config sets it).
  c.train.crop_dropout = 0.0
  c.train.loss = config_dict.ConfigDict()
  c.train.loss.name = "mask"      # 'mask' (losses.mask_loss) or 'ial' (losses.ial_loss)
  c.train.loss.step_weights = (1.0,)
  c.train.loss.weighted = True    # mask loss per bin x clip(log1p|mix|, 1e-3, 10) (SoP)
  c.train.loss.classification_weight = 0.0
  c.train.loss.alignment_weight = 0.0  # CRN's feature alignment (needs model.alignment)
  c.train.log_every = {"cpu": 50, "full": 100, "tiny": 1}[size]
  c.train.checkpoint_every = {"cpu": 200, "full": 1000, "tiny": 2}[size]
  c.train.max_checkpoints = 2
  c.train.profile_steps = 0       # >0: a jax.profiler trace of that many steps after step 10
  # A step whose loss, gradients or new parameters are not finite changes nothing;
  # then 'stop' ends training with an error naming the step, 'skip' warns, counts
  # it and goes on, stopping only after more than max_skipped_steps such steps
  # (counted from the start of this process's run: a resumed run counts afresh).
  c.train.on_non_finite = "stop"
  c.train.max_skipped_steps = 10

  c.eval = config_dict.ConfigDict()
  c.eval.every = {"cpu": 700, "full": 2500, "tiny": 0}[size]  # validation SDR; 0: never
  c.eval.validation_num_mix = 2  # sources per validation mixture
  c.eval.validation_per_combination = 1
  c.eval.num_mix = (2, 3)
  c.eval.per_combination = {"cpu": (2, 1), "full": (10, 10), "tiny": (1, 1)}[size]
  c.eval.segment_length = {"cpu": 65535, "full": 65535, "tiny": 16383}[size]
  # 'centre': the listed centre segments; 'sliding': full clips by windows of
  # segment_length every window_hop samples, overlap-averaged (Co-Sep/CRN test).
  c.eval.window = {"cpu": "centre", "full": "sliding", "tiny": "centre"}[size]
  c.eval.window_hop = c.eval.get_ref("segment_length")
  c.eval.batch_size = {"cpu": 8, "full": 64, "tiny": 4}[size]
  c.eval.list_seed = 0
  c.eval.class_subset = ()        # classes of the validation/test lists; (): all (SeCo: held out)
  c.eval.list_dir = config_dict.placeholder(str)  # None: <data_dir>/eval_lists
  # A split of the dataset whose examples are duets (two players in one clip,
  # their separate audio kept), scored after the test lists; '': none.
  c.eval.duet_split = ""
  # Masks applied at evaluation: 'as_trained' (audio.mask), 'ratio' (the model's
  # masks as they are, soft) or 'binary' (thresholded at eval.mask_threshold).
  c.eval.mask = "as_trained"
  c.eval.mask_threshold = 0.5     # binary masks: sigmoid > this (SoP 0.5, MTSC 0.55)
  # Binary masks: each bin only to the source whose mask is the largest there (thesis).
  c.eval.mask_argmax = False
  c.eval.metric_backend = "jax"   # or 'mir_eval' (the reference, slow)
  # Control runs of each test list (models that read frame clips): 'rolled' scores
  # it again with each source's frames rolled in time by half the clip (the same
  # pictures and motion, out of step with the audio): how much of the score comes
  # from when each player moves. (): none.
  c.eval.frame_controls = ()
  # eval/report/index.html: this many mixtures of each scored list (and duets) shown with
  # crops, spectrograms and audio; 0: no report.
  c.eval.report_samples = {"cpu": 3, "full": 5, "tiny": 1}[size]
  c.eval.after_training = True    # --mode=train ends with the test evaluation
  return c


def unet(size: str, **overrides) -> dict:
  """The audio U-Net of `size`: CPU recipe (5 levels, ngf 16, GroupNorm) or SoP's unet7."""
  if size == "full":
    args = dict(ngf=64, num_levels=7, max_channels=512, norm="batch", upsample="bilinear",
                init_std=1e-3)
  else:
    args = dict(ngf=16 if size == "cpu" else 4, num_levels=5 if size == "cpu" else 3,
                max_channels=128, norm="group", norm_groups=8 if size == "cpu" else 4,
                upsample="nearest", init_std=1e-3)
  args.update(overrides)
  return args


def small_visual(size: str, **overrides) -> dict:
  """The CPU recipe's visual net: 4 stride-2 convs (16-32-64-64), average pool, linear."""
  widths = (16, 32, 64, 64) if size == "cpu" else (4, 8)
  args = dict(backbone="convnet", widths=widths, head="avg_linear", norm="group",
              norm_groups=8 if size == "cpu" else 4)
  args.update(overrides)
  return args
