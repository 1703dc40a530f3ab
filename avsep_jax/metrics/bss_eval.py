"""BSS-eval v3 source metrics (SDR, SIR, SAR) in JAX, batched and jit-compiled.

Same definitions as `mir_eval.separation.bss_eval_sources(reference, estimate,
compute_permutation=False)` (mir_eval 0.8.2), which follows BSS Eval v3 with a
time-invariant distortion filter of `filter_length` taps (512):

  P_j   orthogonal projection onto the delays 0..F-1 of reference j,
  P_all orthogonal projection onto the delays 0..F-1 of all references,
  SDR_j = 10 log10(|P_j e|^2 / |e - P_j e|^2)
  SIR_j = 10 log10(|P_j e|^2 / |P_all e - P_j e|^2)
  SAR_j = 10 log10(|P_all e|^2 / |e - P_all e|^2)

for the estimate e of source j (signals zero-padded by F-1 samples, as mir_eval
does). Because the projections are orthogonal, each energy is a quadratic form
`d^T G^{-1} d` of the references' Gram matrix G (lagged auto/cross-correlations)
and the correlations d between the estimate and the delayed references, so no
filtered signal is ever formed:

  |P e|^2 = d^T G^{-1} d,   |e - P e|^2 = |e|^2 - |P e|^2,
  |P_all e - P_j e|^2 = |P_all e|^2 - |P_j e|^2.

How it is computed, per mixture:
1. Correlations at lags 0..F-1 by block FFTs: the signals are cut into F-sample
   blocks, each block is transformed with a 2F-point real FFT, and the
   cross-spectra are accumulated over blocks (overlap-save), so the cost is one
   pass of small FFTs per signal (references and estimates transformed once)
   instead of one 2^17-point FFT per pair.
2. G is block Toeplitz (N x N blocks of lag matrices R(k)), so `d^T G^{-1} d` is
   accumulated by the block Schur algorithm in O(N^3 F^2) instead of
   O((N F)^3) for a dense factorisation: at N=2, F=512 about 4e6 multiply-adds
   against 3.6e8 for a dense Cholesky of the 1024 x 1024 Gram matrix. Each of
   its F - 1 sequential steps is a few elementwise passes (no inner products),
   and each order adds the innovation of its backward predictor, so no
   solution vector is formed (see `block_toeplitz_quadratic_form`; float32
   uses the Levinson form that grows the solution, which keeps more digits).
3. The single-source projections P_j use the same recursion with scalar blocks.

Mixtures are processed a group at a time (one compiled kernel per group of
`group_size`), so every batch of at least `group_size` mixtures reuses one
compilation (a smaller batch gets a kernel of its own size; by default the
CPU group size, 4 to 6, depends on the batch size, see `_default_group_size`). Inside a group the
correlations run one mixture after another (their FFT working set stays in
cache) and the recursions run on the whole group at once (each of their 511
sequential steps has a fixed cost that the group shares). On the CPU backend,
groups are dispatched from one host thread per core, since each kernel runs
mostly on a single core.

Silent references: mir_eval raises. Here a reference with sum |x| <= the
silence threshold (1e-5, the evaluation protocol's) is excluded from the
projections (its delays span nothing) and its row of SDR/SIR/SAR is NaN: NaN is
the flag the evaluation counts as skipped. A silent estimate yields -inf SDR,
SIR and SAR (it recovers no target energy); the evaluation's own rule scores it.
Where a ratio's denominator is zero (a perfect estimate) the value is +inf, as
mir_eval's `_safe_db` gives. References whose delays are linearly dependent
(e.g. the same clip twice in one mixture) make G singular; mir_eval then falls
back to least squares, while this recursion returns non-finite values.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np

from avsep_jax import validation

SILENCE_THRESHOLD = 1e-5


def is_silent(signals, threshold: float = SILENCE_THRESHOLD):
  """The evaluation protocol's silence rule: `sum |x| <= threshold` over samples.

  Args:
    signals: `[..., L]` waveforms.
    threshold: the protocol's 1e-5 by default.

  Returns:
    bool `[...]`: True where the signal is silent. Rows with a silent reference
    are the NaN rows of `bss_eval_sources` (counted as skipped); silent
    estimates are scored by the evaluation's own rule.
  """
  return jnp.sum(jnp.abs(jnp.asarray(signals)), axis=-1) <= threshold


# Blocks per correlation loop step; group lengths are padded to a multiple of
# this many filter lengths, so a group's blocks split into whole steps.
_CHUNK_BLOCKS = 16


def _correlations(parts, num_y: int, num_lags: int, chunk_blocks: int = _CHUNK_BLOCKS):
  """Lags 0..F-1 of every signal against each of the first `num_y` -> `[S, num_y, F]`.

  `parts` are `[S_i, L]` arrays whose rows, in order, are the S signals; they
  stay apart (each loop step gathers its window from all of them), so no
  joined copy of the signals is made. `r[i, j, k] = sum_n s[i, n + k] * s[j, n]`.

  The signals are cut into F-sample blocks; each block gets one 2F-point real
  FFT, and the cross-spectra are accumulated over blocks (overlap-save). The
  2F-point spectrum of blocks b and b+1 back to back is X_b + (-1)^k X_{b+1},
  and that window covers every x[bF + m + k] with m, k < F, so there is no
  wrap-around. Blocks are transformed `chunk_blocks` at a time (plus the next
  one, for the window) inside the accumulation loop, so the spectra never
  exist all at once: the working set stays in cache.
  """
  f = num_lags
  length = parts[0].shape[-1]
  num_blocks = -(-length // f)
  chunk = min(chunk_blocks, num_blocks)
  num_chunks = -(-num_blocks // chunk)
  last = num_chunks * chunk - 1
  # A no-op when L is a multiple of chunk * F, as in the group kernels.
  blocks = [jnp.pad(x, ((0, 0), (0, (last + 1) * f - length))).reshape(x.shape[0], -1, f)
            for x in parts]                                          # [S_i, blocks, F]
  sign = jnp.where(jnp.arange(f + 1) % 2 == 0, 1.0, -1.0).astype(jnp.result_type(*parts))

  def window(c):
    """Blocks c * chunk ... c * chunk + chunk of every signal, `[S, chunk + 1, F]`
    (the one past the last block is zero)."""
    start = c * chunk
    ahead = jnp.minimum(start + chunk, last)
    return jnp.concatenate([
        jnp.concatenate([jax.lax.dynamic_slice_in_dim(x, start, chunk, 1) for x in blocks]),
        jnp.where(c + 1 < num_chunks,
                  jnp.concatenate([jax.lax.dynamic_slice_in_dim(x, ahead, 1, 1) for x in blocks]),
                  0.0)], 1)

  def accumulate(acc, c):
    spectra = jnp.fft.rfft(window(c), n=2 * f, axis=-1)             # [S, chunk + 1, F + 1]
    re, im = acc
    for b in range(chunk):  # x2 * conj(y) in real arithmetic: fuses into one loop on CPU
      x2 = spectra[:, b] + sign * spectra[:, b + 1]
      xr, xi = x2.real[:, None], x2.imag[:, None]
      yr, yi = spectra[:num_y, b].real[None], spectra[:num_y, b].imag[None]
      re, im = re + (xr * yr + xi * yi), im + (xi * yr - xr * yi)
    return (re, im), None

  zero = jnp.zeros((sum(x.shape[0] for x in parts), num_y, f + 1), sign.dtype)
  (re, im), _ = jax.lax.scan(accumulate, (zero, zero), jnp.arange(num_chunks))
  return jnp.fft.irfft(jax.lax.complex(re, im), n=2 * f, axis=-1)[..., :f]


def lagged_correlations(x, y, num_lags: int):
  """Linear cross-correlations at lags 0..num_lags-1 for all pairs.

  Computed from F-sample blocks with 2F-point FFTs, accumulating cross-spectra
  over blocks (overlap-save): one pass of small FFTs per signal.

  Args:
    x: `[I, L]` signals.
    y: `[J, L]` signals.
    num_lags: F, the number of non-negative lags.

  Returns:
    `[I, J, F]` with `r[i, j, k] = sum_n x[i, n + k] * y[j, n]` (zero outside [0, L)).
  """
  num_y = y.shape[0]
  return _correlations((y, x), num_y, num_lags)[num_y:]


def _inv_small(a):
  """Inverse of `[..., n, n]`; closed form for n = 2 (called a few times per recursion step)."""
  n = a.shape[-1]
  if n == 2:
    p, q, r, s = a[..., 0, 0], a[..., 0, 1], a[..., 1, 0], a[..., 1, 1]
    adj = jnp.stack([jnp.stack([s, -q], -1), jnp.stack([-r, p], -1)], -2)
    return adj / (p * s - q * r)[..., None, None]
  return jnp.linalg.inv(a)


def _mm(a, b):
  """a @ b for tiny matrices as broadcast multiply-adds (fuses with neighbours on CPU)."""
  return sum(a[..., :, j, None] * b[..., None, j, :] for j in range(a.shape[-1]))


def _chunk_bounds(first: int, last: int, num_chunks: int) -> list[int]:
  """Recursion orders first..last split into `num_chunks` scans: their boundaries."""
  return [int(b) for b in np.unique(np.linspace(first, last, num_chunks + 1).round())]


def _scalar_form_by_solution(lags, rhs, num_chunks: int):
  """`_block_form_by_solution` for N = 1: lags `[F]`, rhs `[K, F]` -> `[K, K]`.

  With 1 x 1 blocks the matrix products degenerate to dot products.
  """
  f = lags.shape[-1]
  dtype = lags.dtype
  rev = jnp.pad(lags[::-1], (0, f))  # rev[m] = r(F-1-m), zeros after
  rhs_rows = jnp.pad(rhs, ((0, 0), (0, 1)))
  lags_rows = jnp.pad(lags, (0, 1))  # against [0; bwd]: r(c) at delay c
  r0 = lags[0]
  bounds = _chunk_bounds(1, f, num_chunks)
  size = bounds[1] + 1 if len(bounds) > 1 else 2
  fwd = jnp.zeros((size,), dtype).at[0].set(1.0 / r0)
  bwd = jnp.zeros((size,), dtype).at[1].set(1.0 / r0)  # shifted by one delay
  sol = jnp.zeros((rhs.shape[0], size), dtype).at[:, 0].set(rhs[:, 0] / r0)
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    rows = hi + 1
    fwd, bwd = jnp.pad(fwd, (0, rows - fwd.shape[0])), jnp.pad(bwd, (0, rows - bwd.shape[0]))
    sol = jnp.pad(sol, ((0, 0), (0, rows - sol.shape[1])))

    def step(carry, order, rows=rows, rhs_rows=rhs_rows[:, :rows], ahead=lags_rows[:rows]):
      fwd, bwd, sol = carry
      back = jax.lax.dynamic_slice_in_dim(rev, f - 1 - order, rows)  # r(order - b)
      # Equal in exact arithmetic (G is symmetric); computed apart, each
      # predictor's update matches its own rounding.
      err_f = jnp.dot(back, fwd)
      err_b = jnp.dot(ahead, bwd)
      shrink = 1.0 - err_f * err_b
      new_fwd = (fwd - bwd * err_f) / shrink
      new_bwd = (bwd - fwd * err_b) / shrink
      delta = jax.lax.dynamic_index_in_dim(rhs_rows, order, 1, keepdims=False) - sol @ back
      sol = sol + delta[:, None] * new_bwd[None]
      return (new_fwd, jnp.roll(new_bwd, 1), sol), None

    (fwd, bwd, sol), _ = jax.lax.scan(step, (fwd, bwd, sol), jnp.arange(lo, hi))
  return rhs @ sol[:, :f].T


def _block_form_by_solution(lags, rhs, num_chunks: int):
  """`block_toeplitz_quadratic_form` from the grown solution x of G x = d (N >= 2).

  Each step is two small matrix products over the state `[forward | backward
  shifted by one block | solution]` (delay-major, `[order + 1, N, 2N + K]`): one
  gives every inner product the step needs, the other applies the whole update
  as one `(2N + K)^2` matrix.
  """
  n, _, f = lags.shape
  k = rhs.shape[1]
  dtype = lags.dtype
  width = 2 * n + k
  # Row-major [i, delay, j] layouts: a slice over delays reshapes to [N, delays * N].
  lag_rows_all = jnp.pad(jnp.transpose(lags, (0, 2, 1)), ((0, 0), (0, 1), (0, 0)))
  # rev[i, m, j] = R(F-1-m)^T[i, j], zeros after: the window from F-1-order holds
  # R(order - b)^T at delay b (zero for b >= order).
  rev = jnp.pad(jnp.transpose(lags, (1, 2, 0))[:, ::-1], ((0, 0), (0, f), (0, 0)))
  rhs_by_delay = jnp.transpose(rhs, (2, 0, 1))                     # [F, N, K]
  eye = jnp.eye(n, dtype=dtype)
  r0_inv = _inv_small(lags[..., 0])
  bounds = _chunk_bounds(1, f, num_chunks)
  state = jnp.zeros((bounds[1] + 1 if len(bounds) > 1 else 2, n, width), dtype)
  state = state.at[0, :, :n].set(r0_inv).at[1, :, n:2 * n].set(r0_inv)  # [fwd | [0; bwd]]
  state = state.at[0, :, 2 * n:].set(r0_inv @ rhs_by_delay[0])

  for lo, hi in zip(bounds[:-1], bounds[1:]):
    rows = hi + 1  # delays 0..hi: the shifted backward predictor reaches delay `order`
    state = jnp.pad(state, ((0, rows - state.shape[0]), (0, 0), (0, 0)))
    lag_rows = lag_rows_all[:, :rows].reshape(n, rows * n)

    def step(state, order, rows=rows, lag_rows=lag_rows):
      back = jax.lax.dynamic_slice_in_dim(rev, f - 1 - order, rows, axis=1)
      inner = jnp.concatenate([back.reshape(n, rows * n), lag_rows], 0) @ state.reshape(
          rows * n, width)                                         # [2N, 2N + K]
      err_f = inner[:n, :n]          # new block row of G times the forward predictor
      err_b = inner[n:, n:2 * n]     # first block row times [0; backward]
      gain_f = _inv_small(eye - err_b @ err_f)
      gain_b = _inv_small(eye - err_f @ err_b)
      delta = (jax.lax.dynamic_index_in_dim(rhs_by_delay, order, 0, keepdims=False)
               - inner[:n, 2 * n:])  # d block minus the new row times the solution
      gain_b_delta = gain_b @ delta
      # [fwd, [0; bwd], sol] @ update = [new fwd, new bwd, new sol]
      update = jnp.block([
          [gain_f, -err_b @ gain_b, -err_b @ gain_b_delta],
          [-err_f @ gain_f, gain_b, gain_b_delta],
          [jnp.zeros((k, 2 * n), dtype), jnp.eye(k, dtype=dtype)]])
      new = (state.reshape(rows * n, width) @ update).reshape(rows, n, width)
      new_bwd = jnp.roll(new[:, :, n:2 * n], 1, axis=0)  # shift for the next order
      return jnp.concatenate([new[:, :, :n], new_bwd, new[:, :, 2 * n:]], -1), None

    state, _ = jax.lax.scan(step, state, jnp.arange(lo, hi))
  sol = jnp.transpose(state[:f, :, 2 * n:], (1, 2, 0))              # like rhs, [N, K, F]
  return jnp.sum(rhs[:, :, None] * sol[:, None], (0, 3))


def _next_order(x):
  """`x[..., m + 1]` at `m`, zero past the end: the next order's alignment."""
  return jnp.pad(x[..., 1:], [(0, 0)] * (x.ndim - 1) + [(0, 1)])


