"""The training loop, checkpoints/resume, evaluation and the command line (tiny data)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import update_compare

from avsep_jax import data
from avsep_jax import evaluate
from avsep_jax import models
from avsep_jax import train
from configs import coseparation
from configs import crn
from configs import mtsc
from configs import sop
from configs import sop_binary

ROOT = pathlib.Path(__file__).resolve().parent.parent
SYSTEMS = {"sop": sop, "coseparation": coseparation, "crn": crn, "mtsc": mtsc,
           "sop_binary": sop_binary}


def tiny_config(data_dir, system=crn, **train_fields):
  config = system.get_config("tiny")
  config.dataset.data_dir = data_dir
  config.eval.after_training = False
  config.eval.num_mix = (2,)
  config.eval.per_combination = (1,)
  config.train.log_every = 1
  config.train.update(train_fields)
  return config


def synthetic_batch(config, batch_size, seed=0):
  rng = np.random.default_rng(seed)
  n, d = config.dataset.num_mix, config.dataset
  batch = {"sources": rng.uniform(-0.5, 0.5, (batch_size, n, d.segment_length)).astype(np.float32),
           "crops": rng.normal(size=(batch_size, n, d.crop_size, d.crop_size, 3)).astype(np.float32),
           "labels": rng.integers(0, d.num_classes, (batch_size, n)).astype(np.int32),
           "source_mask": np.ones((batch_size, n), bool)}
  if d.class_companions:
    batch["companions"] = rng.uniform(-0.5, 0.5, batch["sources"].shape).astype(np.float32)
  num_frames = data.frame_count(d.segment_length, d.num_frames, d.frame_rate)
  if num_frames:
    batch["frames"] = rng.normal(size=(batch_size, n, num_frames, d.frame_size, d.frame_size,
                                       3)).astype(np.float32)
  return batch


def module_changed(before, after, name):
  """Whether any parameter of top-level module `name` differs between two train states."""
  return any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before["model"][name]),
                                                      jax.tree.leaves(after["model"][name])))


def run_steps(config, batch, steps, devices=None):
  """`steps` train steps on one batch; returns (losses, state)."""
  mesh = train.Mesh(devices)
  graphdef, state, schedules = train.init_state(config)
  state = jax.device_put(state, mesh.replicated)
  key = jax.random.key(config.seed)
  step = jax.jit(train.make_train_step(graphdef, config, schedules["default"]),
                 in_shardings=(mesh.replicated, mesh.batch, mesh.replicated),
                 out_shardings=(mesh.replicated, mesh.replicated), donate_argnums=0)
  losses = []
  for _ in range(steps):
    state, metrics = step(state, mesh.put_batch(batch), key)
    losses.append(float(metrics["loss"]))
  return losses, state


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_overfits_one_batch(name, tiny_data_dir):
  config = tiny_config(tiny_data_dir, SYSTEMS[name], learning_rate=3e-3)
  batch = next(train.train_iterator(config))
  losses, _ = run_steps(config, batch, 40)
  assert np.isfinite(losses).all()
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


SHARDED_SCRIPT = """
import jax, numpy as np, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]  # the repository; the tests' helpers
import importlib.util
spec = importlib.util.spec_from_file_location("test_train", sys.argv[1] + "/tests/test_train.py")
t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t)
from configs import crn
assert jax.device_count() == 8, jax.devices()
config = crn.get_config("tiny")
# SGD: Adam's first steps are sign-like, so reduction-order noise in tiny
# gradients would move weights by +-lr and hide what the test is about.
config.train.optimizer, config.train.learning_rate = "sgd", 0.05
batch = t.synthetic_batch(config, 8)
one, state1 = t.run_steps(config, batch, 3, devices=jax.devices()[:1])
eight, state8 = t.run_steps(config, batch, 3)
np.testing.assert_allclose(eight, one, rtol=2e-5)
for a, b in zip(jax.tree.leaves(state8), jax.tree.leaves(state1)):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
print("losses", one, eight)
"""


def test_sharded_step_on_8_devices_equals_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, str(ROOT)], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "losses" in proc.stdout


def test_resume_reproduces_the_uninterrupted_run(tiny_data_dir, tmp_path):
  config = tiny_config(tiny_data_dir, steps=4, checkpoint_every=2)
  straight = train.train_and_evaluate(config, tmp_path / "straight")["train"]
  first = tiny_config(tiny_data_dir, steps=2, checkpoint_every=2)
  train.train_and_evaluate(first, tmp_path / "resumed")
  resumed = train.train_and_evaluate(config, tmp_path / "resumed")["train"]
  assert [s for s, _ in resumed] == [3, 4]
  for (_, a), (_, b) in zip(straight[2:], resumed):
    assert a["loss"] == b["loss"]  # exactly: same state, same batches, same RNG
  # A finished run is not trained further.
  assert train.train_and_evaluate(config, tmp_path / "resumed")["train"] == []

  # Evaluating the checkpoint writes the report.
  result = evaluate.evaluate_checkpoint(config, tmp_path / "straight")
  report = json.loads((tmp_path / "straight" / "eval" / "test_2mix.json").read_text())
  assert report == json.loads(json.dumps(result["test_2mix"]))
  for key in ("sdr", "sir", "sar", "sdr_mixture", "sdri", "count", "skipped",
              "silent_estimates", "per_class", "per_step"):
    assert key in report
  assert report["checkpoint_step"] == 4
  assert report["count"] + report["skipped"] == 78  # C(13, 2) pairs x 1
  assert len(report["per_step"]) == 1 + config.model.refine_steps
  assert np.isfinite(report["sdr"]) and np.isfinite(report["sdri"])
  assert (tmp_path / "straight" / "eval" / "test_2mix.md").read_text().startswith("# test, 2-mix")
  with pytest.raises(FileNotFoundError, match="no checkpoint at step 3"):
    evaluate.evaluate_checkpoint(config, tmp_path / "straight", step=3)


def test_non_finite_loss_stops_without_a_nan_checkpoint(tiny_data_dir, tmp_path):
  config = tiny_config(tiny_data_dir, steps=3, checkpoint_every=1, learning_rate=float("inf"))
  with pytest.raises(FloatingPointError,
                     match="non-finite loss, gradients or parameters at step 1"):
    train.train_and_evaluate(config, tmp_path)
  assert not list((tmp_path / "checkpoints").glob("[0-9]*"))


def _poison_batches(monkeypatch, steps, value=float("nan")):
  """Training batches number `steps` (1-based, counted from this call) get `value` audio."""
  put_batch, count = train.Mesh.put_batch, [0]

  def poisoned(self, batch):
    count[0] += 1
    if count[0] in steps:
      batch = dict(batch, sources=np.full_like(batch["sources"], value))
    return put_batch(self, batch)

  monkeypatch.setattr(train.Mesh, "put_batch", poisoned)


def test_a_non_finite_step_returns_its_input_state_unchanged():
  config = crn.get_config("tiny")
  graphdef, state, schedules = train.init_state(config)
  step = jax.jit(train.make_train_step(graphdef, config, schedules["default"]))
  batch = synthetic_batch(config, 2)
  before = [np.asarray(x).copy() for x in jax.tree.leaves(state)]
  new, metrics = step(state, dict(batch, sources=np.full_like(batch["sources"], np.nan)),
                      jax.random.key(0))
  assert not bool(metrics["finite"])
  for a, b in zip(before, jax.tree.leaves(new), strict=True):
    np.testing.assert_array_equal(a, np.asarray(b))  # optimiser moments and step count too
  new, metrics = step(new, batch, jax.random.key(0))
  assert bool(metrics["finite"]) and int(new["optimizer"]["step"][...]) == 1


def _checkpoint_leaves(workdir, step):
  from orbax import checkpoint as ocp
  restored = ocp.StandardCheckpointer().restore(
      (workdir / "checkpoints" / str(step) / "state").resolve())
  return jax.tree.leaves(restored)


def test_nan_batch_stops_at_its_step_and_no_checkpoint_holds_it(tiny_data_dir, tmp_path,
                                                                monkeypatch):
  _poison_batches(monkeypatch, {3})
  config = tiny_config(tiny_data_dir, steps=4, checkpoint_every=1)
  with pytest.raises(FloatingPointError, match=r"non-finite .* at step 3 .*the last "
                                               r"checkpoint \(2\)"):
    train.train_and_evaluate(config, tmp_path)
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").glob("[0-9]*"))
  assert steps == [1, 2]
  assert all(np.isfinite(np.asarray(x)).all() for x in _checkpoint_leaves(tmp_path, 2))


def test_skip_mode_drops_non_finite_steps_and_keeps_going(tiny_data_dir, tmp_path, monkeypatch,
                                                          capsys):
  _poison_batches(monkeypatch, {2, 3}, value=float("inf"))
  config = tiny_config(tiny_data_dir, steps=4, checkpoint_every=2, on_non_finite="skip")
  history = train.train_and_evaluate(config, tmp_path)["train"]
  out = capsys.readouterr().out
  assert "non-finite loss, gradients or parameters at step(s) 2" in out
  assert [s for s, _ in history] == [1, 4]          # steps 2 and 3 had nothing finite to log
  assert history[-1][1]["skipped_steps"] == 2
  assert all(np.isfinite(v) for _, m in history for v in m.values())
  assert all(np.isfinite(np.asarray(x)).all() for x in _checkpoint_leaves(tmp_path, 4))

  _poison_batches(monkeypatch, {2, 3})
  config = tiny_config(tiny_data_dir, steps=4, on_non_finite="skip", max_skipped_steps=1)
  with pytest.raises(FloatingPointError, match=r"2 steps .* the last at step 3: more than "
                                               r"train.max_skipped_steps=1"):
    train.train_and_evaluate(config, tmp_path / "limit")
  config.train.on_non_finite = "drop"
  with pytest.raises(ValueError, match="train.on_non_finite='drop': expected 'stop' or 'skip'"):
    train.train_and_evaluate(config, tmp_path / "bad")


def test_both_metric_backends_agree():
  rng = np.random.default_rng(0)
  ref = rng.normal(size=(2, 2, 4000))
  ref[1, 0] = 0.0  # silent reference: NaN row (skipped by the evaluation)
  est = ref + 0.3 * rng.normal(size=ref.shape)
  ours = evaluate._bss_eval(ref, est, "jax")
  theirs = evaluate._bss_eval(ref, est, "mir_eval")
  np.testing.assert_allclose(np.stack(ours)[:, 0], np.stack(theirs)[:, 0], atol=0.01)
  assert np.isnan(ours[0][1]).any() and np.isnan(theirs[0][1]).all()


def _main(*args, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", "avsep_jax.main", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def test_command_line_rejects_unknown_config_keys(tmp_path):
  proc = _main("--config=configs/crn.py:tiny", "--config.train.stepz=3", f"--workdir={tmp_path}")
  assert proc.returncode != 0
  assert "stepz" in proc.stderr
  proc = _main("--config=configs/crn.py:huge", f"--workdir={tmp_path}")
  assert proc.returncode != 0 and "expected one of ('cpu', 'full', 'tiny')" in proc.stderr
  proc = _main("--config=configs/crn.py:tiny", "--config.train.steps=abc", f"--workdir={tmp_path}")
  assert proc.returncode != 0
  assert "--config.train.steps=abc: invalid literal for int()" in proc.stderr
  assert not list(tmp_path.iterdir())                                  # nothing written


def test_a_checkpoint_of_another_model_is_refused_by_name(tiny_data_dir, tmp_path):
  crn_config = tiny_config(tiny_data_dir, steps=1)
  train.train_and_evaluate(crn_config, tmp_path)
  sop_config = tiny_config(tiny_data_dir, sop, steps=2)
  message = (r"checkpoint 1 in .*checkpoints does not fit this config \(model.name='sop'\): "
             r".*arrays .*its workdir's config.json trained model.name='crn'")
  with pytest.raises(ValueError, match=message):
    evaluate.load_checkpoint(sop_config, tmp_path)
  with pytest.raises(ValueError, match=message):                     # nor resumed
    train.train_and_evaluate(sop_config, tmp_path)
  wider = tiny_config(tiny_data_dir, steps=2)
  wider.model.unet.ngf *= 2
  with pytest.raises(ValueError, match=r"differ in shape .*trained the same model with other "
                                       r"settings"):
    evaluate.load_checkpoint(wider, tmp_path)
  proc = _main("--config=configs/sop.py:tiny", f"--config.dataset.data_dir={tiny_data_dir}",
               f"--workdir={tmp_path}", "--mode=eval")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.count("error: checkpoint 1 in") == 1


def test_module_learning_rates_and_schedule():
  config = crn.get_config("tiny")
  config.train.module_learning_rates = {"visual": 0.0}
  config.train.warmup_steps, config.train.decay_steps = 2, (4,)
  batch = synthetic_batch(config, 2)
  graphdef, before, _ = train.init_state(config)
  _, after = run_steps(config, batch, 2)
  assert not module_changed(before, after, "visual")
  assert module_changed(before, after, "unet") and module_changed(before, after, "refine")
  schedule = train.learning_rate_schedule(1.0, config.train)
  np.testing.assert_allclose([schedule(s) for s in (0, 1, 2, 3, 4, 5)],
                             [0, 0.5, 1, 1, 0.1, 0.1], atol=1e-7)
  config.train.module_learning_rates = {"visuals": 1e-3}
  with pytest.raises(ValueError, match=r"names \['visuals'\].*'visual'"):
    train.init_state(config)


def test_update_intervals_skip_steps_and_module_optimizers_override():
  """`update_every=3` moves the net on steps 0 and 3 only; a module with `every=1` each step."""
  config = crn.get_config("tiny")
  config.train.update_every = 3
  config.train.module_optimizers = {"visual": dict(every=1, b1=0.0)}
  batch = synthetic_batch(config, 2)
  states = [run_steps(config, batch, k)[1] for k in range(5)]
  states[0] = train.init_state(config)[1]
  moved = lambda name: [module_changed(a, b, name) for a, b in zip(states, states[1:])]
  assert moved("unet") == [True, False, False, True]
  assert moved("visual") == [True] * 4
  config.train.module_optimizers = {"visual": dict(every=1, beta=0.5)}
  with pytest.raises(ValueError, match=r"module_optimizers.visual has unknown keys \['beta'\]"):
    train.init_state(config)
  config.train.module_optimizers = {"critic": dict(every=1)}
  with pytest.raises(ValueError, match=r"module_optimizers names \['critic'\]"):
    train.init_state(config)


def test_trains_on_mixed_source_counts(tiny_data_dir):
  """2- and 3-source mixtures in one batch (padded sources masked out everywhere)."""
  config = tiny_config(tiny_data_dir, learning_rate=3e-3)
  config.dataset.num_mix, config.dataset.min_mix = 3, 2
  batch = next(train.train_iterator(config))
  assert set(batch["source_mask"].sum(1)) == {2, 3}
  losses, _ = run_steps(config, batch, 20)
  assert np.isfinite(losses).all() and np.mean(losses[-3:]) < np.mean(losses[:3])
  config.dataset.min_mix = 4
  with pytest.raises(ValueError, match="dataset.min_mix=4"):
    train.validate_config(config)


def test_fixed_composition_step_equals_the_padded_step(tiny_data_dir):
  """Each source count's rows run unpadded; loss, metrics and update match the padded batch."""
  # SGD at rate 1: the one update is minus the gradient, so the states compare gradients.
  config = tiny_config(tiny_data_dir, optimizer="sgd", b1=0.0, batch_size=4, learning_rate=1.0)
  config.dataset.num_mix, config.dataset.min_mix = 3, 2
  config.dataset.fixed_composition = True
  train.validate_config(config)
  batch = next(train.train_iterator(config))
  np.testing.assert_array_equal(batch["source_mask"].sum(1), [2, 2, 3, 3])
  assert [(c, list(r)) for c, r in train.source_count_groups(config)] == [(2, [0, 1]), (3, [2, 3])]
  (grouped, *_), grouped_state = run_steps(config, batch, 1)
  config.dataset.fixed_composition = False
  (padded, *_), padded_state = run_steps(config, batch, 1)
  np.testing.assert_allclose(grouped, padded, rtol=1e-5)
  # The states differ by the gradients. A step of this net is chaotic at float32
  # rounding (sources scaled by 1 + 2e-7 move the padded step's update by 2e-4 of
  # its norm, up to 2.5e-3 in a leaf); the two layouts round differently and
  # measured 5.9e-4 overall, 3e-2 in the worst leaf (a norm's scale). One
  # example's sources scaled by 0.9 measured 6e-3; a source dropped, 0.4.
  _, initial, _ = train.init_state(config)
  total, worst, name = update_compare.update_differences(grouped_state, padded_state, initial)
  assert total < 3e-3 and worst < 0.15, (total, worst, name)
  config.dataset.fixed_composition, config.dataset.min_mix = True, 0
  with pytest.raises(ValueError, match="fixed_composition needs dataset.min_mix"):
    train.validate_config(config)
  config.dataset.min_mix, config.train.batch_size = 1, 2
  with pytest.raises(ValueError, match="batch of 2 cannot hold every source count in"):
    train.validate_config(config)


