"""A workdir that cannot be written (full disk, read-only, not a folder): one clear
error naming the place and what to do, exit status 1, no pages of library retries."""

import os
import pathlib
import subprocess
import sys

import pytest

from avsep_jax import files

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _in_own_mount(mount_point, options: str, command: list[str]):
  """Runs `command` in a private mount namespace with a tmpfs of `options` at
  `mount_point` (user namespaces: no privileges needed, nothing mounted outside)."""
  mount_point.mkdir(exist_ok=True)
  unshare = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]
  mount = f"mount -t tmpfs -o {options} tmpfs '{mount_point}'"
  try:
    probe = subprocess.run(unshare + [mount], capture_output=True, text=True, timeout=60)
    problem = probe.stderr if probe.returncode else ""
  except FileNotFoundError as e:
    problem = str(e)
  if problem:  # CI must run these: there a missing capability is a failure
    message = f"cannot mount a tmpfs in a user namespace here: {problem[-500:]}"
    if os.environ.get("CI"):
      pytest.fail(message)
    pytest.skip(message)
  script = f"{mount} && exec " + " ".join(f"'{c}'" for c in command)
  return subprocess.run(unshare + [script], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)


def _train(workdir, data_dir, *extra):
  return [sys.executable, "-m", "avsep_jax.main", "--config=configs/crn.py:tiny",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
          "--config.eval.after_training=False", "--config.train.steps=4", *extra]


def _assert_one_clear_error(proc, *phrases):
  assert proc.returncode == 1, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, proc.stderr[-3000:]
  for phrase in phrases:
    assert phrase in errors[0], errors[0]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_full_disk_stops_before_writing_a_checkpoint_and_says_which_one_is_complete(
    tiny_data_dir, tmp_path):
  mount = tmp_path / "small_disk"
  # 1 MB: the config, the metrics and checkpoint 2 (about 0.55 MB) fit; checkpoint 4 does not.
  proc = _in_own_mount(mount, "size=1m", _train(mount / "run", tiny_data_dir,
                                                "--config.train.checkpoint_every=2",
                                                "--config.train.max_checkpoints=5"))
  _assert_one_clear_error(proc, "No space left on device: checkpoint step 4 needs about",
                          f"MB in '{mount / 'run'}', which has",
                          "The last complete checkpoint is step 2",
                          "run the same command again")
  assert "step 4/4" in proc.stdout


def test_read_only_or_impossible_workdir_fails_before_any_work(tiny_data_dir, tmp_path):
  mount = tmp_path / "read_only"
  proc = _in_own_mount(mount, "ro,size=1m", _train(mount / "run", tiny_data_dir))
  _assert_one_clear_error(proc, f"cannot write in '{mount / 'run'}'", "Read-only file system")
  assert "step 1/" not in proc.stdout

  not_a_folder = tmp_path / "a_file"
  not_a_folder.write_text("")
  proc = subprocess.run(_train(not_a_folder / "run", tiny_data_dir), cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  _assert_one_clear_error(proc, f"cannot write in '{not_a_folder / 'run'}'", "Not a directory")


def test_storage_errors_are_recognised_through_library_wrappers():
  tensorstore_style = ValueError(
      'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "/ckpt/1/": '
      'Failed writing: "/ckpt/1/d/93f8": Failed to write 28041 bytes to file 19: No space '
      "left on device [os_error_code='28']")
  assert files.storage_error(tensorstore_style) == "No space left on device: '/ckpt/1/d/93f8'"
  try:
    try:
      raise PermissionError(13, "Permission denied", "/ckpt/x")
    except OSError as e:
      raise RuntimeError("save failed") from e
  except RuntimeError as wrapped:
    assert files.storage_error(wrapped) == "Permission denied: '/ckpt/x'"
  assert files.storage_error(ValueError("shapes do not match")) is None
  assert files.storage_error(FileNotFoundError(2, "No such file", "/x")) is None
