"""Builds a registered TFDS dataset when it is not prepared yet (safe with several processes).

    python -m avsep_jax.data.prepare --dataset=synthetic_music/small [--data_dir=DIR]
    python -m avsep_jax.data.prepare --dataset=music/music21 --manual_dir=~/MUSIC \
        [--max_examples=N] [--strict]
    .venv-beam/bin/python -m avsep_jax.data.prepare --dataset=music/music21 \
        --manual_dir=~/MUSIC --beam_runner=DirectRunner \
        --beam_options="--direct_num_workers=8 --direct_running_mode=multi_processing"

The entry points call `prepare_dataset` before reading, so a fresh machine
builds the embedded dataset on first use. TFDS writes into a temporary folder
and renames it when complete, so an interrupted build is never read as a
dataset; a later call starts it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import shlex

from absl import app
from absl import flags
from absl import logging

from avsep_jax import files
from avsep_jax.data import mixtures


def default_data_dir() -> str:
  """TFDS's own default (`$TFDS_DATA_DIR`, else ~/tensorflow_datasets)."""
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)  # other processes wait here
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_dataset(name: str, data_dir: str | None = None, *, num_workers: int | None = None,
                    manual_dir: str | None = None, max_examples: int | None = None,
                    strict: bool = False, allow_pickle: bool = False,
                    beam_runner: str | None = None, beam_options: str | None = None):
  """Returns the TFDS builder of `name` (e.g. "synthetic_music/small"), built if needed.

  Args:
    name: a registered dataset, optionally with `/config`.
    data_dir: TFDS data_dir (default: TFDS's own).
    num_workers: processes that make or decode examples; default: the CPU's cores.
    manual_dir: the folder of the user's downloaded data (builders derived
      from `data_builders.manual.ManualVideoBuilder`; default: TFDS's
      `<data_dir>/downloads/manual`).
    max_examples: at most this many examples per split (a quick trial build).
    strict: stop at the first file a builder of downloaded data cannot use,
      instead of skipping it and listing it in the build's `build_report.tsv`.
    allow_pickle: let a builder read pickled inputs (SeCo's `train.pkl`);
      unpickling runs code stored in the file, so only for files you trust.
    beam_runner: build as an Apache Beam pipeline on this runner
      ("DirectRunner" locally, "DataflowRunner", ...); builders of downloaded
      data only. Needs apache-beam: `bash launch/setup.sh --with-beam`, then
      `.venv-beam/bin/python`.
    beam_options: Beam pipeline flags as one string, e.g.
      "--direct_num_workers=8 --direct_running_mode=multi_processing" or
      Dataflow's "--project=... --region=... --temp_location=gs://...".
      Given alone, the pipeline runs on Beam's default runner.

  Raises:
    ValueError: the dataset name is not registered, or Beam was asked for a
      builder that does not support it or in an environment without it.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import data_builders  # pylint: disable=g-import-not-at-top,unused-import  (registers builders)
  from data_builders import manual  # pylint: disable=g-import-not-at-top
  data_dir = data_dir or default_data_dir()
  try:
    builder_cls = tfds.builder_cls(name.split("/")[0])
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"dataset {name!r} is not registered ({e})") from e
  pipeline_options = _beam_pipeline_options(name, builder_cls, beam_runner, beam_options)
  kwargs = {}
  if issubclass(builder_cls, manual.ManualVideoBuilder):
    kwargs = dict(num_workers=num_workers, strict=strict, allow_pickle=allow_pickle)
  elif builder_cls.name == "synthetic_music":
    kwargs = dict(num_workers=num_workers)
  try:
    builder = tfds.builder(name, data_dir=data_dir, **kwargs)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"dataset {name!r} is not registered ({e})") from e
  if builder.is_prepared():
    return builder
  if files.is_remote(data_dir):
    # No file lock on Cloud Storage: several hosts would each build. Build once first
    # (`launch/tpu_vm.sh prepare`, or this module's command line), then train.
    if jax_process_count() > 1:
      raise ValueError(f"{name} is not prepared in {data_dir}: build it once before a "
                       "multi-host run (python -m avsep_jax.data.prepare --dataset="
                       f"{name} --data_dir={data_dir})")
    lock = contextlib.nullcontext()
  else:
    lock = _file_lock(pathlib.Path(data_dir) / f".{name.replace('/', '_')}.lock")
  with lock:
    builder = tfds.builder(name, data_dir=data_dir, **kwargs)  # another process may have built it
    if not builder.is_prepared():
      logging.info("building %s in %s", name, data_dir)
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          compute_stats=tfds.download.ComputeStatsMode.SKIP,
          manual_dir=os.path.expanduser(manual_dir) if manual_dir else None,
          max_examples_per_split=max_examples, beam_runner=beam_runner,
          beam_options=pipeline_options))
      skipped = builder.info.metadata.get("bad_files", []) if builder.info.metadata else []
      if skipped:
        logging.warning("%s: %d files skipped, listed with reasons in %s", name,
                        len(skipped), builder.data_path / "build_report.tsv")
  return builder


def _beam_pipeline_options(name, builder_cls, beam_runner, beam_options):
  """`PipelineOptions` of the `beam_options` string (None without Beam), or a clear error."""
  from data_builders import manual  # pylint: disable=g-import-not-at-top
  if beam_runner is None and beam_options is None:
    return None
  if not issubclass(builder_cls, manual.ManualVideoBuilder):
    raise ValueError(f"dataset {name!r} builds without Beam: only builders of downloaded "
                     "data (music, urmp, vggsound, audioset_instruments) take --beam_runner")
  try:
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError("a Beam build needs apache-beam, which this environment lacks: run "
                     "`bash launch/setup.sh --with-beam` and use .venv-beam/bin/python") from e
  return pipeline_options.PipelineOptions(shlex.split(beam_options or ""))


def jax_process_count() -> int:
  """Processes of the jax job (1 when jax is not distributed)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count()


