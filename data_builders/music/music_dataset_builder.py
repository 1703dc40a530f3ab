"""`music`: MUSIC-21 / MUSIC-11 solos and MUSIC duets from videos the user downloaded.

MUSIC (Zhao et al., ECCV 2018; MUSIC-21: ICCV 2019) is published as lists of
YouTube ids (`MUSIC_solo_videos.json`, `MUSIC21_solo_videos.json`,
`MUSIC_duet_videos.json`); users download the videos themselves and point the
build at them (`manual_dir`), in any layout `data_builders.videos.LAYOUTS`
reads. Each recording is cut into clips of `clip_seconds`; its frames are
stored at `fps`, its audio at 11025 Hz mono; detection `.npy` files of an
external detector give the object boxes (without them: the whole frame, or a
duet's halves).

MUSIC has no official split: the recordings of each class are split by a
seeded shuffle (`split_seed`, 80/10/10 %), unless the layout gives splits
(`train.csv`/`val.csv`/`test.csv`); the build writes the split it used to
`splits.json` beside the data, and files it could not use to
`build_report.tsv`.

    python -m avsep_jax.data.prepare --dataset=music/music21 --manual_dir=~/MUSIC
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os

import tensorflow_datasets as tfds

from data_builders import features as features_lib
from data_builders import media
from data_builders import videos as videos_lib

# The published class lists (the MUSIC JSON lists' folder names), sorted.
MUSIC11_CLASSES = ("accordion", "acoustic_guitar", "cello", "clarinet", "erhu", "flute",
                   "saxophone", "trumpet", "tuba", "violin", "xylophone")
MUSIC21_CLASSES = tuple(sorted(MUSIC11_CLASSES + (
    "bagpipe", "banjo", "bassoon", "congas", "drum", "electric_bass", "guzheng", "piano",
    "pipa", "ukulele")))

SOLO_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


@dataclasses.dataclass
class MusicConfig(tfds.core.BuilderConfig):
  """Which recordings and how they are cut.

  Attributes:
    class_names: the dataset's class list (`labels`); folders of other
      classes are skipped (and noted in the report).
    duets: True: only recordings of two classes (one `duet` split); False:
      only solos.
    clip: how recordings become clips (`videos.ClipOptions`).
    fractions: seeded split fractions when the layout has no splits.
  """
  class_names: tuple[str, ...] = MUSIC21_CLASSES
  duets: bool = False
  clip: videos_lib.ClipOptions = videos_lib.ClipOptions()
  fractions: dict = dataclasses.field(default_factory=lambda: dict(SOLO_FRACTIONS))


CONFIGS = [
    MusicConfig(name="music21", description="MUSIC-21 solos: 21 classes, train/validation/test."),
    MusicConfig(name="music11", description="MUSIC-11 solos: the original 11 classes.",
                class_names=MUSIC11_CLASSES),
    MusicConfig(name="music_duet", description="MUSIC duets (two labels, no separate sources).",
                duets=True, fractions={"duet": 1.0}),
]

_WORKER = {}


def _init_worker(options, class_names):
  _WORKER.update(options=options, class_names=class_names)


def _examples_or_error(video):
  """`(examples, None)` or `([], error)` for one recording (runs in a worker)."""
  try:
    return videos_lib.make_examples(video, _WORKER["options"], _WORKER["class_names"]), None
  except media.MediaError as e:
    return [], e


class Music(tfds.core.GeneratorBasedBuilder):
  """MUSIC solos or duets from a manual_dir of downloaded videos."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = CONFIGS
  DEFAULT_CONFIG_NAME = "music21"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download the videos of the MUSIC JSON lists (https://github.com/roudimit/MUSIC_dataset) "
      "and pass their folder as manual_dir (`python -m avsep_jax.data.prepare "
      "--dataset=music/music21 --manual_dir=DIR`, or `--config.dataset.manual_dir=DIR` for "
      "avsep_jax.main), in one of these layouts:\n" + "\n".join(
          f"  - {k}: {v}" for k, v in videos_lib.LAYOUTS.items()))

  def __init__(self, *, strict: bool = False, split_seed: int = 0,
               num_workers: int | None = None, file_format: str | None = "array_record",
               **kwargs):
    """Args: strict (stop at the first unusable file instead of skipping and
    reporting it); split_seed (of the seeded splits); num_workers (decoding
    processes; default: the CPU's cores); file_format (ArrayRecord)."""
    super().__init__(file_format=file_format, **kwargs)
    self._report = videos_lib.BuildReport(strict=strict)
    self._split_seed, self._num_workers = split_seed, num_workers

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features_lib.features(self.builder_config.class_names),
        homepage="https://github.com/roudimit/MUSIC_dataset",
        description=__doc__.split("\n\n")[1],
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    config = self.builder_config
    found = videos_lib.find_videos(dl_manager.manual_dir, config.class_names, self._report)
    chosen = [v for v in found if (len(v.labels) == 2) == config.duets]
    splits = videos_lib.assign_splits(chosen, config.fractions, self._split_seed)
    self.info.metadata["splits"] = {k: [v.video_id for v in vs] for k, vs in splits.items()}
    return {name: self._generate_examples(videos) for name, videos in splits.items()}

  def _generate_examples(self, videos):
    config = self.builder_config
    workers = max(1, min(self._num_workers or len(os.sched_getaffinity(0)), len(videos)))
    if workers == 1:
      _init_worker(config.clip, config.class_names)
      results = map(_examples_or_error, videos)
    else:
      context = multiprocessing.get_context("spawn")  # TensorFlow's threads run in the parent
      pool = context.Pool(workers, initializer=_init_worker,
                          initargs=(config.clip, config.class_names))
      results = pool.imap(_examples_or_error, videos)
    count, skipped = 0, []
    try:
      for examples, error in results:
        if error is not None:
          self._report.add(error)
          skipped.append(str(error))
        count += len(examples)
        yield from examples
    finally:
      if workers > 1:
        pool.terminate()
    if not count:  # TFDS would fail without the reason
      raise ValueError(f"{self.name}/{config.name}: a split of {len(videos)} recordings "
                       "has no usable clip:\n  " + "\n  ".join(skipped or ["(no recordings)"]))
    self.info.metadata["bad_files"] = [list(b) for b in self._report.bad]
    self.info.metadata["notes"] = list(self._report.notes)

  def _post_download_and_prepare_hook(self):
    """`build_report.tsv` and `splits.json` beside the finished build."""
    folder = self.data_path
    (folder / "build_report.tsv").write_text(self._report.text())
    videos_lib.write_split_file(folder / "splits.json", self.info.metadata["splits"])
