"""avsep_jax.metrics.bss_eval_sources against mir_eval 0.8.2 (the reference)."""

import warnings

import jax
import jax.numpy as jnp
import mir_eval.separation
import numpy as np
import pytest

from avsep_jax import metrics
from avsep_jax import synthetic_signals as synth

TOLERANCE_DB = 0.01


def mir_eval_metrics(ref, est):
  """mir_eval's (sdr, sir, sar) stacked `[3, N]`."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    out = mir_eval.separation.bss_eval_sources(ref, est, compute_permutation=False)
  return np.stack(out[:3])


def make_cases():
  """40 reference/estimate pairs: music-like and noise sources, 2 and 3 sources,
  filtered copies, leakage, noise, near-perfect and wrong-source estimates."""
  rng = np.random.default_rng(2024)
  cases = []
  def add(name, ref, est):
    cases.append((name, ref, est))
  for i in range(14):  # music-like, filtered estimates with leakage and noise
    n = 2 if i < 9 else 3
    length = (16384, 11025, 10001)[i % 3]
    ref = np.stack([synth.note_track(rng, length) for _ in range(n)])
    add(f"music{n}_{i}", ref, synth.imperfect_estimates(rng, ref))
  for i in range(6):  # unfiltered estimates, stronger leakage
    n = 2 + i % 2
    ref = np.stack([synth.note_track(rng, 12000) for _ in range(n)])
    add(f"leaky{n}_{i}", ref, synth.imperfect_estimates(rng, ref, leakage=(0.3, 0.9),
                                                        filtered=False))
  for i in range(6):  # near-perfect: filtered copies with faint noise (SDR 30-60 dB)
    n = 2 + i % 2
    ref = np.stack([synth.note_track(rng, 9000) for _ in range(n)])
    add(f"clean{n}_{i}", ref, synth.imperfect_estimates(rng, ref, leakage=(0.0, 0.01),
                                                        noise=(1e-3, 2e-2)))
  for i in range(6):  # white-noise sources
    n = 2 + i % 2
    ref = rng.standard_normal((n, 8192))
    add(f"noise{n}_{i}", ref, synth.imperfect_estimates(rng, ref))
  for i in range(4):  # the wrong source mostly: negative SDR/SIR
    ref = np.stack([synth.note_track(rng, 10000) for _ in range(2)])
    est = ref[::-1] + 0.2 * ref + 0.05 * rng.standard_normal(ref.shape)
    add(f"swapped_{i}", ref, est)
  for i in range(4):  # full SoP-length windows
    ref = np.stack([synth.note_track(rng, 65535) for _ in range(2)])
    add(f"full_{i}", ref, synth.imperfect_estimates(rng, ref))
  return cases


CASES = make_cases()


@pytest.fixture(scope="module")
def reference_values():
  return [mir_eval_metrics(ref, est) for _, ref, est in CASES]


def test_case_set_is_varied(reference_values):
  assert len(CASES) >= 36
  sdr = np.concatenate([v[0] for v in reference_values])
  sir = np.concatenate([v[1] for v in reference_values])
  assert sdr.min() < -3 and sdr.max() > 30  # from wrong-source to near-perfect
  assert sir.min() < 0 and sir.max() > 30
  assert {ref.shape[0] for _, ref, _ in CASES} == {2, 3}


@pytest.mark.parametrize("dtype", ["float64"])
def test_matches_mir_eval(reference_values, dtype):
  worst = 0.0
  for (name, ref, est), want in zip(CASES, reference_values):
    got = np.stack(metrics.bss_eval_sources(ref, est, dtype=dtype))
    assert got.shape == want.shape, name
    err = np.abs(got - want).max()
    worst = max(worst, err)
    assert err < TOLERANCE_DB, f"{name}: max |delta| {err:.4g} dB\n{got}\n{want}"
  print(f"{dtype}: max |delta| over {len(CASES)} cases = {worst:.3g} dB")


def test_float32_option_is_close(reference_values):
  """float32 (for backends without float64) holds 0.01 dB below 30 dB. Above, the
  energy differences behind high ratios lose digits: the error may grow 10x per
  10 dB (a relative energy error times 10^(value/10)), which this bound encodes."""
  for (name, ref, est), want in zip(CASES, reference_values):
    got = np.stack(metrics.bss_eval_sources(ref, est, dtype=jnp.float32))
    assert got.dtype == np.float32
    allowed = TOLERANCE_DB * np.maximum(1.0, 10.0 ** ((want - 30.0) / 10.0))
    err = np.abs(got - want)
    assert np.all(err <= allowed), f"{name}: {err.max():.3g} dB\n{got}\n{want}"


def test_batched_equals_per_mixture():
  ref, est = synth.mixture_set(7, 6, 2, 6000)
  batched = np.stack(metrics.bss_eval_sources(ref.reshape(2, 3, 2, 6000),
                                              est.reshape(2, 3, 2, 6000)))
  assert batched.shape == (3, 2, 3, 2)
  for b in range(6):
    single = np.stack(metrics.bss_eval_sources(ref[b], est[b]))
    np.testing.assert_allclose(batched.reshape(3, 6, 2)[:, b], single, atol=1e-9)
    np.testing.assert_allclose(single, mir_eval_metrics(ref[b], est[b]), atol=TOLERANCE_DB)


def test_thread_and_group_settings_give_identical_values():
  ref, est = synth.mixture_set(11, 5, 3, 4000)
  base = np.stack(metrics.bss_eval_sources(ref, est, group_size=1, num_threads=1))
  for group_size, threads in ((2, 2), (3, 1), (8, 4)):
    got = np.stack(metrics.bss_eval_sources(ref, est, group_size=group_size,
                                            num_threads=threads))
    np.testing.assert_allclose(got, base, rtol=0, atol=1e-9)
  # Host input is staged in reused aligned buffers, device input padded on the
  # device: the same values either way, short last group included.
  with jax.enable_x64(True):
    on_device = jax.device_put(ref), jax.device_put(est)
  got = np.stack(metrics.bss_eval_sources(*on_device, group_size=2, num_threads=2))
  np.testing.assert_allclose(got, base, rtol=0, atol=1e-9)
  with jax.enable_x64(False):  # workers carry the caller's x64 setting
    f32 = np.stack(metrics.bss_eval_sources(ref, est, dtype=jnp.float32, num_threads=2))
  assert f32.dtype == np.float32
  with pytest.raises(ValueError, match="num_threads must be positive"):
    metrics.bss_eval_sources(ref, est, num_threads=0)
  empty = metrics.bss_eval_sources(ref[:0], est[:0])
  assert [x.shape for x in empty] == [(0, 3)] * 3


def test_default_cpu_group_size_spreads_groups_evenly_over_threads():
  pick = metrics.bss_eval._default_group_size
  assert pick(100, 2) == 5   # 4 would split 25 groups 13:12
  assert pick(100, 1) == 4   # one thread: no idle core, the smallest size
  assert pick(120, 2) == 4   # 30 groups of 4 split evenly already
  assert pick(9, 2) == 5     # two groups of 5 against three of 4
  assert pick(3, 2) == 4     # capped at the batch by the caller
  for batch in range(1, 60):
    for threads in (1, 2, 3, 8):
      size = pick(batch, threads)
      slots = lambda g: -(-(-(-batch // g)) // threads) * g
      assert slots(size) == min(slots(g) for g in metrics.bss_eval._CPU_GROUP_SIZES)


def test_runs_under_jit():
  ref, est = synth.mixture_set(3, 2, 2, 5000)
  want = np.stack(metrics.bss_eval_sources(ref, est, dtype=jnp.float32))
  fn = jax.jit(lambda r, e: metrics.bss_eval_sources(r, e, dtype=jnp.float32))
  got = np.stack(fn(jnp.asarray(ref, jnp.float32), jnp.asarray(est, jnp.float32)))
  np.testing.assert_allclose(got, want, atol=1e-4)
  with jax.enable_x64(True):
    fn64 = jax.jit(metrics.bss_eval_sources)
    np.testing.assert_allclose(np.stack(fn64(ref, est)),
                               np.stack([mir_eval_metrics(r, e) for r, e in zip(ref, est)], 1),
                               atol=TOLERANCE_DB)


def test_silent_reference_row_is_nan_and_others_unaffected():
  rng = np.random.default_rng(5)
  ref = np.stack([synth.note_track(rng, 7000) for _ in range(3)])
  est = synth.imperfect_estimates(rng, ref)
  ref[1] = 0.0
  sdr, sir, sar = (np.asarray(m) for m in metrics.bss_eval_sources(ref, est))
  assert np.isnan([sdr[1], sir[1], sar[1]]).all()
  np.testing.assert_array_equal(np.isnan(sdr), metrics.is_silent(ref))
  # A zero reference spans nothing, so the other rows equal mir_eval without it.
  keep = [0, 2]
  want = mir_eval_metrics(ref[keep], est[keep])
  np.testing.assert_allclose(np.stack([sdr, sir, sar])[:, keep], want, atol=TOLERANCE_DB)


def test_near_silent_reference_uses_protocol_threshold():
  rng = np.random.default_rng(6)
  ref = np.stack([synth.note_track(rng, 5000) for _ in range(2)])
  est = synth.imperfect_estimates(rng, ref)
  ref[0] = 1e-5 / 5000 * 0.5  # sum |x| = 5e-6 <= 1e-5
  assert metrics.is_silent(ref).tolist() == [True, False]
  assert not metrics.is_silent(ref, threshold=1e-6)[0]
  assert np.isnan(np.asarray(metrics.bss_eval_sources(ref, est)[0])[0])
  sdr = metrics.bss_eval_sources(ref, est, silence_threshold=0.0)[0]
  assert np.isfinite(np.asarray(sdr)).all()


def test_silent_estimate_is_minus_inf():
  rng = np.random.default_rng(8)
  ref = np.stack([synth.note_track(rng, 5000) for _ in range(2)])
  est = synth.imperfect_estimates(rng, ref)
  est[0] = 0.0
  out = np.stack(metrics.bss_eval_sources(ref, est))
  assert np.isneginf(out[:, 0]).all()
  assert np.isfinite(out[:, 1]).all()


def test_perfect_estimate_is_inf_like_mir_eval():
  rng = np.random.default_rng(9)
  ref = rng.standard_normal((1, 3000))
  sdr, sir, sar = metrics.bss_eval_sources(ref, 0.5 * ref)
  assert float(sdr[0]) > 100 and np.isinf(np.asarray(sir)).all()


def test_lagged_correlations_match_direct_sums(rng):
  x = rng.standard_normal((2, 1500))
  y = rng.standard_normal((3, 1500))
  with jax.enable_x64(True):
    got = np.asarray(metrics.lagged_correlations(jnp.asarray(x), jnp.asarray(y), 64))
  for i in range(2):
    for j in range(3):
      want = [np.dot(x[i, k:], y[j, :1500 - k]) for k in range(64)]
      np.testing.assert_allclose(got[i, j], want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("num", [1, 2, 3])
def test_block_toeplitz_quadratic_form_matches_dense_solve(rng, num):
  f, length = 40, 600
  sig = np.stack([synth.note_track(rng, length) for _ in range(num)])
  rhs = rng.standard_normal((num, 3, f))
  # Dense matrix, delay-major: entry ((a, i), (b, j)) = R(b - a)[i, j].
  with jax.enable_x64(True):
    lags = np.asarray(metrics.lagged_correlations(jnp.asarray(sig), jnp.asarray(sig), f))
  dense = np.zeros((f * num, f * num))
  for a in range(f):
    for b in range(f):
      block = lags[:, :, b - a] if b >= a else lags[:, :, a - b].T
      dense[a * num:(a + 1) * num, b * num:(b + 1) * num] = block
  d = rhs.transpose(2, 0, 1).reshape(f * num, 3)
  want = d.T @ np.linalg.solve(dense, d)
  # 3 chunks of F = 40: 13 steps each, so unroll=2 also runs a remainder step.
  for method, chunks, unroll in [("schur", 1, 1), ("schur", 3, 2), ("levinson", 3, 1),
                                 ("levinson", 8, 1)]:
    with jax.enable_x64(True):
      got = np.asarray(metrics.block_toeplitz_quadratic_form(
          jnp.asarray(lags), jnp.asarray(rhs), num_chunks=chunks, method=method,
          unroll=unroll))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * np.abs(want).max(),
                               err_msg=f"{method}, {chunks} chunks, unroll {unroll}")


def test_block_toeplitz_quadratic_form_single_lag():
  lags = np.array([[[2.0]], ])  # [1, 1, 1]: G = [[2]]
  rhs = np.array([[[3.0], [1.0]]])  # [1, 2, 1]
  for method in metrics.bss_eval.METHODS:
    with jax.enable_x64(True):
      got = np.asarray(metrics.block_toeplitz_quadratic_form(
          jnp.asarray(lags), jnp.asarray(rhs), method=method))
    np.testing.assert_allclose(got, [[4.5, 1.5], [1.5, 0.5]])


def test_block_toeplitz_quadratic_form_two_lags_and_bad_method():
  """F = 2 is one recursion step: G = [[R0, R1], [R1^T, R0]] for N = 2."""
  r0 = np.array([[2.0, 0.3], [0.3, 1.5]])
  r1 = np.array([[0.4, -0.2], [0.1, 0.5]])
  lags = np.stack([r0, r1], -1)                       # [2, 2, 2]
  rhs = np.arange(8.0).reshape(2, 2, 2) - 3.0         # [N, K, F]
  dense = np.block([[r0, r1], [r1.T, r0]])
  d = rhs.transpose(2, 0, 1).reshape(4, 2)
  for method in metrics.bss_eval.METHODS:
    with jax.enable_x64(True):
      got = np.asarray(metrics.block_toeplitz_quadratic_form(
          jnp.asarray(lags), jnp.asarray(rhs), method=method))
    np.testing.assert_allclose(got, d.T @ np.linalg.solve(dense, d), rtol=1e-12)
  with pytest.raises(ValueError, match="method must be one of"):
    metrics.block_toeplitz_quadratic_form(jnp.asarray(lags), jnp.asarray(rhs), method="lu")


def test_bad_inputs_raise_clear_errors():
  ok = np.ones((2, 100))
  with pytest.raises(ValueError, match=r"reference shape \(2, 100\) and estimate shape \(3, 100\)"):
    metrics.bss_eval_sources(ok, np.ones((3, 100)))
  with pytest.raises(ValueError, match=r"reference must have at least 2 axes"):
    metrics.bss_eval_sources(np.ones(100), np.ones(100))
  with pytest.raises(ValueError, match=r"estimate .* contains 1 non-finite value\(s\), first at index \(1, 5\)"):
    bad = ok.copy(); bad[1, 5] = np.nan
    metrics.bss_eval_sources(ok, bad)
  with pytest.raises(ValueError, match=r"reference .* non-finite"):
    metrics.bss_eval_sources(np.full((2, 100), np.inf), ok)
  with pytest.raises(ValueError, match=r"estimate .* first at index \(1, 1, 7\)"):
    bad = jnp.ones((2, 2, 100)).at[1, 1, 7].set(jnp.inf)  # on device, in the 2nd of 2 groups
    metrics.bss_eval_sources(jnp.ones((2, 2, 100)), bad, group_size=1)
  # Finite samples whose |x| sums overflow fail the kernels' quick check; the
  # exact check then finds nothing to report.
  huge = np.full((2, 100), 1e307)
  huge[1] *= -1
  metrics.bss_eval_sources(huge, huge)
  with pytest.raises(ValueError, match=r"L >= 1"):
    metrics.bss_eval_sources(np.ones((2, 0)), np.ones((2, 0)))
  with pytest.raises(ValueError, match=r"dtype must be float32 or float64"):
    metrics.bss_eval_sources(ok, ok, dtype=np.float16)
  with pytest.raises(ValueError, match=r"real floating-point"):
    metrics.bss_eval_sources(ok.astype(np.int32), ok.astype(np.int32))
  with pytest.raises(ValueError, match=r"enable_x64"):
    jax.jit(metrics.bss_eval_sources)(jnp.ones((2, 100)), jnp.ones((2, 100)))


def test_group_kernel_multiplies_matrices_at_full_precision():
  """Every matrix product of the kernel asks for HIGHEST precision: a GPU's default
  float32 product (TF32) turned some float32 scores into inf and NaN."""
  import re
  from avsep_jax.metrics import bss_eval as bss_eval_lib
  x = np.zeros((2, 2, 1024), np.float32)
  text = bss_eval_lib._group_metrics.lower(x, x, filter_length=64,
                                           silence_threshold=1e-5).as_text()
  dots = re.findall(r"stablehlo\.dot_general.*", text)
  assert dots and all("HIGHEST" in d for d in dots), dots[:3]


def test_cpu_kernel_vectorised_wider_gives_the_same_values(monkeypatch):
  """The CPU build of the group kernel (512-bit vectors where the CPU has them)
  scores like the plain build, and `bss_eval_sources` calls it on the CPU."""
  from avsep_jax.metrics import bss_eval as bss_eval_lib
  rng = np.random.default_rng(7)
  ref = np.stack([np.stack([synth.note_track(rng, 8192) for _ in range(2)]) for _ in range(2)])
  est = np.stack([synth.imperfect_estimates(rng, r) for r in ref])
  args = dict(filter_length=512, silence_threshold=1e-5)
  calls = []
  wide_kernel = bss_eval_lib._group_metrics_cpu
  monkeypatch.setattr(bss_eval_lib, "_group_metrics_cpu",
                      lambda *a, **k: calls.append(1) or wide_kernel(*a, **k))
  with jax.enable_x64(True):
    wide = wide_kernel(ref, est, **args)[0]
    plain = bss_eval_lib._group_metrics(ref, est, **args)[0]
    public = np.stack(metrics.bss_eval_sources(ref, est, num_threads=1), 1)
  np.testing.assert_allclose(wide, plain, rtol=1e-12, atol=1e-9)
  np.testing.assert_array_equal(public, np.asarray(wide))
  assert calls, "bss_eval_sources did not use the CPU build of the kernel"
