"""Public names and the front-end demo, run as the README's first command runs it."""

import json
import subprocess
import sys

import numpy as np
import pytest

import avsep_jax


def test_public_api_names():
  assert callable(avsep_jax.audio.stft) and callable(avsep_jax.audio.istft)
  assert callable(avsep_jax.metrics.bss_eval_sources)
  spec = avsep_jax.audio.stft(np.zeros(65535, np.float32), n_fft=1022, hop_length=256)
  assert spec.shape == (512, 256)
  wave = avsep_jax.audio.istft(spec, n_fft=1022, hop_length=256, length=65535)
  assert wave.shape == (65535,)


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, tiny_data_dir):
  out = tmp_path / "demo"
  proc = subprocess.run(
      [sys.executable, "-m", "avsep_jax.demo", f"--out={out}", "--dataset=synthetic_music/tiny",
       f"--data_dir={tiny_data_dir}", "--per_combination=1,1", "--length=22050"],
      capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  assert set(results) == {"2mix_ratio", "2mix_binary", "3mix_ratio", "3mix_binary"}
  combinations = {2: 13 * 12 // 2, 3: 13 * 12 * 11 // 6}
  for name, row in results.items():
    # Oracle masks must separate: far above the unprocessed mixture.
    assert row["sdri"] > 8.0, (name, row)
    assert row["count"] + row["skipped"] == combinations[int(name[0])]
    assert row["count"] > 0.8 * combinations[int(name[0])]
  for name in ("2mix_mixture.wav", "2mix_estimate1.wav", "3mix_estimate2.wav",
               "2mix_spectrograms.png", "synthetic_music-tiny_test_2mix_len22050_per1_seed0.json",
               "synthetic_music-tiny_test_3mix_len22050_per1_seed0.json"):
    assert (out / name).stat().st_size > 1000


def test_bss_eval_benchmark_tiles_the_set_and_scores_references_on_a_subset(tmp_path):
  """benchmarks/bss_eval.py at toy sizes: every row, the tiled count, mir_eval on
  the subset, and agreement measured on that subset."""
  import pathlib
  root = pathlib.Path(__file__).resolve().parent.parent
  out = tmp_path / "bss.json"
  proc = subprocess.run(
      [sys.executable, "benchmarks/bss_eval.py", "--num_mixtures=3", "--length=4096",
       "--tile=2", "--reference_mixtures=2", "--repeats=1", f"--out={out}",
       "--fast_bss_eval_python=/nonexistent"],
      cwd=root, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads(out.read_text())
  rows = {r["name"]: r for r in record["rows"]}
  assert set(rows) == {"ours_float64", "ours_float32", "mir_eval"}   # CPU: no device rows
  assert rows["ours_float64"]["mixtures"] == 6 and rows["mir_eval"]["mixtures"] == 2
  assert record["tile"] == 2 and record["distinct_mixtures"] == 3
  assert rows["ours_float64"]["max_abs_delta_db"]["sdr"] < 1e-6
  assert rows["ours_float64"]["speedup_vs_mir_eval"] > 1
  assert "not run" in record["fast_bss_eval"]
  assert record["passes_per_turn"] == 2     # steady-state pass timed, the first reported apart
  assert all(r["ms_per_mixture_first_pass_of_turn"] > 0 for r in rows.values())