def test_alignment_loss_is_the_feature_mse_over_valid_sources():
  from avsep_jax import losses
  rng = np.random.default_rng(0)
  real, fake = rng.normal(size=(2, 2, 3, 5)).astype(np.float32)
  valid = np.array([[True, True, True], [True, False, False]])
  outputs = {"mask_logits": np.zeros((1, 2, 3, 4, 6), np.float32),
             "alignment_features": np.stack([real, fake])}
  features = {"target": np.full((2, 3, 4, 6), 0.5, np.float32),
              "weight": np.ones((2, 4, 6), np.float32)}
  batch = {"labels": np.zeros((2, 3), np.int32), "source_mask": valid}
  total, metrics = losses.mask_loss(outputs, features, batch, mask="ratio", step_weights=(1.0,),
                                    alignment_weight=100.0)
  expected = np.mean(np.square(real - fake), -1)[valid].mean()
  np.testing.assert_allclose(metrics["alignment_loss"], expected, rtol=1e-6)
  np.testing.assert_allclose(total, 100 * expected, rtol=1e-6)  # mask term: |sigmoid(0) - 0.5| = 0


@pytest.mark.parametrize("weighted", [True, False])
def test_mask_loss_weights_bins_only_when_weighted(weighted):
  from avsep_jax import losses  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(1, 2, 2, 4, 6)).astype(np.float32)
  target = rng.uniform(size=(2, 2, 4, 6)).astype(np.float32)
  weight = rng.uniform(0.1, 3.0, size=(2, 4, 6)).astype(np.float32)
  batch = {"labels": np.zeros((2, 2), np.int32), "source_mask": np.ones((2, 2), bool)}
  total, _ = losses.mask_loss({"mask_logits": logits}, {"target": target, "weight": weight},
                              batch, mask="ratio", step_weights=(1.0,), weighted=weighted)
  per_bin = np.abs(1 / (1 + np.exp(-logits[0])) - target)
  expected = (per_bin * weight[:, None]).mean() if weighted else per_bin.mean()
  np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_alignment_loss_trains_the_head_and_needs_it():
  config = crn.get_config("tiny")
  config.train.loss.alignment_weight = 100.0
  train.validate_config(config)
  batch = synthetic_batch(config, 2)
  graphdef, before, _ = train.init_state(config)
  losses, after = run_steps(config, batch, 2)
  assert np.isfinite(losses).all()
  for name in ("align", "refine", "classifier"):
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before["model"][name]),
                                                       jax.tree.leaves(after["model"][name])))
  config.model.alignment = None
  with pytest.raises(ValueError, match="alignment_weight=100.0 needs model.alignment"):
    train.validate_config(config)
  config = crn.get_config("tiny")
  config.model.alignment.input_rows = 128
  with pytest.raises(ValueError, match="input_rows=128 must be audio.warp_bins=64"):
    train.validate_config(config)


