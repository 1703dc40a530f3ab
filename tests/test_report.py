"""The evaluation report: written by --mode=eval, rendered by a real headless browser."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from flax import nnx

from avsep_jax import data
from avsep_jax import evaluate
from avsep_jax import report
from avsep_jax import train
from configs import crn

pytestmark = pytest.mark.slow


def chromium():
  """The Debian chromium binary (`bash launch/setup.sh --tests` installs it)."""
  path = shutil.which("chromium") or shutil.which("chromium-browser")
  if path is None:
    message = "chromium is missing: run `bash launch/setup.sh --tests`"
    if os.environ.get("CI"):
      pytest.fail(message)  # CI installs it; never pass there by skipping
    pytest.skip(message)
  return path


def render(index, screenshot):
  """Loads the page headless: (DOM after load, screenshot written)."""
  flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
           "--window-size=1280,2000"]
  url = index.resolve().as_uri()
  subprocess.run([chromium(), *flags, f"--screenshot={screenshot}", url], check=True,
                 capture_output=True, timeout=120)
  dom = subprocess.run([chromium(), *flags, "--dump-dom", url], check=True,
                       capture_output=True, text=True, timeout=120).stdout
  return dom


def expected_media(samples):
  """(pictures, audio players) a page of `samples` must hold."""
  images = players = 0
  for sample in samples:
    images, players = images + 1, players + 1                  # the mixture
    for source in sample.sources:
      waves = len(source.estimates) + (source.reference is not None)
      images += waves + len(source.pictures)
      players += waves
  return images, players


def test_eval_writes_a_report_that_a_browser_renders(tiny_data_dir, tmp_path):
  config = crn.get_config("tiny")
  config.dataset.data_dir = tiny_data_dir
  config.eval.num_mix, config.eval.per_combination = (2, 3), (1, 1)
  config.eval.duet_split = "duet"
  config.eval.report_samples = 2
  _, index = data.open_indexed_split(config.dataset.name, "test", tiny_data_dir)
  config.eval.class_subset = tuple(sorted(set(index.labels))[:4])  # 6 pairs, 4 triples
  graphdef, state, _ = train.init_state(config)
  model = nnx.merge(graphdef, state).model
  mesh = train.Mesh()
  results = evaluate.evaluate_and_report(config, tmp_path, model, mesh, step=0)
  index = tmp_path / "eval" / "report" / "index.html"
  assert index.exists()

  # What the page must show, from the same samples the report was made of.
  samples = []
  for run in (dict(split="test", num_mix=2), dict(split="test", num_mix=3),
              dict(split="duet", num_mix=2, duets=True)):
    samples += evaluate.report_samples(config, model, mesh, count=2, **run)
  assert [len(s.sources) for s in samples] == [2, 2, 3, 3, 2, 2]
  steps = 1 + config.model.refine_steps
  assert all(len(v.estimates) == steps for s in samples for v in s.sources)
  images, players = expected_media(samples)

  dom = render(index, tmp_path / "shot.png")
  assert dom.count("<audio") == players
  loaded = re.search(r'data-images-loaded="(\d+)"', dom)
  assert loaded and int(loaded.group(1)) == images   # every picture found and decoded
  assert (tmp_path / "shot.png").stat().st_size > 10_000
  # The tables: overall, per step, per class, for each scored list.
  for name, result in results.items():
    split, num = name.split("_")
    assert f"{split}, {num[0]}-mix" in dom
    assert f"<td>{result['sdr']:.2f}</td>" in dom
  assert dom.count("step 0") >= len(results)


def test_spectrograms_of_a_sample_share_one_colour_scale(tmp_path):
  t = np.arange(16383) / 11025
  loud, quiet = np.sin(2 * np.pi * 440 * t) * 0.5, np.sin(2 * np.pi * 440 * t) * 0.005
  sample = report.SampleView("g", "s", loud + quiet, [
      report.SourceView("loud", [loud]), report.SourceView("quiet", [quiet])])
  index = report.write_report(tmp_path / "r", title="t", samples=[sample],
                              options=report.SpectrogramOptions(warp_bins=64))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  bright = {name: np.asarray(Image.open(index.parent / f"sample000_s{k}_step0.png"))[..., :3]
            .astype(int).sum() for k, name in enumerate(("loud", "quiet"))}
  assert bright["quiet"] < 0.8 * bright["loud"]   # 40 dB quieter shows darker, not rescaled
  # Writing again replaces the folder whole; no staging folders stay behind.
  report.write_report(tmp_path / "r", title="t2", samples=[sample],
                      options=report.SpectrogramOptions(warp_bins=64))
  assert "t2" in index.read_text()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_queries_show_the_crop_and_the_middle_frame_as_the_model_saw_them():
  from avsep_jax.data import mixtures  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  crops = rng.integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)
  frames = rng.integers(0, 256, (2, 3, 5, 6, 6, 3), dtype=np.uint8)
  batch = {"crops": mixtures.normalise_images(crops), "frames": mixtures.normalise_images(frames)}
  (c1, crop), (c2, frame) = evaluate.query_pictures(batch)(1, 2)
  assert (c1, c2) == ("object crop", "middle frame")
  np.testing.assert_array_equal(crop, crops[1, 2])
  np.testing.assert_array_equal(frame, frames[1, 2, 2])
  assert len(evaluate.query_pictures({"crops": batch["crops"]})(0, 0)) == 1