def _apply_small(m, x):
  """`sum_c m[a, c] x[c, ...]`: a tiny `[n, n]` matrix on the leading axis of x,
  as broadcast multiply-adds (they fuse into the elementwise pass on CPU)."""
  return sum(m[:, c].reshape((-1,) + (1,) * (x.ndim - 1)) * x[c][None]
             for c in range(m.shape[1]))


def _block_form_by_schur(lags, rhs, num_chunks: int, unroll: int):
  """`block_toeplitz_quadratic_form` by the block Schur algorithm (N >= 2).

  No predictor is formed and no inner product taken: the recursion carries
  what the Levinson form would compute from the predictors by inner products,
  as sequences, and updates them elementwise.

  With monic forward and backward predictors A_k, B_k of order k (block
  columns, G_{k+1} A_k = [V_f; 0 ...], G_{k+1} B_k = [... 0; V_b]):
  - `phi[b, a, m] = Phi_k(k + m)[a, b]` and `psi` likewise, where
    `Phi_k(j) = sum_i R(i - j) A_k(i)` is block row j of G times A_k (zero for
    j = 1..k) and `Psi_k(j)` the same for B_k; at order 0 both are R(m)^T.
    The next reflection is read at m = 1: `Delta = Phi_k(k + 1)`.
  - `ca[b, :, m] = sum_i A_k(i)^T d(i + m)`, `cb` likewise for B_k: the
    right-hand sides' correlations with the predictors; at order 0 both are d.
    `cb[..., 0] = B_k^T d` is order k's innovation.
  Order k -> k + 1, with `alpha = -V_b^-1 Delta`, `beta = -V_f^-1 Delta^T`:
    A' = [A; 0] + [0; B] alpha,  B' = [0; B] + [A; 0] beta,
  so `phi' = next(phi) + alpha^T psi`, `psi' = psi + beta^T next(phi)`,
  `ca' = ca + alpha^T next(cb)`, `cb' = next(cb) + beta^T ca`, where next()
  realigns to delay k + 1. G^{-1} = sum_k [B_k; 0] V_b,k^{-1} [B_k; 0]^T
  gives the form as the sum of `(B_k^T d)^T V_b,k^{-1} (B_k^T d)`.

  Each step is four elementwise passes over sequences whose useful length
  shrinks from F to 1 (the scans cut them at their chunk's start): about a
  third of the multiply-adds of `_block_form_by_solution` and none of its thin
  matrix products, which XLA:CPU runs far below the elementwise passes' speed.
  """
  f = lags.shape[-1]
  v_f = v_b = lags[..., 0].T
  form = rhs[:, :, 0].T @ _inv_small(v_b) @ rhs[:, :, 0]
  carry = (lags, lags, rhs, rhs, v_f, v_b, form)
  bounds = _chunk_bounds(0, f - 1, num_chunks)  # step k: order k -> k + 1
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    # From order `lo` on, only delays m < F - lo of every sequence are ever read.
    carry = tuple(x[..., :f - lo] if x.ndim == 3 else x for x in carry)

    def step(carry, _):
      phi, psi, ca, cb, v_f, v_b, form = carry
      delta = phi[:, :, 1].T
      alpha = -_mm(_inv_small(v_b), delta)
      beta = -_mm(_inv_small(v_f), delta.T)
      phi_next, cb_next = _next_order(phi), _next_order(cb)
      phi, psi = phi_next + _apply_small(alpha.T, psi), psi + _apply_small(beta.T, phi_next)
      ca, cb = ca + _apply_small(alpha.T, cb_next), cb_next + _apply_small(beta.T, ca)
      v_f, v_b = v_f + _mm(delta.T, alpha), v_b + _mm(delta, beta)
      innovation = cb[:, :, 0]                                       # [N, K]
      form = form + _mm(_mm(innovation.T, _inv_small(v_b)), innovation)
      return (phi, psi, ca, cb, v_f, v_b, form), None

    carry, _ = jax.lax.scan(step, carry, None, length=hi - lo, unroll=unroll)
  return carry[-1]


