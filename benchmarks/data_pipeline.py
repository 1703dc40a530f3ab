"""Throughput of the grain mix-and-separate training pipeline (examples per second).

Reads `synthetic_music/small` (built first if absent) and times the training
stream with 0 (in-process), 1 and 2 grain worker processes, for the CPU
default shapes (32767-sample segments, 64 px crops) and the paper shapes
(65535 samples, 224 px crops, 3 frames per source), after a warm-up batch.

  .venv/bin/python benchmarks/data_pipeline.py [--data_dir DIR] [--seconds 20]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import time

from avsep_jax import data

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHAPES = {
    "cpu_default": data.MixOptions(num_mix=2, segment_length=32767, crop_size=64, num_frames=0),
    "paper": data.MixOptions(num_mix=2, segment_length=65535, crop_size=224, num_frames=3,
                             frame_size=224),
}


def examples_per_second(split, index, options, *, batch_size, workers, seconds):
  iterator = iter(data.train_dataset(split, index, options, batch_size=batch_size, seed=0,
                                     num_workers=workers))
  next(iterator)  # warm-up: worker start-up and first reads
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += batch_size
  return count / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--dataset", default="synthetic_music/small")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--seconds", type=float, default=20.0)
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_pipeline.json"))
  args = parser.parse_args()

  data.prepare_dataset(args.dataset, args.data_dir)
  split = data.open_split(args.dataset, "train", args.data_dir)
  index = data.clip_index(split)
  rows = []
  for shape, options in SHAPES.items():
    for workers in (0, 1, 2):
      rate = examples_per_second(split, index, options, batch_size=args.batch_size,
                                 workers=workers, seconds=args.seconds)
      rows.append({"shapes": shape, "workers": workers, "examples_per_s": rate})
      print(f"{shape:12s} workers={workers}: {rate:7.1f} examples/s", flush=True)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "date": datetime.date.today().isoformat(), "dataset": args.dataset,
      "batch_size": args.batch_size, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
      "shapes": {k: vars(v) if hasattr(v, "__dict__") else str(v) for k, v in SHAPES.items()},
      "rows": rows}, indent=2, default=str))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
