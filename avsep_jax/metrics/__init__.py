"""Separation metrics: BSS-eval v3 SDR/SIR/SAR in JAX (batched, jit, on device)."""

from avsep_jax.metrics.bss_eval import bss_eval_sources
from avsep_jax.metrics.bss_eval import is_silent
from avsep_jax.metrics.bss_eval import lagged_correlations
from avsep_jax.metrics.bss_eval import SILENCE_THRESHOLD
from avsep_jax.metrics.bss_eval import block_toeplitz_quadratic_form

__all__ = ["SILENCE_THRESHOLD", "bss_eval_sources", "is_silent", "lagged_correlations",
           "block_toeplitz_quadratic_form"]
