"""The TFDS side shared by builders of users' downloaded recordings (`music`, `urmp`, ...).

A builder subclasses `ManualVideoBuilder`, sets its configs, homepage and
instructions, and implements `find_recordings(manual_dir, report)`; this class
splits the recordings (`videos.assign_splits`), decodes them in worker
processes (`videos.make_examples`), reports unusable files and writes
`build_report.tsv` and `splits.json` beside the finished build.

Large builds can run as an Apache Beam pipeline instead of the local process
pool: give the download config a `beam_runner` (or `beam_options`), e.g.
`prepare_dataset --beam_runner=DirectRunner` in `.venv-beam`. Each recording
is then decoded by a Beam worker; unusable files still end up in
`build_report.tsv` (the workers write them beside the build, and the finished
pipeline's result is read back before the dataset info is written).
"""

from __future__ import annotations

import dataclasses
import json
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
    self._beam, self._max_examples = False, None

  def find_recordings(self, manual_dir, report: videos_lib.BuildReport
                      ) -> list[videos_lib.VideoSource]:
    """The recordings of `manual_dir` this config keeps (problems go to `report`)."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features_lib.features(self.builder_config.class_names),
        homepage=self.HOMEPAGE, description=self.DESCRIPTION,
        metadata=tfds.core.MetadataDict())

  def _generate_splits(self, dl_manager, download_config):
    # TFDS runs a split generator that is a Beam PTransform when the download
    # config names a runner or options; it does not cap Beam splits itself.
    self._beam = (download_config.beam_runner is not None
                  or download_config.beam_options is not None)
    self._max_examples = download_config.max_examples_per_split
    return super()._generate_splits(dl_manager, download_config)

  def _split_generators(self, dl_manager):
    config = self.builder_config
    found = self.find_recordings(dl_manager.manual_dir, self._report)
    splits = videos_lib.assign_splits(found, config.fractions, self._split_seed,
                                      by_class=config.split_by_class)
    self.info.metadata["splits"] = {k: [v.video_id for v in vs] for k, vs in splits.items()}
    if self._beam:
      return {name: beam_clips(recordings, dataset=f"{self.name}/{config.name}", split=name,
                               options=config.clip,
                               class_names=config.class_names, strict=self._report.strict,
                               max_examples=self._max_examples,
                               bad_files_path=self._bad_files_path(name))
              for name, recordings in splits.items()}
    return {name: self._generate_examples(recordings, name) for name, recordings in splits.items()}

  def _generate_examples(self, recordings, split: str):
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
    if not count:
      raise no_usable_clip(f"{self.name}/{config.name}", split, len(recordings), skipped)
    self._record_report()

  def _record_report(self):
    self.info.metadata["bad_files"] = [list(b) for b in self._report.bad]
    self.info.metadata["notes"] = list(self._report.notes)

  def _bad_files_path(self, split: str) -> str:
    # Inside the build's temporary folder while TFDS generates (a `gs://` path on Dataflow).
    return os.fspath(self.data_path / f"bad_files-{split}.jsonl")

  def _process_pipeline_result(self, pipeline_result):
    """After a Beam build: the files the workers could not use go into the report."""
    del pipeline_result
    for split in self.info.metadata["splits"]:
      path = tfds.core.Path(self._bad_files_path(split))
      if path.exists():
        self._report.bad.extend(sorted(tuple(json.loads(line))
                                       for line in path.read_text().splitlines() if line))
        path.unlink()
    self._record_report()

  def _post_download_and_prepare_hook(self):
    """`build_report.tsv` and `splits.json` beside the finished build."""
    folder = self.data_path
    (folder / "build_report.tsv").write_text(self._report.text())
    videos_lib.write_split_file(folder / "splits.json", self.info.metadata["splits"])


def no_usable_clip(dataset: str, split: str, recordings: int, skipped) -> ValueError:
  """The error for a split without clips (TFDS would fail on it without saying why)."""
  return ValueError(f"{dataset}: the {split} split of {recordings} recordings has no usable "
                    "clip:\n  " + "\n  ".join(skipped or ["(no recordings)"]))


def beam_clips(recordings, *, dataset: str, split: str, options: videos_lib.ClipOptions,
               class_names, strict: bool, max_examples: int | None, bad_files_path: str):
  """A Beam PTransform: `(key, example)` for every clip of `recordings`.

  Each recording is decoded by a worker (`videos.make_examples`). A file that
  cannot be used fails the pipeline when `strict`; otherwise it is written, as
  a JSON `[path, reason]` line, to `bad_files_path`. A split without clips
  fails with those reasons before TFDS writes anything. `max_examples` keeps
  that many clips, those with the smallest keys.
  """
  beam = tfds.core.lazy_imports.apache_beam

  def clips_or_bad_file(video):
    try:
      examples = videos_lib.make_examples(video, options, class_names)
    except media.MediaError as e:
      if strict:
        raise
      yield beam.pvalue.TaggedOutput("bad", (e.path, e.reason))
      return
    yield beam.pvalue.TaggedOutput("count", len(examples))
    yield from examples

  def check_not_empty(unused_none, count, bad):
    if not count:
      raise no_usable_clip(dataset, split, len(recordings),
                           [f"{path}: {reason}" for path, reason in sorted(bad)])

  @beam.ptransform_fn
  def clips_of_recordings(root):
    decoded = (root
               | "Recordings" >> beam.Create(recordings)
               | "Spread" >> beam.Reshuffle()  # one recording per work item, on any worker
               | "Decode" >> beam.FlatMap(clips_or_bad_file).with_outputs(
                   "bad", "count", main="clips"))
    _ = (decoded.bad
         | "BadFileLines" >> beam.Map(json.dumps)
         | "WriteBadFiles" >> beam.io.WriteToText(bad_files_path, num_shards=1,
                                                  shard_name_template=""))
    checked = (root
               | "CheckStart" >> beam.Create([None])
               | "CheckNotEmpty" >> beam.Map(
                   check_not_empty,
                   count=beam.pvalue.AsSingleton(decoded.count | beam.CombineGlobally(sum)),
                   bad=beam.pvalue.AsList(decoded.bad)))
    # The side input orders the check before TFDS's writer sees any clip.
    clips = decoded.clips | "AfterCheck" >> beam.Map(
        lambda clip, unused: clip, unused=beam.pvalue.AsList(checked))
    if max_examples is not None:
      clips = (clips
               | "Cap" >> beam.combiners.Top.Smallest(max_examples, key=lambda kv: kv[0])
               | "Uncap" >> beam.FlatMap(lambda kept: kept))
    return clips

  return clips_of_recordings()  # pylint: disable=no-value-for-parameter
