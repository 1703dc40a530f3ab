"""Command line: train or evaluate a system from its config.

  python -m avsep_jax.main --config=configs/crn.py --workdir=runs/crn  # train, test eval
  python -m avsep_jax.main --config=configs/crn.py --workdir=runs/crn --mode=eval  # latest
  python -m avsep_jax.main --config=configs/crn.py:full --config.train.steps=200 --workdir=...
  python -m avsep_jax.main --config=configs/crn.py --workdir=runs/crn --mode=separate \
      --input=duet.mp4 [--boxes="x1,y1,x2,y2;x1,y1,x2,y2"]   # or --input=mix.wav --images=a.jpg,b.jpg

Several processes (a Cloud TPU pod slice, GPU nodes) run the same command
with `--distributed` (cluster detected by `jax.distributed.initialize`) or
with `--coordinator_address=HOST:PORT --num_processes=P --process_id=I`;
see launch/README.md.

`--config` is an ml_collections config file (`file.py:arg` picks a size);
`--config.<field>=value` overrides one field, and a field the config does not
have is an error. Training resumes from `--workdir`'s latest checkpoint; SIGTERM (a preemption)
saves a checkpoint of the step in progress and exits with status 143.

Bad input, a bad config or a workdir that cannot be written ends with one
`error: ...` line naming the file or field and exit status 1 (see
docs/bad_input.md); `AVSEP_TRACEBACK=1` shows the traceback of a bad-input
error instead.
"""

from __future__ import annotations

import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from avsep_jax import evaluate
from avsep_jax import files
from avsep_jax import separate
from avsep_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and reports go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "separate"],
                          "train (then evaluate, per eval.after_training), eval, or separate "
                          "(--input with the checkpoint).")
_STEP = flags.DEFINE_integer("step", None, "--mode=eval/separate: checkpoint step (default: "
                             "latest).")
_INPUT = flags.DEFINE_string("input", None, "--mode=separate: a video (mp4, ...) or audio file "
                             "(wav, mp3, ...) to separate.")
_OUTPUT = flags.DEFINE_string("output", None, "--mode=separate: output folder (default: "
                              "<workdir>/separated/<input name>).")
_BOXES = flags.DEFINE_string("boxes", None, "--mode=separate, video: one box per source in the "
                             "video's pixels, 'x1,y1,x2,y2;x1,y1,x2,y2'.")
_DETECTIONS = flags.DEFINE_string("detections", None, "--mode=separate, video: a detector's "
                                  ".npy rows [frame_idx, class_id, score, x1, y1, x2, y2].")
_DETECTION_FPS = flags.DEFINE_float("detection_fps", 8.0, "--detections: the frame rate "
                                    "frame_idx counts at.")
_IMAGES = flags.DEFINE_list("images", [], "--mode=separate, audio input: a picture of each "
                            "instrument, comma-separated.")
_NUM_SOURCES = flags.DEFINE_integer("num_sources", 2, "--mode=separate, video without --boxes: "
                                    "sources to separate (equal strips, or best detections).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Several processes: call "
                                 "jax.distributed.initialize(), which finds the cluster on "
                                 "Cloud TPU and SLURM (or give the three flags below).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Several processes: "
                                   "HOST:PORT of process 0 (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Several processes: how many.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Several processes: this one's index.")
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed() -> None:
  """`jax.distributed.initialize` when asked for (before any other use of jax)."""
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if not _DISTRIBUTED.value and all(v is None for v in explicit):
    return
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    raise app.UsageError("give all of --coordinator_address, --num_processes and "
                         "--process_id, or none of them (with --distributed)")
  jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                             num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  initialize_distributed()
  # Compiled steps are cached across runs (the eval after training, resumed runs).
  jax.config.update("jax_compilation_cache_dir",
                    os.path.expanduser("~/.cache/avsep_jax/jax_compilation"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
  config = _CONFIG.value
  print(f"{config.model.name} on {config.dataset.name}: {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s) in {jax.process_count()} process(es), "
        f"workdir {_WORKDIR.value}", flush=True)
  try:
    run_mode(config)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:  # say what, no traceback
    if os.environ.get("AVSEP_TRACEBACK"):
      raise
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  except Exception as e:  # pylint: disable=broad-except (only storage errors are reworded)
    reason = e if isinstance(e, files.StorageError) else files.storage_error(e)
    if reason is None:
      raise
    print(f"error: {reason}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Checkpoint writer threads may still be failing on the same disk; their
    # teardown at interpreter exit would print pages of follow-on errors.
    os._exit(1)  # pylint: disable=protected-access


def run_mode(config):
  """Runs `--mode` on `config`."""
  if _MODE.value == "train":
    try:
      train.train_and_evaluate(config, _WORKDIR.value)
    except train.Preempted as e:  # SIGTERM: the checkpoint is saved; exit as terminated
      print(e, flush=True)
      sys.exit(128 + signal.SIGTERM)
  elif _MODE.value == "eval":
    evaluate.evaluate_checkpoint(config, _WORKDIR.value, _STEP.value)
  else:
    if not _INPUT.value:
      raise app.UsageError("--mode=separate needs --input=VIDEO_OR_AUDIO")
    out = separate.separate_file(
        config, _WORKDIR.value, _INPUT.value, output=_OUTPUT.value, boxes=_BOXES.value,
        detections=_DETECTIONS.value, images=_IMAGES.value, num_sources=_NUM_SOURCES.value,
        detection_fps=_DETECTION_FPS.value, step=_STEP.value)
    print(f"wrote {out}/source*.wav and {out}/report/index.html", flush=True)


if __name__ == "__main__":
  app.run(main)
