"""Argument checks shared by the pure audio and metric functions.

Shape and rank checks work under `jax.jit` (shapes are static). Finiteness can
only be checked on concrete arrays: it is checked when a function is called
eagerly and skipped inside a trace, where a check would need a host sync.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_min_rank(name: str, x, min_ndim: int, what: str) -> None:
  """Raises ValueError unless `x` has at least `min_ndim` axes.

  Args:
    name: the argument's name, for the message.
    x: the array.
    min_ndim: smallest accepted rank.
    what: the expected layout, e.g. "[..., L] samples".
  """
  if jnp.ndim(x) < min_ndim:
    raise ValueError(
        f"{name} must have at least {min_ndim} axes ({what}); got shape "
        f"{tuple(jnp.shape(x))}")


def check_real_floating(name: str, x) -> None:
  """Raises ValueError unless `x` is a real floating-point array."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"{name} must be a real floating-point array; got dtype {dtype} with "
        f"shape {tuple(jnp.shape(x))}")


def is_traced(x) -> bool:
  """Whether `x` is an abstract value inside a JAX transformation."""
  return isinstance(x, jax.core.Tracer)


def check_finite(name: str, x) -> None:
  """Raises ValueError if a concrete `x` holds NaN or inf; no-op under a trace."""
  if is_traced(x):
    return
  if isinstance(x, jax.Array):  # reduce where the data is; fetch one flag
    if bool(jnp.isfinite(x).all()):
      return
  elif np.isfinite(x).all():
    return
  arr = np.asarray(x)
  finite = np.isfinite(arr)
  if not finite.all():
    bad = np.argwhere(~finite)
    raise ValueError(
        f"{name} (shape {arr.shape}) contains {int((~finite).sum())} non-finite "
        f"value(s), first at index {tuple(int(i) for i in bad[0])}")
