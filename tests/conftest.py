"""Shared test set-up: persistent JAX compilation cache, warnings, fixtures."""

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
