"""Data: dataset preparation (and, next, the grain mix-and-separate pipelines)."""

from avsep_jax.data.prepare import prepare_dataset