def _scalar_form_by_schur(lags, rhs, num_chunks: int, unroll: int):
  """`_block_form_by_schur` for N = 1: lags `[F]`, rhs `[K, F]` -> `[K, K]`.

  A symmetric Toeplitz matrix has one reflection per order (alpha = beta) and
  equal forward and backward error powers.
  """
  f = lags.shape[-1]
  power = lags[0]
  carry = (lags, lags, rhs, rhs, power, jnp.outer(rhs[:, 0], rhs[:, 0]) / power)
  bounds = _chunk_bounds(0, f - 1, num_chunks)  # step k: order k -> k + 1
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    carry = tuple(x[..., :f - lo] for x in carry[:4]) + carry[4:]

    def step(carry, _):
      phi, psi, ca, cb, power, form = carry
      gamma = -phi[1] / power
      phi_next, cb_next = _next_order(phi), _next_order(cb)
      phi, psi = phi_next + gamma * psi, psi + gamma * phi_next
      ca, cb = ca + gamma * cb_next, cb_next + gamma * ca
      power = power * (1.0 - gamma * gamma)
      return (phi, psi, ca, cb, power, form + jnp.outer(cb[:, 0], cb[:, 0]) / power), None

    carry, _ = jax.lax.scan(step, carry, None, length=hi - lo, unroll=unroll)
  return carry[-1]


