"""`synthetic_music`: a MUSIC-like dataset made on the spot from installed packages.

Each solo clip is one instrument playing a real tune (from a score corpus, with
random tempo, octave, dynamics and rests), rendered with a General-MIDI
soundfont, paired with frames that show a picture of the instrument at a
random place, size and angle on a random background, moving with its notes;
the picture's box in every frame is a detection row. The `duet` split shows two
instruments side by side with their audio summed and the two sources kept.

Splits use disjoint tunes. Everything is drawn from `seed`, so a config builds
the same dataset on every machine. The soundfont, the pictures and the tune
corpus are config fields: `tfds.builder("synthetic_music", config=
SyntheticMusicConfig(name="mine", soundfont=..., picture_dir=..., melody_corpus=...))`
builds a shifted variant without code changes.

    import data_builders  # registers the builder
    tfds.builder("synthetic_music/small", data_dir=...).download_and_prepare()
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os

import numpy as np
import tensorflow_datasets as tfds

from data_builders import features as features_lib
from data_builders.synthetic_music import instruments
from data_builders.synthetic_music import melodies
from data_builders.synthetic_music import pictures as pictures_lib
from data_builders.synthetic_music import sound

SAMPLE_RATE = 11025
SOLO_SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class SyntheticMusicConfig(tfds.core.BuilderConfig):
  """Size and sources of a `synthetic_music` build.

  Attributes:
    clips_per_class: solo clips per class in (train, validation, test).
    duet_clips: clips in the `duet` split (two instruments of distinct classes).
    clip_seconds: clip length; longer than a 65535-sample window (5.94 s) so
      random crops differ.
    fps: frame rate of `frames`.
    frame_size: side of the square frames in pixels.
    picture_px: range of a picture's longer side in pixels (in `frame_size` frames).
    seed: everything random is drawn from it.
    soundfont: `.sf2` path; None = TimGM6mb from the pretty_midi wheel.
    picture_dir: folder of `<class>.png|.svg` with alpha; None = Twemoji artwork.
    melody_corpus: `music21:<collection>` or a folder of tune files.
  """
  clips_per_class: tuple[int, int, int] = (30, 5, 5)
  duet_clips: int = 40
  clip_seconds: float = 10.0
  fps: float = 8.0
  frame_size: int = 224
  picture_px: tuple[float, float] = (70.0, 160.0)
  seed: int = 0
  soundfont: str | None = None
  picture_dir: str | None = None
  melody_corpus: str = melodies.DEFAULT_CORPUS


CONFIGS = [
    SyntheticMusicConfig(
        name="small", description="Default: 13 classes x (30, 5, 5) clips of 10 s, 40 duets."),
    SyntheticMusicConfig(
        name="full", description="13 classes x (120, 12, 12) clips of 10 s, 300 duets.",
        clips_per_class=(120, 12, 12), duet_clips=300),
    SyntheticMusicConfig(
        name="tiny", description="For tests: 1 clip per class and split, 7 s, small frames.",
        clips_per_class=(1, 1, 1), duet_clips=2, clip_seconds=7.0, fps=4.0, frame_size=96,
        picture_px=(30.0, 68.0)),
]


@dataclasses.dataclass(frozen=True)
class ClipPlan:
  """One example to make: its split, index, classes and tunes."""
  split: str
  index: int
  class_ids: tuple[int, ...]
  tune_paths: tuple[str, ...]


def plan_clips(config: SyntheticMusicConfig, tunes: list[str]) -> dict[str, list[ClipPlan]]:
  """Every example of every split, with disjoint tune pools per split."""
  num_classes = len(instruments.INSTRUMENTS)
  uses = {s: n * num_classes for s, n in zip(SOLO_SPLITS, config.clips_per_class)}
  uses["duet"] = 2 * config.duet_clips
  total = sum(uses.values())
  order = np.random.default_rng([config.seed, 7]).permutation(len(tunes))
  if len(tunes) < len(uses):
    raise ValueError(f"melody_corpus {config.melody_corpus!r}: {len(tunes)} tunes, need at "
                     f"least {len(uses)} (one per split, splits must not share tunes)")
  # Pool sizes proportional to use, at least one tune each; tunes repeat within a
  # split only when the corpus is smaller than the number of clips.
  sizes = {s: max(1, int(len(tunes) * u / max(total, 1))) for s, u in uses.items()}
  while sum(sizes.values()) > len(tunes):
    largest = max(sizes, key=sizes.get)
    sizes[largest] -= 1
  pools, start = {}, 0
  for split, size in sizes.items():
    pools[split] = [tunes[i] for i in order[start:start + size]]
    start += size

  plans = {}
  for split, per_class in zip(SOLO_SPLITS, config.clips_per_class):
    pool = pools[split]
    plans[split] = [ClipPlan(split, i, (c,), (pool[i % len(pool)],))
                    for i, c in enumerate(np.repeat(np.arange(num_classes), per_class))]
  rng = np.random.default_rng([config.seed, 11])
  pool = pools["duet"]
  plans["duet"] = [
      ClipPlan("duet", i, tuple(int(c) for c in rng.choice(num_classes, 2, replace=False)),
               (pool[(2 * i) % len(pool)], pool[(2 * i + 1) % len(pool)]))
      for i in range(config.duet_clips)]
  return plans


_WORKER = {}  # per process: the config, renderer, pictures and parsed tunes


def _init_worker(config: SyntheticMusicConfig):
  _WORKER.clear()
  _WORKER["config"] = config
  _WORKER["renderer"] = sound.Renderer(config.soundfont or sound.default_soundfont(),
                                       SAMPLE_RATE)
  _WORKER["pictures"] = pictures_lib.load_pictures(
      instruments.CLASS_NAMES, [i.emoji for i in instruments.INSTRUMENTS], config.picture_dir)
  _WORKER["tunes"] = {}


def _tune(path: str) -> np.ndarray:
  cache = _WORKER["tunes"]
  if path not in cache:
    cache[path] = melodies.parse_tune(path)
  return cache[path]


def make_example(plan: ClipPlan) -> tuple[str, dict]:
  """The TFDS example of one plan (runs in a worker set up by `_init_worker`)."""
  config = _WORKER["config"]
  split_id = (*SOLO_SPLITS, "duet").index(plan.split)
  rng = np.random.default_rng([config.seed, split_id, plan.index])
  num_samples = int(round(config.clip_seconds * SAMPLE_RATE))
  sources, events = [], []
  for class_id, path in zip(plan.class_ids, plan.tune_paths):
    instrument = instruments.INSTRUMENTS[class_id]
    voice = instrument.voices[rng.integers(len(instrument.voices))]
    notes = melodies.perform(_tune(path), voice, config.clip_seconds, rng)
    audio = _WORKER["renderer"].render(notes, num_samples, program=voice.program,
                                       is_drums=voice.is_drums)
    sources.append(sound.normalise_loudness(audio))
    events.append(notes)
  mixture = np.sum(sources, 0)
  peak = np.abs(mixture).max()
  if peak > 0.99:  # a duet's sum may clip: scale sources and mixture alike
    sources = [s * (0.99 / peak) for s in sources]
    mixture = mixture * (0.99 / peak)
  frames, detections, crops, crop_rows = pictures_lib.render_frames(
      rng, [_WORKER["pictures"][instruments.CLASS_NAMES[c]] for c in plan.class_ids],
      list(plan.class_ids), events, config.clip_seconds, config.fps, config.frame_size,
      config.picture_px)

  def to_int16(x):
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)

  names = "_".join(instruments.CLASS_NAMES[c] for c in plan.class_ids)
  video_id = f"{plan.split}_{plan.index:05d}_{names}"
  solo = len(plan.class_ids) == 1
  return video_id, {
      "audio": to_int16(mixture),
      "sources": (np.zeros((0, num_samples), np.int16) if solo
                  else np.stack([to_int16(s) for s in sources])),
      "labels": list(plan.class_ids),
      "frames": frames,
      "fps": np.float32(config.fps),
      "detections": detections,
      "object_crops": crops,
      "object_crop_rows": crop_rows,
      "video_id": video_id,
  }


class SyntheticMusic(tfds.core.GeneratorBasedBuilder):
  """Instrument clips rendered from tunes and a soundfont, with moving instrument pictures."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = CONFIGS
  DEFAULT_CONFIG_NAME = "small"

  def __init__(self, *, file_format: str | None = "array_record", num_workers: int | None = None,
               **kwargs):
    """Args: file_format (ArrayRecord by default); num_workers: processes that make
    clips (default: the CPU's cores; 1 runs in this process)."""
    super().__init__(file_format=file_format, **kwargs)
    self._num_workers = num_workers

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features_lib.features(instruments.CLASS_NAMES),
        homepage="https://github.com/avsep-jax/avsep_jax",
        description=__doc__.split("\n\n")[1],
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    plans = plan_clips(self.builder_config, melodies.tune_paths(self.builder_config.melody_corpus))
    return {split: self._generate_examples(p) for split, p in plans.items()}

  def _generate_examples(self, plans):
    workers = self._num_workers or len(os.sched_getaffinity(0))
    workers = max(1, min(workers, len(plans)))
    if workers == 1:
      _init_worker(self.builder_config)
      yield from map(make_example, plans)
      return
    # Spawned (not forked) workers: the parent has TensorFlow's threads running.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker,
                      initargs=(self.builder_config,)) as pool:
      yield from pool.imap(make_example, plans, chunksize=4)
