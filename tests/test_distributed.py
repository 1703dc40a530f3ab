"""Several processes (`jax.distributed` on localhost) train and evaluate like one process.

Two processes with 2 CPU devices each run the main command; one process with
4 devices runs it with the same global batch. The parameters after training,
the checkpoint (restored here, in one process) and the evaluation agree.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import update_compare

from avsep_jax import data
from avsep_jax import evaluate
from avsep_jax import train
from configs import crn

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def command(data_dir, workdir, classes):
  subset = "(" + ",".join(map(str, classes)) + ",)"
  return [sys.executable, "-m", "avsep_jax.main", "--config=configs/crn.py:tiny",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
          "--config.train.steps=3", "--config.train.batch_size=4",
          "--config.train.checkpoint_every=3", "--config.eval.num_mix=(2,)",
          "--config.eval.per_combination=(1,)", f"--config.eval.class_subset={subset}",
          "--config.eval.report_samples=1"]


def environment(devices: int) -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def config_of(data_dir):
  config = crn.get_config("tiny")
  config.dataset.data_dir = data_dir
  config.train.batch_size = 4
  return config


def params(config, workdir):
  model, _, step = evaluate.load_checkpoint(config, workdir)
  return step, jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_two_processes_equal_one_process_with_the_same_global_batch(tiny_data_dir, tmp_path):
  _, index = data.open_indexed_split("synthetic_music/tiny", "test", tiny_data_dir)
  classes = sorted(set(index.labels))[:3]
  port = free_port()
  runs = [subprocess.Popen(
      command(tiny_data_dir, tmp_path / "two", classes)
      + [f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=ROOT, env=environment(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  one = subprocess.run(command(tiny_data_dir, tmp_path / "one", classes), cwd=ROOT,
                       env=environment(4), capture_output=True, text=True, timeout=900)
  outputs = [run.communicate(timeout=900) for run in runs]
  for run, (out, err) in zip(runs, outputs):
    assert run.returncode == 0, err[-3000:]
  assert one.returncode == 0, one.stderr[-3000:]
  assert "4 cpu device(s) in 2 process(es)" in outputs[0][0]
  assert "4 cpu device(s) in 1 process(es)" in one.stdout

  # The checkpoint of the two processes restores here, in one process, and equals the
  # one-process run's (the same mixtures, summed in another order).
  config = config_of(tiny_data_dir)
  (step_two, two), (step_one, reference) = params(config, tmp_path / "two"), params(
      config, tmp_path / "one")
  assert step_two == step_one == 3
  graphdef, state, _ = train.init_state(config)
  initial = jax.tree.leaves(nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, state).model,
                                                       nnx.Param)))
  assert any(not np.allclose(a, b) for a, b in zip(two, initial))   # it did train
  # Equal up to float32 rounding, which a few Adam steps of this net amplify in
  # places (see update_compare); a process's examples missed or counted twice
  # would move the parameters by the size of their update.
  total, worst, name = update_compare.update_differences(two, reference, initial)
  print(f"two processes against one: {total:.2e} of the update, {worst:.2e} in {name}")
  assert total < 3e-3 and worst < 0.15, (total, worst, name)

  # Evaluation: split across the processes, gathered, written once.
  scored = [json.loads((tmp_path / run / "eval" / "test_2mix.json").read_text())
            for run in ("two", "one")]
  assert scored[0]["count"] == scored[1]["count"] == 3     # 3 classes: 3 pairs
  for key in ("sdr", "sir", "sar", "sdr_mixture"):
    assert abs(scored[0][key] - scored[1][key]) < 1e-3
  assert (tmp_path / "two" / "eval" / "report" / "index.html").exists()


def test_sigterm_to_one_process_stops_both_at_one_step_and_both_resume(tiny_data_dir,
                                                                        tmp_path):
  """A preemption notice (SIGTERM) to one host: jax's preemption service picks a step,
  every process saves it and exits 143, and the same commands resume from it."""
  import signal  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  _, index = data.open_indexed_split("synthetic_music/tiny", "test", tiny_data_dir)
  classes = sorted(set(index.labels))[:3]

  def start(steps):
    port = free_port()
    return [subprocess.Popen(
        command(tiny_data_dir, tmp_path, classes)
        + [f"--config.train.steps={steps}", "--config.train.checkpoint_every=1000",
           "--config.eval.after_training=False", f"--coordinator_address=localhost:{port}",
           "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env=environment(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]

  runs = start(500)
  for line in runs[0].stdout:  # training has begun on both: step 3 is logged
    if line.startswith("step 3/500"):
      runs[1].send_signal(signal.SIGTERM)
      break
  outputs = [run.communicate(timeout=600) for run in runs]
  stopped = set()
  for run, (out, err) in zip(runs, outputs):
    assert run.returncode == 128 + signal.SIGTERM, err[-3000:]
    stopped.add(int(out.split("stopped by SIGTERM after step ")[1].split(";")[0]))
  assert len(stopped) == 1 and 3 <= min(stopped) < 500, stopped     # the same step on both
  step = stopped.pop()
  assert ocp.CheckpointManager(tmp_path / "checkpoints").latest_step() == step

  runs = start(step + 2)
  outputs = [run.communicate(timeout=600) for run in runs]
  for run, (out, err) in zip(runs, outputs):
    assert run.returncode == 0, err[-3000:]
  assert f"resuming from step {step}" in outputs[0][0]
  assert f"step {step + 2}/{step + 2}" in outputs[0][0]