def test_window_starts_cover_the_clip_and_end_at_its_end():
  assert evaluate.window_starts(110250, 65535, 65535) == [0, 44715]
  assert evaluate.window_starts(200000, 65535, 65535) == [0, 65535, 131070, 134465]
  assert evaluate.window_starts(65535, 65535, 100) == [0]
  assert evaluate.window_starts(1000, 65535, 10) == [0]  # shorter than one window
  assert evaluate.window_starts(10, 4, 3) == [0, 3, 6]
  with pytest.raises(ValueError, match="window_hop=0"):
    evaluate.window_starts(10, 4, 0)


def test_sliding_windows_put_back_together_give_the_full_clips(tiny_data_dir):
  """Overlap-averaging the windows' own sources rebuilds the full sources exactly."""
  from avsep_jax import data
  config = tiny_config(tiny_data_dir)
  source, index = data.open_indexed_split(config.dataset.name, "test", tiny_data_dir)
  specs = data.pipeline.eval_mixture_specs(index, 2, 16383, seed=0, per_combination=1)[:3]
  options = data.MixOptions(num_mix=2, segment_length=16383, crop_size=32, num_frames=0)
  for spec, (windows, starts, full) in zip(
      specs, evaluate._sliding_batches(source, index, specs, options, hop=6000)):
    length = min(index.lengths[i] for i in spec.indices)
    assert full["sources"].shape == (1, 2, length) and length > 16383
    assert starts[-1] == length - 16383 and all(b - a == 6000 for a, b in zip(starts, starts[1:-1]))
    rebuilt = evaluate._overlap_average(windows["sources"][None], starts, length)
    np.testing.assert_array_equal(rebuilt, full["sources"][None])
  config.eval.window = "whole"
  with pytest.raises(ValueError, match="eval.window='whole'"):
    train.validate_config(config)


