"""Shared test set-up: persistent JAX compilation cache, warnings, fixtures."""

import fcntl
import os
import pathlib

import jax
import numpy as np
import pytest

_CACHE = pathlib.Path(os.environ.get(
    "AVSEP_JAX_TEST_CACHE", pathlib.Path(__file__).resolve().parent.parent / ".cache" / "jax"))
_CACHE.mkdir(parents=True, exist_ok=True)
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def rng():
  return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """`synthetic_music/tiny` built once per test run and shared; its TFDS data_dir.

  Under pytest-xdist every worker has its own base temp folder inside one
  folder of the run: the first worker to get there builds the data set under a
  file lock, the others wait and then find it prepared.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import data_builders  # pylint: disable=g-import-not-at-top,unused-import
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # shared by this run's workers
  data_dir = root / "tfds"
  with open(root / "tfds.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    builder = tfds.builder("synthetic_music/tiny", data_dir=str(data_dir), num_workers=1)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return str(data_dir)