def _check_shard(path: str, expected: int) -> None:
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  try:
    reader = array_record_module.ArrayRecordReader(path)
    try:
      count = reader.num_records()
    finally:
      reader.close()
  except Exception as e:  # array_record raises RuntimeError without the path
    raise ValueError(f"shard {path} is corrupt ({e}); delete the dataset folder and "
                     "prepare it again") from e
  if count != expected:
    raise ValueError(f"shard {path} has {count} records, dataset_info.json says {expected}; "
                     "it is truncated or from another build: delete the dataset folder and "
                     "prepare it again")


def open_split(name: str, split: str, data_dir: str | None = None):
  """A checked random-access source of one split (`tfds.data_source`), read without TensorFlow.

  Every shard the dataset's metadata lists must exist and hold the number of
  records the metadata says, so a missing or damaged file is reported by name
  here instead of as an anonymous error mid-training.

  Raises:
    ValueError: the dataset is not prepared, the split is unknown, or a shard is
      missing or corrupt (the file is named).
  """
  return _checked_source(name, split, data_dir)[0]


def _checked_source(name: str, split: str, data_dir: str | None):
  """`(source, builder)` of `open_split`, after its checks."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import data_builders  # pylint: disable=g-import-not-at-top,unused-import
  data_dir = data_dir or default_data_dir()
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise ValueError(f"dataset {name} is not prepared in {data_dir}: run "
                     f"`python -m avsep_jax.data.prepare --dataset={name} --data_dir={data_dir}`")
  splits = builder.info.splits
  if split not in splits:
    raise ValueError(f"dataset {name} has no split {split!r}; it has {sorted(splits)}")
  info = splits[split]
  for path, expected in zip(info.filepaths, info.shard_lengths):
    if not os.path.isfile(path):
      raise ValueError(f"shard {path} of {name}/{split} is missing; delete the dataset folder "
                       "and prepare it again")
    _check_shard(str(path), expected)
  return tfds.data_source(name, split=split, data_dir=data_dir, download=False), builder


def open_indexed_split(name: str, split: str, data_dir: str | None = None):
  """`open_split` and the split's `mixtures.ClipIndex`, the index cached with the build.

  The index (labels, lengths, ids of every clip) takes one read of every
  example; it is cached as JSON inside the dataset build's own folder, so it
  is read once per build and a rebuilt dataset never meets a stale index.
  Builds on remote storage (e.g. `gs://`) are indexed without a cache.

  Returns:
    `(source, index)`.
  """
  source, builder = _checked_source(name, split, data_dir)
  build_dir = str(builder.data_dir)
  cache = None if "://" in build_dir else pathlib.Path(build_dir) / f"clip_index.{split}.json"
  return source, mixtures.clip_index(source, cache)


def main(argv):
  del argv
  flag = flags.FLAGS
  builder = prepare_dataset(flag.dataset, flag.data_dir, num_workers=flag.num_workers,
                            manual_dir=flag.manual_dir, max_examples=flag.max_examples,
                            strict=flag.strict, allow_pickle=flag.allow_pickle,
                            beam_runner=flag.beam_runner, beam_options=flag.beam_options)
  print(f"{flag.dataset}: prepared in {builder.data_dir}")
  for split, info in builder.info.splits.items():
    print(f"  {split}: {info.num_examples} examples")
  skipped = builder.info.metadata.get("bad_files", []) if builder.info.metadata else []
  if skipped:
    print(f"  {len(skipped)} files skipped: see {builder.data_path / 'build_report.tsv'}")


if __name__ == "__main__":  # flags only for the command line: importers may define their own
  flags.DEFINE_string("dataset", "synthetic_music/small", "Dataset (name/config) to build.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's own).")
  flags.DEFINE_integer("num_workers", None, "Builder processes (default: the CPU's cores).")
  flags.DEFINE_string("manual_dir", None, "Folder of your downloaded data (music, ...).")
  flags.DEFINE_integer("max_examples", None, "At most this many examples per split.")
  flags.DEFINE_bool("strict", False, "Stop at the first unusable file instead of skipping "
                    "and reporting it.")
  flags.DEFINE_bool("allow_pickle", False, "Read pickled inputs (SeCo's train.pkl/test.pkl). "
                    "Unpickling runs code stored in the file: only for files you trust.")
  flags.DEFINE_string("beam_runner", None, "Build as an Apache Beam pipeline on this runner "
                      "(DirectRunner, DataflowRunner, ...): run in .venv-beam "
                      "(bash launch/setup.sh --with-beam).")
  flags.DEFINE_string("beam_options", None, "Beam pipeline flags, one quoted string, e.g. "
                      "'--direct_num_workers=8 --direct_running_mode=multi_processing'.")
  app.run(main)
