"""Training-step (and inference) speed and memory: avsep_jax (jit) against its PyTorch twin.

  python3 -m venv .venv-torch && .venv-torch/bin/pip install -r benchmarks/requirements-torch.txt
  .venv/bin/python benchmarks/train_step.py [--models sop_cpu,sop_full] [--repeats 7] \
      [--steps 3] [--torch_compile] [--inference]

Each side runs in its own worker process (JAX here with `--serve_jax`; PyTorch
in `.venv-torch` with `benchmarks/torch_reference.py --serve`), holding one
model, its optimiser and one fixed synthetic batch of the config's shapes.
After set-up (JAX: tracing and compiling the step, timed on its own; both:
one step), the driver asks the workers in turn to time `--steps` steps,
`--repeats` times, alternating which goes first; it prints the median time
per step, the spread, examples per second, each worker's peak resident
memory, and the ratio PyTorch time / JAX time (above 1: JAX is faster). The
parameter counts of the two sides must agree, or the run stops. Results go to
`benchmarks/results/train_step_<models>[_compile].json`.

With `--inference` the workers time separation instead of training: the
mixture's waveform in, every source's waveform out, in eval mode (JAX: the
jitted `evaluate.separate_mixture` that `--mode=eval` and `--mode=separate`
use; PyTorch: `torch_reference.Inference` under `torch.inference_mode()`),
and results go to `benchmarks/results/inference_<models>[_compile].json`.

On a GPU machine (JAX with CUDA, and a PyTorch with CUDA in some interpreter):

  python benchmarks/train_step.py --torch_python python3 --torch_device cuda \
      --models sop_cpu,crn_cpu,sop_full,crn_full --steps 10

JAX runs on its default backend (the GPU); the JAX worker does not preallocate
device memory (`XLA_PYTHON_CLIENT_PREALLOCATE=false`), so both workers fit on
one card, and each side also reports its peak device memory (JAX's
`peak_bytes_in_use`, PyTorch's `max_memory_allocated`). Results then go to
`..._gpu.json`.

With `--breakdown` only JAX runs (no PyTorch needed): for each model it times
the front end (STFT, warp, targets), the model's forward pass, its forward and
backward pass, and the whole train step, each jitted on its own, and writes
`benchmarks/results/breakdown_<models>[_bf16][_gpu].json`: where a step's time
goes, on any backend.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TORCH_PYTHON = ROOT / ".venv-torch" / "bin" / "python"
# Our config (file, size) and batch size for each twin in torch_reference.MODELS.
CONFIGS = {"sop_cpu": ("sop", "cpu", 8), "sop_full": ("sop", "full", 2),
           "crn_cpu": ("crn", "cpu", 8), "crn_full": ("crn", "full", 2)}


class JaxStep:
  """The project's jitted train step on a fixed synthetic batch of the config's shapes."""

  def __init__(self, name: str, batch_size: int, compute_dtype: str = "float32"):
    import importlib  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from flax import nnx  # pylint: disable=g-import-not-at-top
    from avsep_jax import data  # pylint: disable=g-import-not-at-top
    from avsep_jax import train  # pylint: disable=g-import-not-at-top
    sys.path.insert(0, str(ROOT))
    module, size, _ = CONFIGS[name]
    config = importlib.import_module(f"configs.{module}").get_config(size)
    config.train.batch_size = batch_size
    config.model.compute_dtype = compute_dtype
    if name == "crn_cpu":  # 2-source mixtures only, on both sides
      config.dataset.num_mix, config.dataset.min_mix = 2, 0
      config.dataset.fixed_composition = False
    d = config.dataset
    rng = np.random.default_rng(0)
    n = d.num_mix
    batch = {"sources": rng.uniform(-0.5, 0.5, (batch_size, n, d.segment_length)
                                    ).astype(np.float32),
             "labels": rng.integers(0, d.num_classes, (batch_size, n)).astype(np.int32),
             "source_mask": np.ones((batch_size, n), bool),
             "crops": rng.normal(size=(batch_size, n, d.crop_size, d.crop_size, 3)
                                 ).astype(np.float32)}
    frames = data.frame_count(d.segment_length, d.num_frames, d.frame_rate)
    if frames:
      batch["frames"] = rng.normal(size=(batch_size, n, frames, d.frame_size, d.frame_size, 3)
                                   ).astype(np.float32)
    self.jax, self.config = jax, config
    mesh = train.Mesh()
    graphdef, state, schedules = train.init_state(config)
    self.graphdef = graphdef
    self.params = sum(x.size for x in jax.tree.leaves(
        nnx.state(nnx.merge(graphdef, state).model, nnx.Param)))
    self.state = mesh.replicate(state)
    self.key = jax.random.key(0)
    self.batch = mesh.put_batch(batch)
    self.step = jax.jit(train.make_train_step(graphdef, config, schedules["default"]),
                        in_shardings=(mesh.replicated, mesh.batch, mesh.replicated),
                        out_shardings=(mesh.replicated, mesh.replicated), donate_argnums=0)

  def compile(self) -> float:
    begin = time.perf_counter()
    self.step = self.step.lower(self.state, self.batch, self.key).compile()
    return time.perf_counter() - begin

  def run(self, steps: int) -> float:
    for _ in range(steps):
      self.state, metrics = self.step(self.state, self.batch, self.key)
    return float(self.jax.block_until_ready(metrics["loss"]))


class JaxInference(JaxStep):
  """`evaluate.separate_mixture` (the product's separation: mixture in, every
  source's waveform out, eval mode) on a fixed batch of the config's shapes."""

  def __init__(self, name: str, batch_size: int, compute_dtype: str = "float32"):
    super().__init__(name, batch_size, compute_dtype)
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from flax import nnx  # pylint: disable=g-import-not-at-top
    from avsep_jax import evaluate  # pylint: disable=g-import-not-at-top
    model = nnx.merge(self.graphdef, self.state).model
    model_graphdef, self.model_state = nnx.split(model)
    batch = dict(self.batch)
    batch["mixture"] = jnp.sum(batch.pop("sources"), axis=1)
    self.batch = batch
    config_json = self.config.to_json()
    self.step = self.jax.jit(lambda state, batch: evaluate.separate_mixture(
        model_graphdef, config_json, state, batch))

  def compile(self) -> float:
    begin = time.perf_counter()
    self.step = self.step.lower(self.model_state, self.batch).compile()
    return time.perf_counter() - begin

  def run(self, steps: int) -> float:
    for _ in range(steps):
      out = self.step(self.model_state, self.batch)
    return float(self.jax.numpy.abs(self.jax.block_until_ready(out)).mean())


def peak_rss_mb() -> float:
  """This process's peak resident memory (VmHWM), as the PyTorch worker reports its own."""
  for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1024
  return float("nan")


def peak_device_mb() -> float | None:
  """Peak bytes in use on the first accelerator (MB); None on the CPU backend."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.local_devices()[0]
  if device.platform == "cpu":
    return None
  stats = device.memory_stats() or {}
  return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None


def breakdown(name: str, batch_size: int, compute_dtype: str, repeats: int, steps: int) -> dict:
  """Where the JAX step's time goes: ms per call of the front end (STFT, warp,
  targets), the model's forward pass, its forward and backward pass (gradient
  of the mean of its outputs), and the whole train step, each jitted on its own
  with the same batch; median of `repeats` rounds of `steps` calls."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from avsep_jax import models  # pylint: disable=g-import-not-at-top
  from avsep_jax import train  # pylint: disable=g-import-not-at-top
  step = JaxStep(name, batch_size, compute_dtype)
  config, batch = step.config, step.batch
  model = nnx.merge(step.graphdef, jax.tree.map(jnp.copy, step.state)).model
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def outputs(params, rest, batch, features):
    net = nnx.merge(graphdef, params, rest)
    return models.layers.float32_outputs(net(train.model_inputs(batch, features["mix_mag"])))

  def mean_output(params, rest, batch, features):
    return sum(jnp.mean(x) for x in jax.tree.leaves(outputs(params, rest, batch, features)))

  front = jax.jit(lambda b: train.front_end(config, b["sources"], b["source_mask"])[2])
  features = front(batch)
  stages = {"front end": (front, (batch,)),
            "forward": (jax.jit(outputs), (params, rest, batch, features)),
            "forward + backward": (jax.jit(jax.grad(mean_output)),
                                   (params, rest, batch, features))}
  # Each entry runs k calls and waits for the last one.
  runs = {stage: (lambda k, fn=fn, args=args: jax.block_until_ready(
              [fn(*args) for _ in range(k)][-1])) for stage, (fn, args) in stages.items()}
  step.compile()
  runs["train step"] = step.run
  times = {}
  for stage, run in runs.items():
    run(1)  # compile (the stages) and warm up
    rounds = []
    for _ in range(repeats):
      begin = time.perf_counter()
      run(steps)
      rounds.append((time.perf_counter() - begin) / steps)
    times[stage] = statistics.median(rounds)
  return times


