"""Results go to `gs://` paths as well as local ones (an in-memory stand-in for Cloud Storage).

etils.epath reaches `gs://` through fsspec here; TensorFlow's GCS client (what
epath uses when TensorFlow is installed) is switched off for the test, and
fsspec's `gs`/`gcs` protocols are served from memory.
"""

import json

import numpy as np
import pytest
from flax import nnx
from fsspec.implementations import memory

from avsep_jax import data
from avsep_jax import evaluate
from avsep_jax import files
from avsep_jax import separate
from avsep_jax import train
from configs import crn
import fake_media


class FakeCloudStorage(memory.MemoryFileSystem):
  protocol = ("gs", "gcs")
  root_marker = ""
  store, pseudo_dirs = {}, [""]


@pytest.fixture
def cloud(monkeypatch):
  import fsspec  # pylint: disable=g-import-not-at-top
  from etils.epath import gpath  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  for name in ("gs", "gcs"):
    fsspec.register_implementation(name, FakeCloudStorage, clobber=True)
  FakeCloudStorage.store.clear()
  yield FakeCloudStorage.store
  FakeCloudStorage.store.clear()


def test_json_and_folders_are_written_whole_to_remote_and_local_paths(cloud, tmp_path):
  files.write_text_atomic("gs://bucket/a/b.json", '{"x": 1}')
  assert cloud["gs://bucket/a/b.json"].getvalue() == b'{"x": 1}'
  with files.staged_folder("gs://bucket/out") as staging:
    (staging / "sub").mkdir()
    (staging / "sub" / "f.txt").write_text("hello")
  assert cloud["gs://bucket/out/sub/f.txt"].getvalue() == b"hello"
  with pytest.raises(RuntimeError):
    with files.staged_folder("gs://bucket/failed") as staging:
      (staging / "f.txt").write_text("half")
      raise RuntimeError("interrupted")
  assert not any(k.startswith("gs://bucket/failed") for k in cloud)
  files.write_text_atomic(tmp_path / "c.json", "{}")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]   # no temporary left


def test_evaluation_and_separation_write_to_cloud_storage(cloud, tiny_data_dir, tmp_path,
                                                         monkeypatch):
  config = crn.get_config("tiny")
  config.dataset.data_dir = tiny_data_dir
  config.eval.num_mix, config.eval.per_combination = (2,), (1,)
  _, index = data.open_indexed_split(config.dataset.name, "test", tiny_data_dir)
  config.eval.class_subset = tuple(sorted(set(index.labels))[:3])
  config.eval.list_dir = "gs://bucket/lists"
  config.eval.report_samples = 1
  graphdef, state, _ = train.init_state(config)
  model, mesh = nnx.merge(graphdef, state).model, train.Mesh()
  evaluate.evaluate_and_report(config, "gs://bucket/run", model, mesh, step=0)
  result = json.loads(cloud["gs://bucket/run/eval/test_2mix.json"].getvalue())
  assert result["count"] == 3
  assert cloud["gs://bucket/run/eval/test_2mix.md"].getvalue().startswith(b"# test, 2-mix")
  page = cloud["gs://bucket/run/eval/report/index.html"].getvalue().decode()
  assert page.count("<audio") == 1 + 2 * (2 + config.model.refine_steps)  # truth + steps
  assert any(k.startswith("gs://bucket/lists/") for k in cloud)

  monkeypatch.setattr(evaluate, "load_checkpoint", lambda *args: (model, mesh, 0))
  video = fake_media.write_mp4(tmp_path / "duet.mp4", seconds=3.0)
  out = separate.separate_file(config, "gs://bucket/run", video, progress=False)
  assert str(out) == "gs://bucket/run/separated/duet.mp4"
  wav = cloud["gs://bucket/run/separated/duet.mp4/source1.wav"].getvalue()
  assert wav[:4] == b"RIFF" and "gs://bucket/run/separated/duet.mp4/report/index.html" in cloud
  assert np.isfinite(result["sdr"])
