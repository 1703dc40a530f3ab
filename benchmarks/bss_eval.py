"""BSS-eval speed and agreement: avsep_jax vs mir_eval 0.8.2 vs fast_bss_eval, one run.

All three score the same mixtures (default: 100 mixtures x 2 sources x 65535
samples at 11025 Hz, instrument-like signals with imperfect estimates) with
`compute_permutation=False` and 512-tap filters. mir_eval is the reference for
the agreement columns. Timings are wall-clock per mixture, median over
interleaved repetitions after one warm-up (our compile time is printed apart).
Inputs are numpy arrays for every library, so our times include the transfer.

Each repetition gives every library a turn of `--passes_per_turn` passes (2)
over the set, one after another; the last pass of a turn is the one timed:
a library's steady state, as in an evaluation loop that scores batch after
batch. The first pass of a turn follows the other libraries' work in the same
process (OpenBLAS's worker threads still spinning after mir_eval's solves,
caches and freed memory of another program): it is reported apart, per
library, not hidden. `--passes_per_turn 1` times only such first passes.

fast_bss_eval does not run on numpy 2; it is timed in its own small venv
(`benchmarks/requirements-fast-bss-eval.txt`) through a subprocess that times
itself, and skipped with a note when that venv is absent.

  .venv/bin/python benchmarks/bss_eval.py [--num_mixtures 100] [--repeats 3]

On an accelerator, the GPU target (2100 mixtures in < 10 s) is measured with

  python benchmarks/bss_eval.py --tile 21 --reference_mixtures 20

`--tile K` scores the mixture set K times over (the same work per mixture as K
times as many distinct mixtures, without generating them: 2100 take a minute
of one core to synthesise); `--reference_mixtures M` runs mir_eval (and
fast_bss_eval) on the first M mixtures only, their time per mixture taken
from those. Off the CPU backend our rows are timed twice: from numpy inputs
(host-to-device transfer included) and from inputs already on the device, as
the evaluation passes them ("_device" rows).
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
  parser.add_argument("--passes_per_turn", type=int, default=2,
                      help="passes of one library in a row per repetition; the last is "
                           "timed (steady state), the first is reported apart")
  parser.add_argument("--group_size", type=int, default=None,
                      help="mixtures per kernel; default: the library's (2 on CPU)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--tile", type=int, default=1,
                      help="score the mixture set this many times over")
  parser.add_argument("--reference_mixtures", type=int, default=None,
                      help="mir_eval / fast_bss_eval on the first M mixtures only")
  parser.add_argument("--fast_bss_eval_python",
                      default=str(ROOT / ".venv-fast-bss-eval" / "bin" / "python"))
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bss_eval.json"))
  args = parser.parse_args()

  if args.tile < 1:
    parser.error("--tile must be at least 1")
  if args.passes_per_turn < 1:
    parser.error("--passes_per_turn must be at least 1")
  ref, est = synthetic_signals.mixture_set(args.seed, args.num_mixtures,
                                           args.num_sources, args.length)
  if args.tile > 1:
    ref, est = np.tile(ref, (args.tile, 1, 1)), np.tile(est, (args.tile, 1, 1))
  n = len(ref)
  m = min(args.reference_mixtures or n, n)  # mixtures the references score
  on_host = jax.default_backend() == "cpu"
  print(f"{n} mixtures x {args.num_sources} sources x {args.length} samples "
        f"({args.num_mixtures} distinct); mir_eval on {m}; {os.cpu_count()} CPUs; "
        f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind})",
        flush=True)

  compile_s = {}
  for dtype in ("float64", "float32"):  # warm-up: compile the group kernel(s), one pass
    _, compile_s[dtype] = timed(lambda: ours_pass(ref, est, dtype, args.group_size))

  passes = {"ours_float64": lambda: ours_pass(ref, est, "float64", args.group_size),
            "ours_float32": lambda: ours_pass(ref, est, "float32", args.group_size)}
  if not on_host:  # inputs already on the device, in each precision
    with jax.enable_x64(True):
      ref64, est64 = jax.device_put(ref), jax.device_put(est)
    ref32, est32 = jax.device_put(ref.astype(np.float32)), jax.device_put(est.astype(np.float32))
    passes["ours_float64_device"] = lambda: ours_pass(ref64, est64, "float64", args.group_size)
    passes["ours_float32_device"] = lambda: ours_pass(ref32, est32, "float32", args.group_size)
    for name in ("ours_float64_device", "ours_float32_device"):
      passes[name]()  # the device-input padding copy compiles once
  passes["mir_eval"] = lambda: mir_eval_pass(ref[:m], est[:m])
  counts = {name: (m if name == "mir_eval" else n) for name in passes}
  times = {name: [] for name in passes}        # the last pass of each turn
  first_times = {name: [] for name in passes}  # the first, right after the others' turns
  values = {}
  for rep in range(args.repeats):
    for name, fn in passes.items():  # one turn: passes_per_turn passes in a row
      for k in range(args.passes_per_turn):
        values[name], seconds = timed(fn)
        if k == 0:
          first_times[name].append(seconds)
      times[name].append(seconds)
    print(f"  repetition {rep + 1}/{args.repeats}: " + ", ".join(
        f"{k} {v[-1] / counts[k] * 1e3:.2f} ms" for k, v in times.items()), flush=True)

  fbe_times, fbe_values, fbe_note = fast_bss_eval_times(
      args.fast_bss_eval_python, ref[:m], est[:m], args.repeats)
  if fbe_times is not None:
    times["fast_bss_eval"], values["fast_bss_eval"] = fbe_times, fbe_values
    counts["fast_bss_eval"] = m
  print(f"fast_bss_eval: {fbe_note}")

  base = np.median(times["mir_eval"]) / m
  rows = []
  for name, ts in times.items():
    per = np.median(ts) / counts[name]
    delta = np.abs(values[name][:m] - values["mir_eval"])  # [M, 3, N]
    rows.append({
        "name": name, "mixtures": counts[name], "ms_per_mixture": per * 1e3,
        "seconds_total_median": float(np.median(ts)),
        "ms_spread": [min(ts) / counts[name] * 1e3, max(ts) / counts[name] * 1e3],
        "speedup_vs_mir_eval": base / per,
        "ms_per_mixture_first_pass_of_turn": (
            float(np.median(first_times[name])) / counts[name] * 1e3
            if name in first_times else None),
        "max_abs_delta_db": {m: float(delta[:, k].max()) for k, m in
                             enumerate(("sdr", "sir", "sar"))},
    })
  print("\n| implementation | mixtures | s in all | ms / mixture (min-max) | vs mir_eval | "
        "max abs dSDR | dSIR | dSAR |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    d = r["max_abs_delta_db"]
    print(f"| {r['name']} | {r['mixtures']} | {r['seconds_total_median']:.2f} | "
          f"{r['ms_per_mixture']:.2f} ({r['ms_spread'][0]:.2f}-"
          f"{r['ms_spread'][1]:.2f}) | {r['speedup_vs_mir_eval']:.1f}x | {d['sdr']:.2g} | "
          f"{d['sir']:.2g} | {d['sar']:.2g} |")
  if args.passes_per_turn > 1:
    print("first pass of each turn, right after the other libraries' (ms / mixture): " + ", ".join(
        f"{r['name']} {r['ms_per_mixture_first_pass_of_turn']:.2f}" for r in rows
        if r["ms_per_mixture_first_pass_of_turn"] is not None))
  print("first call (compile + one pass, s): " + ", ".join(f"{k} {v:.1f}" for k, v in compile_s.items()))

  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "date": datetime.date.today().isoformat(), "argv": sys.argv[1:],
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
      "jax": jax.__version__, "backend": jax.default_backend(),
      "device_kind": jax.devices()[0].device_kind, "distinct_mixtures": args.num_mixtures,
      "tile": args.tile, "passes_per_turn": args.passes_per_turn,
      "compile_s": compile_s, "fast_bss_eval": fbe_note, "rows": rows}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