def test_sliding_window_evaluation_scores_full_clips(tiny_data_dir, tmp_path):
  config = tiny_config(tiny_data_dir, steps=1)
  config.eval.window, config.eval.window_hop = "sliding", 8000
  train.validate_config(config)
  graphdef, state, _ = train.init_state(config)
  model = nnx.merge(graphdef, state).model
  result = evaluate.score_split(config, model, train.Mesh(), split="test", num_mix=2,
                                per_combination=1)
  assert result["count"] + result["skipped"] == 78
  assert np.isfinite(result["sdr"]) and np.isfinite(result["sdr_mixture"])
  assert len(result["per_step"]) == 1 + config.model.refine_steps


def test_curriculum_stages_freeze_exactly_the_named_modules():
  """Stage 0 freezes the visual net, stage 1 (from step 2) the U-Net; visual ramps up."""
  config = crn.get_config("tiny")
  config.train.stages = (dict(start=0, frozen=("visual",)),
                         dict(start=2, frozen=("unet",), warmup=4))
  batch = synthetic_batch(config, 2)
  _, before = train.init_state(config)[:2]
  _, after_stage0 = run_steps(config, batch, 2)
  _, after_stage1 = run_steps(config, batch, 4)
  assert not module_changed(before, after_stage0, "visual")
  assert module_changed(before, after_stage0, "unet")
  assert module_changed(before, after_stage0, "refine")
  assert not module_changed(after_stage0, after_stage1, "unet")
  assert module_changed(after_stage0, after_stage1, "visual")  # step 3 (not 2: ramp starts at 0)
  _, schedules = train.make_optimizer(
      nnx.merge(*train.init_state(config)[:2]).model, config.train)
  rates = lambda g: [float(schedules[g](s)) for s in range(7)]
  np.testing.assert_allclose(rates("visual"), [0, 0, 0, 2.5e-4, 5e-4, 7.5e-4, 1e-3], rtol=1e-6)
  np.testing.assert_allclose(rates("unet"), [1e-3, 1e-3, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(rates("default"), [1e-3] * 7)


@pytest.mark.parametrize("stages, message", [
    ((dict(start=1),), "the first must be 0"),
    ((dict(start=0), dict(start=0)), "the rest increasing"),
    ((dict(start=0, frozen="visual"),), "expected a tuple of module names"),
    ((dict(start=0, freeze=("visual",)),), r"unknown: \['freeze'\]"),
    ((dict(start=0, frozen=("visuals",)),), r"freeze \['visuals'\], which the model does not"),
])
def test_bad_curriculum_stages_are_named(stages, message):
  config = crn.get_config("tiny")
  config.train.stages = stages
  with pytest.raises(ValueError, match=message):
    train.init_state(config)


@pytest.mark.parametrize("system, first_frozen", [
    (mtsc, {(0, "motion"), (1, "appearance")}),
    (sop_binary, {(0, "unet"), (1, "unet")}),     # the visual-net-only pretraining stage
])
def test_configured_curriculum_freezes_each_stage_s_modules_step_by_step(system, first_frozen):
  """Every step, a module is unchanged exactly when its scheduled rate is 0."""
  config = system.get_config("tiny,pretrain" if system is sop_binary else "tiny")
  batch = synthetic_batch(config, 2)
  graphdef, state, schedules = train.init_state(config)
  step = jax.jit(train.make_train_step(graphdef, config, schedules["default"]))
  key = jax.random.key(0)
  modules = tuple(state["model"].keys())
  frozen_seen = set()
  for i in range(config.train.steps):
    new_state, _ = step(state, batch, key)
    for name in modules:
      rate = float(schedules.get(name, schedules["default"])(i))
      same = not module_changed(state, new_state, name)
      assert same == (rate == 0.0), (i, name, rate)
      if same:
        frozen_seen.add((i, name))
    state = new_state
  assert first_frozen <= frozen_seen, frozen_seen
  frozen_modules = {n for _, n in frozen_seen}
  assert frozen_modules == {n for s in config.train.stages for n in s["frozen"]}


def test_duet_evaluation_scores_each_duet_against_its_own_sources(tiny_data_dir):
  config = tiny_config(tiny_data_dir, sop_binary, steps=1)
  config.eval.duet_split = "duet"
  graphdef, state, _ = train.init_state(config)
  model = nnx.merge(graphdef, state).model
  result = evaluate.score_split(config, model, train.Mesh(), split="duet", num_mix=2, duets=True)
  assert result["split"] == "duet" and result["count"] + result["skipped"] == 2
  assert np.isfinite(result["sdr_mixture"])
  assert sum(r["count"] for r in result["per_class"].values()) == 2 * result["count"]


def test_binary_masks_threshold_and_the_argmax_rule():
  masks = np.array([[0.9, 0.8, 0.95], [0.7, 0.2, 0.97], [0.2, 0.1, 0.6]])  # [N=3, bins]
  masks = masks[None, None, :, :, None]                                     # [1, 1, 3, 3, 1]
  binary = lambda valid, argmax: np.asarray(evaluate.binary_masks(
      masks, np.array([valid]), 0.65, argmax=argmax))[0, 0, :, :, 0]
  np.testing.assert_array_equal(binary([True] * 3, False), [[1, 1, 1], [1, 0, 1], [0, 0, 0]])
  np.testing.assert_array_equal(binary([True] * 3, True), [[1, 1, 0], [0, 0, 1], [0, 0, 0]])
  # A padded source never wins a bin.
  np.testing.assert_array_equal(binary([False, True, True], True),
                                [[0, 0, 0], [1, 0, 1], [0, 0, 0]])


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_crop_dropout_blanks_the_training_crops(dropout):
  config = coseparation.get_config("tiny")
  config.train.crop_dropout = dropout
  batch = synthetic_batch(config, 2)
  other = dict(batch, crops=batch["crops"][::-1] * 2.0)
  graphdef, state, schedules = train.init_state(config)
  step = jax.jit(train.make_train_step(graphdef, config, schedules["default"]))
  loss = lambda b: float(step(state, b, jax.random.key(0))[1]["loss"])
  # All crops blanked: the crops cannot matter; none blanked: they do.
  assert (loss(batch) == loss(other)) == (dropout == 1.0)


def test_source_equalizer_draws_a_new_timbre_per_step():
  config = sop.get_config("tiny")
  batch = synthetic_batch(config, 2)

  def losses_for(eq_db):
    config.train.source_eq_db = eq_db
    graphdef, state, schedules = train.init_state(config)
    step = jax.jit(train.make_train_step(graphdef, config, schedules["default"]))
    return [float(step(state, batch, jax.random.key(k))[1]["loss"]) for k in (0, 1)]

  plain, equalised = losses_for(0.0), losses_for(12.0)
  assert plain[0] == plain[1]               # nothing else in SoP's step is random
  assert equalised[0] != equalised[1] and plain[0] not in equalised


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes_from_it(tiny_data_dir, tmp_path):
  """A preemption (SIGTERM) mid-run: the step reached is saved, exit 143, then resumption."""
  import signal  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  command = [sys.executable, "-m", "avsep_jax.main", "--config=configs/crn.py:tiny",
             f"--workdir={tmp_path}", f"--config.dataset.data_dir={tiny_data_dir}",
             "--config.eval.after_training=False", "--config.train.checkpoint_every=1000"]
  run = subprocess.Popen(command + ["--config.train.steps=500"], cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  for line in run.stdout:  # training has begun: step 3 is logged
    if line.startswith("step 3/500"):
      run.send_signal(signal.SIGTERM)
      break
  out, err = run.communicate(timeout=300)
  assert run.returncode == 128 + signal.SIGTERM, err[-3000:]
  stopped = int(out.split("stopped by SIGTERM after step ")[1].split(";")[0])
  assert 3 <= stopped < 500
  manager = ocp.CheckpointManager(tmp_path / "checkpoints")
  assert manager.latest_step() == stopped          # not a multiple of checkpoint_every
  done = subprocess.run(command + [f"--config.train.steps={stopped + 2}"], cwd=ROOT, text=True,
                        capture_output=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"resuming from step {stopped}" in done.stdout
  assert f"step {stopped + 2}/{stopped + 2}" in done.stdout


_KILL_DURING_SAVE = """
import os, signal, sys
from grain._src.python.checkpoint import handler
kill_step = sys.argv[1]
original = handler.CheckpointHandler.save

def save(self, directory, *args, **kwargs):  # the iterator's part is written, the rest is not
  original(self, directory, *args, **kwargs)
  if any(p == kill_step or p.startswith(kill_step + ".") for p in str(directory).split(os.sep)):
    os.kill(os.getpid(), signal.SIGKILL)

handler.CheckpointHandler.save = save
sys.argv = ["avsep_jax.main"] + sys.argv[2:]
from absl import app
from avsep_jax import main
app.run(main.main)
"""


def test_kill_9_in_a_save_and_at_a_random_step_then_rerun_is_bit_identical(tiny_data_dir,
                                                                             tmp_path):
  """SIGKILL while checkpoint 4 is half-written, then at a random later step; each rerun
  of the same command resumes from the last complete checkpoint, and the final
  parameters equal an uninterrupted run's bit for bit."""
  import random  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  steps = 12
  flags = ["--config=configs/crn.py:tiny", f"--config.dataset.data_dir={tiny_data_dir}",
           "--config.eval.after_training=False", "--config.train.checkpoint_every=2",
           f"--config.train.steps={steps}"]
  main = [sys.executable, "-m", "avsep_jax.main"]
  # The uninterrupted run, in this process: the same config as the flags give.
  train.train_and_evaluate(tiny_config(tiny_data_dir, steps=steps, checkpoint_every=2,
                                       log_every=50), tmp_path / "straight")

  killed = tmp_path / "killed"
  flags.append(f"--workdir={killed}")
  in_save = subprocess.run([sys.executable, "-c", _KILL_DURING_SAVE, "4"] + flags, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
  assert in_save.returncode == -signal.SIGKILL, in_save.stderr[-3000:]
  assert "step 4/12" in in_save.stdout
  entries = sorted(p.name for p in (killed / "checkpoints").iterdir())
  assert any(e.startswith("4") and e != "4" for e in entries), entries   # the half-written one
  assert ocp.CheckpointManager(killed / "checkpoints").latest_step() == 2

  kill_at = random.Random().randint(5, steps - 1)
  run = subprocess.Popen(main + flags, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
  lines = []
  for line in run.stdout:
    lines.append(line)
    if line.startswith(f"step {kill_at}/"):
      run.kill()
      break
  run.communicate(timeout=300)
  assert "resuming from step 2" in "".join(lines), (kill_at, lines)
  assert run.returncode == -signal.SIGKILL, (kill_at, lines)

  done = subprocess.run(main + flags, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, (kill_at, done.stderr[-3000:])
  assert f"step {steps}/{steps}" in done.stdout, kill_at
  ours, theirs = (_checkpoint_leaves(workdir, steps) for workdir in (killed, tmp_path / "straight"))
  for a, b in zip(ours, theirs, strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"killed at {kill_at}")


def test_bfloat16_compute_runs_convs_in_bfloat16_keeps_float32_parameters_and_trains():
  """model.compute_dtype='bfloat16': every conv and linear computes in bfloat16,
  parameters (and the optimiser) stay float32, the loss is float32 and close
  to the float32 model's, and steps lower it."""
  from avsep_jax.models import layers
  config = crn.get_config("tiny")
  batch = synthetic_batch(config, 4)
  config.model.compute_dtype = "bfloat16"
  model = models.build_model(config.model, rngs=nnx.Rngs(0))
  converted = [n for _, n in nnx.iter_graph(model) if isinstance(n, layers._COMPUTE_DTYPE_LAYERS)]
  assert converted and all(n.dtype == jnp.bfloat16 for n in converted)
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype("float32")}
  low, state = run_steps(config, batch, 6)
  assert {x.dtype for x in jax.tree.leaves(state["model"])} <= {
      jnp.dtype("float32"), jnp.dtype("int32"), jnp.dtype("uint32")}
  config.model.compute_dtype = "float32"
  full, _ = run_steps(config, batch, 1)
  assert abs(low[0] - full[0]) < 0.05 * abs(full[0])   # same model, bfloat16 rounding only
  assert low[0] != full[0]                               # ... which is there
  assert low[-1] < low[0]
  config.model.compute_dtype = "float16"
  with pytest.raises(ValueError, match="model.compute_dtype='float16'"):
    train.init_state(config)
