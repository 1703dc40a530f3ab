"""Beam builds of downloaded data (`--beam_runner=DirectRunner`, run in .venv-beam).

The Beam path must give the same examples, splits and build report as the
local process pool, honour `--max_examples` and `--strict`, and fail with the
reasons when a split has no usable clip.
"""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest
import tensorflow_datasets as tfds

from avsep_jax.data import prepare
import fake_media

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEAM_PYTHON = ROOT / ".venv-beam" / "bin" / "python"
NAME = "music/music21"
pytestmark = pytest.mark.slow


def run_beam_build(manual_dir, data_dir, *flags):
  """`prepare` in the Beam environment; returns the finished process."""
  if not BEAM_PYTHON.exists():
    message = ".venv-beam is missing: run `bash launch/setup.sh --with-beam`"
    if os.environ.get("CI"):
      pytest.fail(message)  # CI sets it up (.ci/run); never pass there by skipping
    pytest.skip(message)
  return subprocess.run(
      [str(BEAM_PYTHON), "-m", "avsep_jax.data.prepare", f"--dataset={NAME}",
       f"--manual_dir={manual_dir}", f"--data_dir={data_dir}", "--beam_runner=DirectRunner",
       *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  """MUSIC's video layout: six usable 7 s solos and three unusable files."""
  root = tmp_path_factory.mktemp("beam_manual")
  for cls, freq in (("violin", 440), ("cello", 220)):
    for i in range(3):
      fake_media.write_mp4(root / "solo" / cls / f"{cls}{i}.mp4", freq=freq * (1 + 0.1 * i))
  (root / "solo/violin/empty.mp4").write_bytes(b"")
  fake_media.truncate(fake_media.write_mp4(root / "solo/violin/cut.mp4"))
  fake_media.write_mp4(root / "solo/cello/short.mp4", seconds=2.0)
  return root


def examples_by_id(data_dir) -> dict:
  out = {}
  for split in ("train", "validation", "test"):
    for ex in tfds.data_source(NAME, split=split, data_dir=str(data_dir)):
      out[str(ex["video_id"], "utf-8")] = (split, ex)
  return out


def bad_files(build_dir) -> set:
  lines = (build_dir / "build_report.tsv").read_text().splitlines()
  return {line for line in lines if not line.startswith("#")}


def test_beam_build_equals_the_local_build(manual_dir, tmp_path):
  # Two worker processes: the decoding functions travel to workers as they would on a cluster.
  done = run_beam_build(manual_dir, tmp_path / "beam",
                        "--beam_options=--direct_num_workers=2 --direct_running_mode=multi_processing")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "3 files skipped" in done.stdout
  local = prepare.prepare_dataset(NAME, str(tmp_path / "local"), manual_dir=str(manual_dir),
                                  num_workers=1)
  beam = tfds.builder(NAME, data_dir=str(tmp_path / "beam"))
  # The same recordings in the same splits, clip for clip.
  assert (json.loads((beam.data_path / "splits.json").read_text())
          == json.loads((local.data_path / "splits.json").read_text()))
  beam_examples, local_examples = examples_by_id(tmp_path / "beam"), examples_by_id(tmp_path / "local")
  assert sorted(beam_examples) == sorted(local_examples) and len(beam_examples) == 6
  for video_id, (split, ex) in beam_examples.items():
    local_split, local_ex = local_examples[video_id]
    assert split == local_split
    np.testing.assert_array_equal(ex["audio"], local_ex["audio"])
    assert list(ex["frames"]) == list(local_ex["frames"])
    np.testing.assert_array_equal(ex["labels"], local_ex["labels"])
  # Every unusable file is reported, in the file and in the dataset's metadata.
  assert bad_files(beam.data_path) == bad_files(local.data_path)
  assert len(bad_files(beam.data_path)) == 3
  assert sorted(map(tuple, beam.info.metadata["bad_files"])) == sorted(
      map(tuple, local.info.metadata["bad_files"]))
  # The workers' interim report files do not stay in the build.
  assert not list(beam.data_path.glob("bad_files-*"))


def test_beam_build_caps_splits_and_stops_when_strict(manual_dir, tmp_path):
  done = run_beam_build(manual_dir, tmp_path / "capped", "--max_examples=1")
  assert done.returncode == 0, done.stderr[-3000:]
  capped = tfds.builder(NAME, data_dir=str(tmp_path / "capped"))
  assert {k: v.num_examples for k, v in capped.info.splits.items()} == {
      "train": 1, "validation": 1, "test": 1}

  done = run_beam_build(manual_dir, tmp_path / "strict", "--strict")
  assert done.returncode != 0
  assert "cut.mp4" in done.stderr or "empty.mp4" in done.stderr or "short.mp4" in done.stderr
  assert not tfds.builder(NAME, data_dir=str(tmp_path / "strict")).is_prepared()


def test_beam_build_of_only_unusable_files_fails_with_the_reasons(tmp_path):
  root = tmp_path / "manual"
  for i in range(3):
    fake_media.write_mp4(root / "solo/flute" / f"short{i}.mp4", seconds=2.0)
  done = run_beam_build(root, tmp_path / "data")
  assert done.returncode != 0
  assert "has no usable clip" in done.stderr and "shorter than the 5.94 s" in done.stderr
  assert not tfds.builder(NAME, data_dir=str(tmp_path / "data")).is_prepared()


def pins(path) -> dict[str, str]:
  out = {}
  for line in (ROOT / path).read_text().splitlines():
    line = line.split("#")[0].strip()
    if "==" in line:
      name, version = line.split("==")
      out[name.split("[")[0].lower().replace("_", "-")] = version
  return out


def test_beam_environments_pin_what_the_main_environment_pins():
  main, beam = pins("requirements.txt"), pins("requirements-beam.txt")
  assert set(beam) >= {"apache-beam", "protobuf", "pillow"}
  beam_env = {**main, **beam}
  dataflow = pins("launch/dataflow-requirements.txt")
  assert {"tensorflow-datasets", "array-record", "av", "gcsfs"} <= set(dataflow)
  for name, version in dataflow.items():
    if name in beam_env:
      assert version == beam_env[name], f"launch/dataflow-requirements.txt pins {name}=={version}"


def test_beam_is_refused_where_it_cannot_run(tmp_path):
  with pytest.raises(ValueError, match="builds without Beam"):
    prepare.prepare_dataset("synthetic_music/small", str(tmp_path), beam_runner="DirectRunner")
  try:
    import apache_beam  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    with pytest.raises(ValueError, match="--with-beam"):
      prepare.prepare_dataset(NAME, str(tmp_path), manual_dir=str(tmp_path),
                              beam_runner="DirectRunner")
  else:
    pytest.fail("apache-beam is importable in the main environment; requirements.txt "
                "should not pull it in (its pins conflict with Beam's)")