METHODS = ("schur", "levinson")


def block_toeplitz_quadratic_form(lags, rhs, num_chunks: int = 8, method: str = "schur",
                                  unroll: int = 1):
  """`d^T G^{-1} d` for a symmetric positive-definite block-Toeplitz G.

  G has F x F blocks of size N x N; block (a, b) is R(b - a) with
  R(-k) = R(k)^T: the Gram matrix of N signals' delays 0..F-1, ordered
  delay-major. All methods are O(N^3 F^2) recursions over the order 1..F:

  - `"schur"` (default): the block Schur algorithm (see
    `_block_form_by_schur`): the reflections come from error sequences that
    are updated elementwise, and the form is the sum over orders of the
    backward predictors' innovations `(B^T d)^T V_b^{-1} (B^T d)`. No
    predictor, no solution vector, no inner product.
  - `"levinson"`: the block Levinson (Whittle/Wiggins-Robinson) recursion on
    the predictors, growing the solution x of G x = d from the residual
    `d_k - G_k-row x`; the form is `d^T x`. About 3x the operations of
    `"schur"`, but the residual corrects rounding as it goes: in float32 it
    holds 2.5-3x more digits (the test set's worst error 0.40 dB against
    1.06 dB, on values above 40 dB), so float32 callers should use it. In
    float64 both hold mir_eval's values to ~1e-8 dB.

  Args:
    lags: `[N, N, F]`, `lags[:, :, k] = R(k)`.
    rhs: `[N, K, F]`, K right-hand sides; `rhs[:, :, a]` is the d block of delay a.
    num_chunks: the order runs in this many scans, each over sequences of a
      static length that fits its orders, so little work goes to entries not
      (or no longer) in use.
    method: one of `METHODS`, as above.
    unroll: recursion steps per scan iteration (`"schur"` only): 2 lets
      XLA:CPU drop a state copy per step, at about twice the compile time.

  Returns:
    `[K, K]`: `d_i^T G^{-1} d_j`.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}; got {method!r}")
  scalar = lags.shape[0] == 1
  if method == "schur":
    if scalar:
      return _scalar_form_by_schur(lags[0, 0], rhs[0], num_chunks, unroll)
    return _block_form_by_schur(lags, rhs, num_chunks, unroll)
  if scalar:
    return _scalar_form_by_solution(lags[0, 0], rhs[0], num_chunks)
  return _block_form_by_solution(lags, rhs, num_chunks)


def _db(num, den):
  """10 log10(num / den), +inf where den <= 0 (mir_eval's `_safe_db`)."""
  safe = jnp.where(den > 0, den, 1.0)
  return jnp.where(den > 0, 10.0 * jnp.log10(num / safe), jnp.inf)


def _mixture_correlations(reference, estimate, silent_ref, filter_length: int):
  """Lagged correlations of one mixture: `[N, L]` each -> `[2N, N, F]`.

  Rows [references; estimates] against references: `out[i, j, k] = r_ij[k]`
  for references i, j (the Gram blocks) and `out[N + e, i, a]` = <reference i
  delayed by a, estimate e>. References flagged in `silent_ref` `[N]` count as
  zero: every correlation with one is zeroed, which is what zeroing the
  signal would give, without a copy of the signals.
  """
  out = _correlations((reference, estimate), reference.shape[0], filter_length)
  keep = ~silent_ref
  keep_rows = jnp.concatenate([keep, jnp.ones_like(keep)])
  return jnp.where(keep_rows[:, None, None] & keep[None, :, None], out, 0.0)


# float64: Schur, two steps per scan iteration (XLA:CPU then drops a state
# copy per step; the public call, each against the Levinson version in one
# process: 2.90 against 3.18 ms per mixture, with one step 3.09 against 3.42).
# float32: Levinson growing the solution, which holds float32's digits best.
_FORM_OPTIONS = {"float64": dict(method="schur", unroll=2),
                "float32": dict(method="levinson")}


def _metrics_from_correlations(both, energy, silent_ref, silent_est):
  """SDR, SIR, SAR `[3, N]` of one mixture from `_mixture_correlations` and |e|^2 `[N]`."""
  n = both.shape[1]
  gram, corr = both[:n], both[n:]
  # A silent reference's delays span nothing: an identity block keeps G invertible
  # and its zero correlations with the estimate give it no weight.
  gram = gram.at[jnp.arange(n), jnp.arange(n), 0].add(silent_ref.astype(gram.dtype))
  rhs_all = jnp.swapaxes(corr, 0, 1)                                # [N refs, N ests, F]
  form = functools.partial(block_toeplitz_quadratic_form,
                           **_FORM_OPTIONS[np.dtype(gram.dtype).name])
  energy_all = jnp.diagonal(form(gram, rhs_all))
  own_gram = jnp.diagonal(gram, axis1=0, axis2=1).T[:, None, None]  # [N, 1, 1, F]
  own_rhs = jnp.diagonal(corr, axis1=0, axis2=1).T[:, None, None]
  energy_own = jax.vmap(form)(own_gram, own_rhs)[:, 0, 0]
  sdr = _db(energy_own, energy - energy_own)
  sir = _db(energy_own, energy_all - energy_own)
  sar = _db(energy_all, energy - energy_all)
  out = jnp.stack([sdr, sir, sar])
  out = jnp.where(silent_est[None], -jnp.inf, out)
  return jnp.where(silent_ref[None], jnp.nan, out)


def _group_metrics_impl(reference, estimate, filter_length, silence_threshold):
  """`[G, N, L]` pairs -> (`[G, 3, N]` metrics, bool: every input sample finite).

  Compiled once per (G, N, L, dtype). Correlations run one mixture at a time
  (their FFT working set then stays in cache at any G); the recursions run on
  the whole group at once, which spreads each step's fixed cost over G mixtures.

  The finiteness flag comes free with the silence sums: `sum |x|` is finite
  only if every sample is (a finite sum can still overflow, so a False flag
  is confirmed by an exact check before it is reported).

  Matrix products run at full precision: GPUs otherwise multiply float32 in
  TF32 (10-bit mantissas), too coarse for the energy differences behind the
  ratios (float32 scores on an H200 came out inf and NaN for some mixtures).
  """
  with jax.default_matmul_precision("highest"):  # read when the products are traced
    ref_abs = jnp.sum(jnp.abs(reference), axis=-1)
    est_abs = jnp.sum(jnp.abs(estimate), axis=-1)
    silent_ref = ref_abs <= silence_threshold
    both = jax.lax.map(lambda args: _mixture_correlations(*args, filter_length),
                       (reference, estimate, silent_ref))
    out = jax.vmap(_metrics_from_correlations)(
        both, jnp.sum(estimate ** 2, -1), silent_ref, est_abs <= silence_threshold)
  return out, jnp.isfinite(ref_abs).all() & jnp.isfinite(est_abs).all()


_group_metrics = jax.jit(_group_metrics_impl, static_argnames=("filter_length",
                                                              "silence_threshold"))
# XLA:CPU vectorises for 256-bit registers unless told otherwise, also on CPUs
# with 512-bit ones; there the correlation and recursion loops run about 8%
# faster at 512 bits (the public call: 2.79 against 3.05 ms per mixture on a
# 2-core AVX-512 VM, values bit-identical). A CPU with narrower registers
# keeps its own width. Only this compilation gets the option (no XLA_FLAGS).
_group_metrics_cpu = jax.jit(_group_metrics_impl, static_argnames=("filter_length",
                                                                  "silence_threshold"),
                             compiler_options={"xla_cpu_prefer_vector_width": "512"})


@functools.partial(jax.jit, static_argnames=("group_size", "length", "dtype"))
def _pad_group(x, group_size: int, length: int, dtype):
  """`[g, N, L]` (host or device) -> `[group_size, N, length]` of `dtype`, zero-padded.

  One jitted copy: cheaper than filling a fresh host buffer, whose first
  touch of every page costs as much as the copy itself.
  """
  x = x.astype(dtype)
  return jnp.pad(x, ((0, group_size - x.shape[0]), (0, 0), (0, length - x.shape[2])))


def _aligned_zeros(shape, dtype, alignment: int = 64):
  """A zeroed host array whose data starts on an `alignment`-byte boundary.

  JAX's CPU backend adopts a 64-byte-aligned numpy array without copying it
  (a less aligned one is copied by `device_put`), so a group staged in such a
  buffer reaches the kernel with no copy beyond the staging itself.
  """
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape)) * dtype.itemsize
  raw = np.zeros(nbytes + alignment, np.uint8)
  start = -raw.ctypes.data % alignment
  return raw[start:start + nbytes].view(dtype).reshape(shape)