def serve_jax() -> None:
  step = None
  for line in sys.stdin:
    request = json.loads(line)
    if request["cmd"] == "setup":
      begin = time.perf_counter()
      kind = JaxInference if request.get("mode") == "inference" else JaxStep
      step = kind(request["model"], request["batch"], request.get("compute_dtype", "float32"))
      compile_s = step.compile()
      step.run(1)
      reply = {"params": step.params, "setup_s": time.perf_counter() - begin,
               "compile_s": compile_s, "backend": step.jax.default_backend()}
    elif request["cmd"] == "time":
      begin = time.perf_counter()
      loss = step.run(request["steps"])
      reply = {"seconds": time.perf_counter() - begin, "loss": loss}
    else:
      reply = {"peak_rss_mb": peak_rss_mb(), "peak_device_mb": peak_device_mb()}
    print(json.dumps(reply), flush=True)


class Worker:
  def __init__(self, argv: list[str], env=None):
    self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, env=env)

  def ask(self, **request) -> dict:
    self.send(**request)
    return self.receive()

  def send(self, **request) -> None:
    self.proc.stdin.write(json.dumps(request) + "\n")
    self.proc.stdin.flush()

  def receive(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"worker {self.proc.args} stopped (exit {self.proc.wait()})")
    reply = json.loads(line)
    if "error" in reply:
      raise RuntimeError(reply["error"])
    return reply

  def close(self):
    self.proc.stdin.close()
    self.proc.wait(timeout=60)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default="sop_cpu,sop_full,crn_cpu")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--torch_compile", action="store_true",
                      help="also time the PyTorch step under torch.compile")
  parser.add_argument("--inference", action="store_true",
                      help="time separation (eval-mode forward, waveforms out) "
                           "instead of the training step")
  parser.add_argument("--jax_bf16", action="store_true",
                      help="also time JAX with model.compute_dtype='bfloat16' (side jax_bf16)")
  parser.add_argument("--torch_python", default=str(TORCH_PYTHON),
                      help="interpreter with PyTorch for the twin (default: .venv-torch's)")
  parser.add_argument("--torch_device", default="cpu", choices=("cpu", "cuda"),
                      help="where the PyTorch twin runs; JAX uses its default backend")
  parser.add_argument("--breakdown", action="store_true",
                      help="JAX only: time the front end, forward, forward + backward and "
                           "the whole step apart (with --jax_bf16: in bfloat16)")
  parser.add_argument("--serve_jax", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.serve_jax:
    serve_jax()
    return
  if args.breakdown:
    import jax  # pylint: disable=g-import-not-at-top
    rows = []
    dtype = "bfloat16" if args.jax_bf16 else "float32"
    for name in args.models.split(","):
      times = breakdown(name, CONFIGS[name][2], dtype, args.repeats, args.steps)
      rows.append({"model": name, "batch": CONFIGS[name][2], "compute_dtype": dtype,
                   "ms": {k: 1e3 * v for k, v in times.items()}})
      print(f"\n{name} (batch {CONFIGS[name][2]}, {dtype}, JAX on {jax.default_backend()}): "
            "ms per call, median")
      for stage, seconds in times.items():
        print(f"  {stage:20s} {1e3 * seconds:9.1f}")
    backend = jax.default_backend()
    out = ROOT / "benchmarks" / "results" / (
        "breakdown_" + "_".join(args.models.split(",")) + ("_bf16" if args.jax_bf16 else "")
        + ("" if backend == "cpu" else f"_{backend}") + ".json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "backend": backend,
                               "device_kind": jax.devices()[0].device_kind,
                               "repeats": args.repeats, "steps": args.steps,
                               "results": rows}, indent=1) + "\n")
    print(f"\nwrote {out}")
    return
  if not shutil.which(args.torch_python):
    sys.exit(f"{args.torch_python} is missing: python3 -m venv .venv-torch && "
             ".venv-torch/bin/pip install -r benchmarks/requirements-torch.txt "
             "(or name an interpreter with PyTorch by --torch_python)")
  # Two processes share one accelerator: JAX must not take 75% of it up front.
  jax_env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
  results = []
  backend = None
  for name in args.models.split(","):
    batch = CONFIGS[name][2]
    jax_sides = ["jax"] + (["jax_bf16"] if args.jax_bf16 else [])
    sides = {side: Worker([sys.executable, "-m", "benchmarks.train_step", "--serve_jax"],
                          env=jax_env) for side in jax_sides}
    sides["torch"] = Worker([args.torch_python, "benchmarks/torch_reference.py", "--serve"])
    if args.torch_compile:
      sides["torch_compile"] = Worker([args.torch_python, "benchmarks/torch_reference.py",
                                       "--serve"])
    setup = {}
    for side, worker in sides.items():  # the workers set up (and compile) side by side
      worker.send(cmd="setup", model=name, batch=batch, compile=side == "torch_compile",
                  mode="inference" if args.inference else "train", device=args.torch_device,
                  compute_dtype="bfloat16" if side == "jax_bf16" else "float32")
    for side, worker in sides.items():
      setup[side] = worker.receive()
      print(f"{name} {side}: set up in {setup[side]['setup_s']:.1f} s, "
            f"{setup[side]['params']} parameters", flush=True)
    backend = setup["jax"]["backend"]
    counts = {side: s["params"] for side, s in setup.items()}
    if len(set(counts.values())) != 1:
      sys.exit(f"{name}: the twins differ in parameter count {counts}; fix torch_reference.py")
    times = {side: [] for side in sides}
    order = list(sides)
    for r in range(args.repeats):
      for side in (order if r % 2 == 0 else order[::-1]):
        times[side].append(sides[side].ask(cmd="time", steps=args.steps)["seconds"] / args.steps)
    row = {"model": name, "batch": batch, "params": counts["jax"],
           "jax_compile_s": setup["jax"]["compile_s"]}
    for side, worker in sides.items():
      median = statistics.median(times[side])
      peak = worker.ask(cmd="peak")
      row[side] = {"step_s_median": median, "step_s_min": min(times[side]),
                   "step_s_max": max(times[side]), "examples_per_s": batch / median,
                   "peak_rss_mb": peak["peak_rss_mb"],
                   "peak_device_mb": peak.get("peak_device_mb"),
                   "setup_s": setup[side]["setup_s"]}
      worker.close()
    for side in sides:
      for jax_side in jax_sides:
        if side not in jax_sides:
          row[f"{side}_over_{jax_side}"] = (row[side]["step_s_median"] /
                                             row[jax_side]["step_s_median"])
    results.append(row)
    print(f"\n{name} (batch {batch}, {row['params']} parameters; JAX on {backend}, PyTorch "
          f"on {args.torch_device}; JAX compile {row['jax_compile_s']:.1f} s)")
    print(f"  {'side':14s} {'ms/step (min-max)':>26s} {'examples/s':>11s} {'peak RSS MB':>12s}"
          f" {'peak device MB':>15s}")
    for side in sides:
      s = row[side]
      device_mb = "-" if s["peak_device_mb"] is None else f"{s['peak_device_mb']:.0f}"
      print(f"  {side:14s} {1e3 * s['step_s_median']:9.1f} ({1e3 * s['step_s_min']:.1f}-"
            f"{1e3 * s['step_s_max']:.1f}) {s['examples_per_s']:11.2f} {s['peak_rss_mb']:12.0f}"
            f" {device_mb:>15s}")
    for side in sides:
      for jax_side in jax_sides:
        if side not in jax_sides:
          print(f"  {side} time / {jax_side} time: {row[f'{side}_over_{jax_side}']:.2f}x",
                flush=True)
  tag = "_".join(args.models.split(",")) + ("_compile" if args.torch_compile else "") + (
      "" if backend == "cpu" and args.torch_device == "cpu" else "_gpu")
  kind = "inference" if args.inference else "train_step"
  out = ROOT / "benchmarks" / "results" / f"{kind}_{tag}.json"
  out.parent.mkdir(exist_ok=True)
  out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "mode": kind,
                             "jax_backend": backend, "torch_device": args.torch_device,
                             "repeats": args.repeats,
                             "steps": args.steps, "cpu_count": os.cpu_count(),
                             "results": results}, indent=1) + "\n")
  print(f"\nwrote {out}")


if __name__ == "__main__":
  main()
