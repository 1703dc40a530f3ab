"""The TFDS side shared by builders of users' downloaded recordings (`music`, `urmp`, ...).

A builder subclasses `ManualVideoBuilder`, sets its configs, homepage and
instructions, and implements `find_recordings(manual_dir, report)`; this class
splits the recordings (`videos.assign_splits`), decodes them in worker
processes (`videos.make_examples`), reports unusable files and writes
`build_report.tsv` and `splits.json` beside the finished build.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os

import tensorflow_datasets as tfds

from data_builders import features as features_lib
from data_builders import media
from data_builders import videos as videos_lib

SOLO_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


@dataclasses.dataclass
class ManualConfig(tfds.core.BuilderConfig):
  """What a build of downloaded recordings keeps and how it cuts them.

  Attributes:
    class_names: the dataset's class list (`labels`); recordings of other
      classes are skipped and noted in the report.
    clip: how recordings become clips (`videos.ClipOptions`).
    fractions: seeded split fractions when the layout has no splits.
    split_by_class: split each class's recordings by the fractions (solo
      datasets); False: split all recordings together (ensembles, whose
      instrument combinations rarely repeat).
  """
  class_names: tuple[str, ...] = ()
  clip: videos_lib.ClipOptions = videos_lib.ClipOptions()
  fractions: dict = dataclasses.field(default_factory=lambda: dict(SOLO_FRACTIONS))
  split_by_class: bool = True


_WORKER = {}


def _init_worker(options, class_names):
  _WORKER.update(options=options, class_names=class_names)


def _examples_or_error(video):
  """`(examples, None)` or `([], error)` for one recording (runs in a worker)."""
  try:
    return videos_lib.make_examples(video, _WORKER["options"], _WORKER["class_names"]), None
  except media.MediaError as e:
    return [], e


class ManualVideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the builders that read a manual_dir of downloaded recordings."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  HOMEPAGE = ""
  DESCRIPTION = ""

  def __init__(self, *, strict: bool = False, split_seed: int = 0,
               num_workers: int | None = None, allow_pickle: bool = False,
               file_format: str | None = "array_record", **kwargs):
    """Args: strict (stop at the first unusable file instead of skipping and
    reporting it); split_seed (of the seeded splits); num_workers (decoding
    processes; default: the CPU's cores); allow_pickle (read pickled inputs,
    SeCo's; unpickling runs code from the file); file_format (ArrayRecord)."""
    super().__init__(file_format=file_format, **kwargs)
    self._report = videos_lib.BuildReport(strict=strict)
    self._split_seed, self._num_workers = split_seed, num_workers
    self._allow_pickle = allow_pickle

  def find_recordings(self, manual_dir, report: videos_lib.BuildReport
                      ) -> list[videos_lib.VideoSource]:
    """The recordings of `manual_dir` this config keeps (problems go to `report`)."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features_lib.features(self.builder_config.class_names),
        homepage=self.HOMEPAGE, description=self.DESCRIPTION,
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    config = self.builder_config
    found = self.find_recordings(dl_manager.manual_dir, self._report)
    splits = videos_lib.assign_splits(found, config.fractions, self._split_seed,
                                      by_class=config.split_by_class)
    self.info.metadata["splits"] = {k: [v.video_id for v in vs] for k, vs in splits.items()}
    return {name: self._generate_examples(recordings) for name, recordings in splits.items()}

  def _generate_examples(self, recordings):
    config = self.builder_config
    workers = max(1, min(self._num_workers or len(os.sched_getaffinity(0)), len(recordings)))
    if workers == 1:
      _init_worker(config.clip, config.class_names)
      results = map(_examples_or_error, recordings)
    else:
      context = multiprocessing.get_context("spawn")  # TensorFlow's threads run in the parent
      pool = context.Pool(workers, initializer=_init_worker,
                          initargs=(config.clip, config.class_names))
      results = pool.imap(_examples_or_error, recordings)
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
      raise ValueError(f"{self.name}/{config.name}: a split of {len(recordings)} recordings "
                       "has no usable clip:\n  " + "\n  ".join(skipped or ["(no recordings)"]))
    self.info.metadata["bad_files"] = [list(b) for b in self._report.bad]
    self.info.metadata["notes"] = list(self._report.notes)

  def _post_download_and_prepare_hook(self):
    """`build_report.tsv` and `splits.json` beside the finished build."""
    folder = self.data_path
    (folder / "build_report.tsv").write_text(self._report.text())
    videos_lib.write_split_file(folder / "splits.json", self.info.metadata["splits"])