def _padded_length(length: int, filter_length: int,
                   bucket_blocks: int = _CHUNK_BLOCKS) -> int:
  """Length rounded up to a multiple of bucket_blocks * filter_length samples.

  Trailing zeros change no correlation or energy, so rounding the length up
  only bounds how many shapes get compiled (one per 8192 samples at F=512),
  and a group's blocks then split into whole correlation loop steps.
  """
  bucket = bucket_blocks * filter_length
  return -(-length // bucket) * bucket


def _default_threads() -> int:
  """Host threads feeding group kernels: the CPU's cores on the CPU backend.

  XLA:CPU runs each small group kernel on one core and releases the GIL while
  it runs, so groups dispatched from several threads use several cores. An
  accelerator already runs a group in parallel: one thread.
  """
  if jax.default_backend() != "cpu":
    return 1
  return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else (os.cpu_count() or 1))


# CPU group sizes per mixture cost the same within this range (2.86-2.92 ms
# per mixture for 4, 5 and 6 on 120 mixtures, 2 threads, 2026-12-07).
_CPU_GROUP_SIZES = (4, 5, 6)


def _default_group_size(batch: int, threads: int) -> int:
  """The CPU default: of `_CPU_GROUP_SIZES`, the one whose groups finish
  soonest on `threads` threads (fewest mixture slots on the busiest thread,
  then the smallest size).

  Groups of 4 split 100 mixtures 13:12 over two threads, and the last group
  runs while the other core idles; groups of 5 split them 10:10 (the public
  call: 2.86 against 3.11 ms per mixture). A batch's size decides its group
  size, so batches of different sizes may compile up to three kernels.
  """
  def busiest(size):
    return -(-(-(-batch // size)) // threads) * size
  return min(_CPU_GROUP_SIZES, key=lambda size: (busiest(size), size))


def bss_eval_sources(reference, estimate, *, filter_length: int = 512,
                     dtype=jnp.float64, silence_threshold: float = SILENCE_THRESHOLD,
                     group_size: int | None = None, num_threads: int | None = None):
  """SDR, SIR and SAR of each estimate against its reference (no permutation).

  mir_eval's `bss_eval_sources(reference, estimate, compute_permutation=False)`
  semantics and argument order, batched over leading axes.

  Args:
    reference: true sources `[..., N, L]` (N sources, L samples).
    estimate: estimated sources `[..., N, L]`, row n estimating reference n.
    filter_length: distortion-filter taps (BSS Eval v3 / mir_eval: 512).
    dtype: float64 (default) or float32. float64 holds mir_eval's values to
      ~1e-10 dB; float32 is faster and runs where float64 does not (TPU): it
      holds 0.01 dB for values below 30 dB, but above that the small energy
      differences behind high ratios lose digits and the error grows about
      10x per 10 dB (0.06 dB at 30-40 dB, 0.16 dB at 40-50 dB in the tests).
      float64 enables JAX's x64 mode for this call when it is made outside a
      trace; inside a jit it needs x64 already on.
    silence_threshold: a row with sum |x| at or below this is silent (see module
      docstring).
    group_size: mixtures per compiled group kernel (at most the batch size);
      default on the CPU backend 4, 5 or 6, whichever spreads the batch's
      groups most evenly over the threads (the recursions' state stays in
      cache at these sizes; see `_default_group_size`), and 64 on
      accelerators (fills the device).
    num_threads: host threads dispatching groups (eager calls only); default:
      the CPU's cores on the CPU backend, 1 on accelerators.

  Returns:
    `(sdr, sir, sar)`, each `[..., N]` in dB; NaN in rows with a silent reference.
  """
  validation.check_min_rank("reference", reference, 2, "[..., N, L] sources x samples")
  validation.check_min_rank("estimate", estimate, 2, "[..., N, L] sources x samples")
  ref_shape, est_shape = tuple(jnp.shape(reference)), tuple(jnp.shape(estimate))
  if ref_shape != est_shape:
    raise ValueError(f"reference shape {ref_shape} and estimate shape {est_shape} "
                     "must be equal ([..., N, L])")
  if ref_shape[-1] < 1 or ref_shape[-2] < 1:
    raise ValueError(f"reference has shape {ref_shape}: need N >= 1 sources and "
                     "L >= 1 samples")
  if filter_length < 1:
    raise ValueError(f"filter_length must be positive; got {filter_length}")
  if group_size is not None and group_size < 1:
    raise ValueError(f"group_size must be positive; got {group_size}")
  if num_threads is not None and num_threads < 1:
    raise ValueError(f"num_threads must be positive; got {num_threads}")
  dtype = np.dtype(dtype)
  if dtype not in (np.float32, np.float64):
    raise ValueError(f"dtype must be float32 or float64; got {dtype}")
  validation.check_real_floating("reference", reference)
  validation.check_real_floating("estimate", estimate)
  # Finiteness is checked by the group kernels on the way (see _group_metrics):
  # a separate pass over the inputs cost about 5% of the whole evaluation.

  num, length = ref_shape[-2:]
  batch = int(np.prod(ref_shape[:-2], dtype=np.int64))
  if batch == 0:
    empty = np.zeros(ref_shape[:-1], dtype)  # nothing to score
    return empty, empty, empty
  traced = validation.is_traced(reference) or validation.is_traced(estimate)
  num_threads = 1 if traced else (num_threads or _default_threads())
  if group_size is None:
    group_size = (_default_group_size(batch, num_threads) if jax.default_backend() == "cpu"
                  else 64)
  group_size = min(group_size, batch)  # a lone mixture is not padded to a full group
  groups = -(-batch // group_size)
  padded = _padded_length(length, filter_length)
  statics = dict(filter_length=filter_length, silence_threshold=float(silence_threshold))

  staging = threading.local()  # per-thread host buffers, reused group after group

  def group_input(x, g, name="x"):
    """Group g of x as `[group_size, N, padded]`; the padding (whole groups, the
    length bucket) is zeros, which changes no value: padded mixtures are silent.

    Device arrays are padded by a jitted copy. Host (numpy) input is copied
    into an aligned host buffer that the kernel then reads in place: one copy
    instead of a transfer plus a padding copy, into pages already touched.
    """
    lo, hi = g * group_size, min((g + 1) * group_size, batch)
    rows = x.reshape(batch, num, length)[lo:hi]
    if isinstance(x, jax.Array):
      return _pad_group(rows, group_size=group_size, length=padded, dtype=dtype)
    buffer = getattr(staging, name, None)
    if buffer is None:  # zeros: the length padding is never written after this
      buffer = _aligned_zeros((group_size, num, padded), dtype)
      setattr(staging, name, buffer)
    buffer[:hi - lo, :, :length] = rows
    buffer[hi - lo:] = 0  # the rows past a short last group
    # The previous group's kernel has finished (one_group blocks on it), so
    # overwriting the buffer it read is safe.
    return jax.device_put(buffer)

  def run():
    if traced:
      ref, est = (jnp.stack([group_input(jnp.asarray(x), g) for g in range(groups)])
                  for x in (reference, estimate))
      # Inside a caller's jit the kernel is inlined, and takes the caller's options.
      out = jax.lax.map(lambda pair: _group_metrics(*pair, **statics)[0], (ref, est))
    else:  # one compiled group kernel serves every batch of >= group_size
      kernel = functools.partial(
          _group_metrics_cpu if jax.default_backend() == "cpu" else _group_metrics, **statics)
      ref, est = (x if isinstance(x, jax.Array) else np.asarray(x)
                  for x in (reference, estimate))
      x64 = bool(jax.config.jax_enable_x64)

      def one_group(g):
        with jax.enable_x64(x64):  # the switch is per thread: carry the caller's
          return jax.block_until_ready(kernel(group_input(ref, g, "reference"),
                                              group_input(est, g, "estimate")))

      threads = min(num_threads, groups)
      if threads > 1:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
          results = list(pool.map(one_group, range(groups)))
      else:
        results = [one_group(g) for g in range(groups)]
      if not all(bool(finite) for _, finite in results):
        validation.check_finite("reference", reference)  # names the first bad sample
        validation.check_finite("estimate", estimate)
      out = jnp.stack([metrics for metrics, _ in results])
    out = out.reshape((groups * group_size, 3, num))[:batch]
    return tuple(out[:, k].reshape(ref_shape[:-1]) for k in range(3))

  if dtype == np.float64 and not jax.config.jax_enable_x64:
    if traced:
      raise ValueError(
          "bss_eval_sources(dtype=float64) inside a trace needs 64-bit mode on "
          "around it: wrap the jitted call in `with jax.enable_x64(True):`")
    with jax.enable_x64(True):
      return run()
  return run()
