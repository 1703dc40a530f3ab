"""Command line: train or evaluate a system from its config.

  python -m avsep_jax.main --config=configs/crn.py --workdir=runs/crn  # train, test eval
  python -m avsep_jax.main --config=configs/crn.py --workdir=runs/crn --mode=eval  # latest
  python -m avsep_jax.main --config=configs/crn.py:full --config.train.steps=200 --workdir=...

`--config` is an ml_collections config file (`file.py:arg` picks a size);
`--config.<field>=value` overrides one field, and a field the config does not
have is an error. Training resumes from `--workdir`'s latest checkpoint.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from avsep_jax import evaluate
from avsep_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and reports go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train (then evaluate, per eval.after_training) or eval.")
_STEP = flags.DEFINE_integer("step", None, "--mode=eval: checkpoint step (default: latest).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  # Compiled steps are cached across runs (the eval after training, resumed runs).
  jax.config.update("jax_compilation_cache_dir",
                    os.path.expanduser("~/.cache/avsep_jax/jax_compilation"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
  config = _CONFIG.value
  print(f"{config.model.name} on {config.dataset.name}: {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), workdir {_WORKDIR.value}", flush=True)
  if _MODE.value == "train":
    train.train_and_evaluate(config, _WORKDIR.value)
  else:
    evaluate.evaluate_checkpoint(config, _WORKDIR.value, _STEP.value)


if __name__ == "__main__":
  app.run(main)
