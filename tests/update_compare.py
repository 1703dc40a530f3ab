"""Comparing two training updates whose float32 rounding differs (tests only)."""

from __future__ import annotations

import jax
import numpy as np


def update_differences(state, reference, start):
  """How far `state` lies from `reference`, relative to how far `reference` moved.

  Both states were reached from `start`. A training step of these small nets is
  chaotic at float32 rounding: a last-bit difference can move a few gradient
  entries by percent of their size (a ReLU flipping, say), so equal
  computations in two layouts are not equal elementwise. A wrong computation
  (a gradient that misses or double-counts examples) differs by the size of the
  update itself. These norms tell the two apart.

  Args:
    state, reference, start: pytrees of arrays with the same structure; leaves
      that are not floating point (step counters, keys) are left out.

  Returns:
    (total, worst_leaf, worst_name): `|state - reference| / |reference - start|`
    over all floating-point leaves at once, and the largest per-leaf value with
    the leaf's key path.
  """
  num = den = 0.0
  worst, worst_name = 0.0, ""
  named = jax.tree_util.tree_leaves_with_path(reference)
  for (path, b), a, w in zip(named, jax.tree.leaves(state), jax.tree.leaves(start)):
    if not jax.numpy.issubdtype(w.dtype, jax.numpy.floating):
      continue
    a, b, w = (np.asarray(x, np.float64) for x in (a, b, w))
    diff, moved = float(np.sum((a - b) ** 2)), float(np.sum((w - b) ** 2))
    num, den = num + diff, den + moved
    ratio = (diff / moved) ** 0.5 if moved > 0 else 0.0
    if ratio > worst:
      worst, worst_name = ratio, jax.tree_util.keystr(path)
  return (num / den) ** 0.5 if den > 0 else float("inf"), worst, worst_name
