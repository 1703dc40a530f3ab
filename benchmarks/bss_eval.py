"""BSS-eval speed and agreement: avsep_jax vs mir_eval 0.8.2 vs fast_bss_eval, one run.

All three score the same mixtures (default: 100 mixtures x 2 sources x 65535
samples at 11025 Hz, instrument-like signals with imperfect estimates) with
`compute_permutation=False` and 512-tap filters. mir_eval is the reference for
the agreement columns. Timings are wall-clock per mixture, median over
interleaved repetitions after one warm-up (our compile time is printed apart).
Inputs are numpy arrays for every library, so our times include the transfer.

fast_bss_eval does not run on numpy 2; it is timed in its own small venv
(`benchmarks/requirements-fast-bss-eval.txt`) through a subprocess that times
itself, and skipped with a note when that venv is absent.

  .venv/bin/python benchmarks/bss_eval.py [--num_mixtures 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings

import jax
import numpy as np

from avsep_jax import metrics
from avsep_jax import synthetic_signals

ROOT = pathlib.Path(__file__).resolve().parent.parent

_FAST_BSS_EVAL_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import fast_bss_eval
    data = np.load(sys.argv[1]); repeats = int(sys.argv[2])
    ref, est = data["ref"], data["est"]
    def run():
        return np.stack([np.stack(fast_bss_eval.bss_eval_sources(
            r, e, compute_permutation=False)[:3]) for r, e in zip(ref, est)])
    fast_bss_eval.bss_eval_sources(ref[0], est[0], compute_permutation=False)
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); out = run(); times.append(time.perf_counter() - t)
    np.save(sys.argv[3], out)
    from importlib.metadata import version
    print(json.dumps({"times": times, "version": version("fast_bss_eval")}))
""")


def mir_eval_pass(ref, est):
  import mir_eval.separation
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    return np.stack([np.stack(mir_eval.separation.bss_eval_sources(
        r, e, compute_permutation=False)[:3]) for r, e in zip(ref, est)])


def ours_pass(ref, est, dtype, group_size):
  out = metrics.bss_eval_sources(ref, est, dtype=dtype, group_size=group_size)
  return np.stack([np.asarray(o) for o in jax.block_until_ready(out)], 1)


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def fast_bss_eval_times(python, ref, est, repeats):
  if not python or not pathlib.Path(python).exists():
    return None, None, f"not run: no interpreter at {python!r} (see module docstring)"
  with tempfile.TemporaryDirectory() as tmp:
    data, out_path = os.path.join(tmp, "data.npz"), os.path.join(tmp, "out.npy")
    np.savez(data, ref=ref, est=est)
    proc = subprocess.run([python, "-c", _FAST_BSS_EVAL_SCRIPT, data, str(repeats), out_path],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      return None, None, f"failed: {proc.stderr.strip().splitlines()[-1:]}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return info["times"], np.load(out_path), f"fast_bss_eval {info['version']}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_mixtures", type=int, default=100)
  parser.add_argument("--num_sources", type=int, default=2)
  parser.add_argument("--length", type=int, default=65535)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--group_size", type=int, default=None,
                      help="mixtures per kernel; default: the library's (2 on CPU)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--fast_bss_eval_python",
                      default=str(ROOT / ".venv-fast-bss-eval" / "bin" / "python"))
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bss_eval.json"))
  args = parser.parse_args()

  ref, est = synthetic_signals.mixture_set(args.seed, args.num_mixtures,
                                           args.num_sources, args.length)
  n = args.num_mixtures
  print(f"{n} mixtures x {args.num_sources} sources x {args.length} samples; "
        f"{os.cpu_count()} CPUs; jax {jax.__version__} on {jax.default_backend()}", flush=True)

  compile_s = {}
  for dtype in ("float64", "float32"):  # warm-up: compile the group kernel(s), one pass
    _, compile_s[dtype] = timed(lambda: ours_pass(ref, est, dtype, args.group_size))

  times = {"mir_eval": [], "ours_float64": [], "ours_float32": []}
  values = {}
  for rep in range(args.repeats):
    for name, fn in (
        ("ours_float64", lambda: ours_pass(ref, est, "float64", args.group_size)),
        ("ours_float32", lambda: ours_pass(ref, est, "float32", args.group_size)),
        ("mir_eval", lambda: mir_eval_pass(ref, est))):
      values[name], seconds = timed(fn)
      times[name].append(seconds)
    print(f"  repetition {rep + 1}/{args.repeats}: " + ", ".join(
        f"{k} {v[-1] / n * 1e3:.2f} ms" for k, v in times.items()), flush=True)

  fbe_times, fbe_values, fbe_note = fast_bss_eval_times(
      args.fast_bss_eval_python, ref, est, args.repeats)
  if fbe_times is not None:
    times["fast_bss_eval"], values["fast_bss_eval"] = fbe_times, fbe_values
  print(f"fast_bss_eval: {fbe_note}")

  base = np.median(times["mir_eval"]) / n
  rows = []
  for name, ts in times.items():
    per = np.median(ts) / n
    delta = np.abs(values[name] - values["mir_eval"])  # [B, 3, N]
    rows.append({
        "name": name, "ms_per_mixture": per * 1e3,
        "ms_spread": [min(ts) / n * 1e3, max(ts) / n * 1e3],
        "speedup_vs_mir_eval": base / per,
        "max_abs_delta_db": {m: float(delta[:, k].max()) for k, m in
                             enumerate(("sdr", "sir", "sar"))},
    })
  print(f"\n| implementation | ms / mixture (min-max) | vs mir_eval | max abs dSDR | dSIR | dSAR |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    d = r["max_abs_delta_db"]
    print(f"| {r['name']} | {r['ms_per_mixture']:.2f} ({r['ms_spread'][0]:.2f}-"
          f"{r['ms_spread'][1]:.2f}) | {r['speedup_vs_mir_eval']:.1f}x | {d['sdr']:.2g} | "
          f"{d['sir']:.2g} | {d['sar']:.2g} |")
  print("first call (compile + one pass, s): " + ", ".join(f"{k} {v:.1f}" for k, v in compile_s.items()))

  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "date": datetime.date.today().isoformat(), "argv": sys.argv[1:],
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
      "jax": jax.__version__, "backend": jax.default_backend(),
      "compile_s": compile_s, "fast_bss_eval": fbe_note, "rows": rows}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
