"""The launchers print the commands they would run (DRY_RUN=1): every host, one job."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def dry_run(script, *args, **env):
  return subprocess.run(["bash", f"launch/{script}", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=60, check=False,
                        env=dict(os.environ, DRY_RUN="1", **env))


TPU = dict(TPU_NAME="avsep", ZONE="us-central2-b", ACCELERATOR="v4-32", BUCKET="gs://b")


def test_tpu_training_runs_the_main_command_on_every_host():
  done = dry_run("tpu_vm.sh", "train", "configs/crn.py:full", "runs/crn", "--config.train.steps=5",
                 **TPU)
  assert done.returncode == 0, done.stderr
  line = done.stdout.strip()
  assert line.startswith("+ gcloud compute tpus tpu-vm ssh avsep --zone=us-central2-b")
  for part in ("--worker=all", "--distributed", "--mode=train", "--config=configs/crn.py:full",
               "--workdir=gs://b/runs/crn", "--config.dataset.data_dir=gs://b/tensorflow_datasets",
               "--config.train.steps=5"):
    assert part in line.replace("\\", ""), part


def test_tpu_setup_installs_the_tpu_build_of_the_pinned_jax():
  done = dry_run("tpu_vm.sh", "setup", REPO="https://example.org/avsep_jax.git", **TPU)
  assert done.returncode == 0, done.stderr
  pinned = next(line.split("==")[1] for line in (ROOT / "requirements.txt").read_text().split()
                if line.startswith("jaxlib=="))
  text = done.stdout.replace("\\", "")
  assert "--worker=all" in text and f"jax[tpu]=={pinned}" in text
  assert "bash launch/setup.sh" in text


@pytest.mark.parametrize("missing", ["TPU_NAME", "ZONE", "ACCELERATOR"])
def test_tpu_create_names_a_missing_setting(missing):
  env = {k: v for k, v in TPU.items() if k != missing}
  done = subprocess.run(["bash", "launch/tpu_vm.sh", "create"], cwd=ROOT, capture_output=True,
                        text=True, timeout=60, check=False,
                        env={**{k: v for k, v in os.environ.items() if k not in TPU},
                             "DRY_RUN": "1", **env})
  assert done.returncode == 2 and f"set {missing}" in done.stderr


def test_ssh_launcher_starts_one_process_per_host_with_one_coordinator(tmp_path):
  done = dry_run("ssh_nodes.sh", "configs/crn.py:full", "/shared/runs/crn", "--config.x=1",
                 HOSTS="gpu1 gpu2 gpu3", LOG_DIR=str(tmp_path))
  assert done.returncode == 0, done.stderr
  lines = done.stdout.strip().splitlines()
  assert len(lines) == 3
  for i, (line, host) in enumerate(zip(lines, ("gpu1", "gpu2", "gpu3"))):
    text = line.replace("\\", "")
    assert text.startswith(f"+ ssh {host} ")
    for part in ("--coordinator_address=gpu1:12355", "--num_processes=3", f"--process_id={i}",
                 "--workdir=/shared/runs/crn", "--config.x=1"):
      assert part in text, part
