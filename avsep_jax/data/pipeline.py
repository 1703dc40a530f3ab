"""grain pipelines: random mix-and-separate training batches and fixed evaluation lists.

Training: an endless index stream, each index turned into a mixture by a seeded
random map (so element k is the same mixture on every run and after every
restore), sharded per process, batched, optionally made by worker processes,
then scaled to float32. The iterator's state (`get_state`/`set_state`) goes
into checkpoints.

Evaluation: a saved, deterministic list of mixtures per (dataset, split, N,
class subset, seed) — C(classes, N) class combinations x `per_combination`
samples, centre segments — so every system scores the same mixtures.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib

from absl import flags
from etils import epath
import grain
import numpy as np

from avsep_jax.data import mixtures

# Length of the training index stream: endless in practice (grain maps indices lazily).
_STREAM = 1 << 40


@dataclasses.dataclass(frozen=True)
class MixOptions:
  """What each mixture looks like (config fields of `dataset`).

  Training mixtures have `num_mix` sources, or, with `min_mix` set, a number
  drawn uniformly from [min_mix, num_mix] per mixture, padded to `num_mix`
  rows with `source_mask` False (silent sources, blank pictures, label 0).
  Drawing one number per batch instead (no padding) learned far slower:
  with the CRN CPU recipe, loss 0.348 against 0.315 after 300 steps.
  With `batch_counts` (see `batch_source_counts`), the count is fixed by the
  mixture's position in its batch instead, so every batch holds the same mix
  of counts and the train step can run each count's rows without padding.
  """
  num_mix: int = 2
  min_mix: int | None = None
  batch_counts: tuple[int, ...] | None = None
  segment_length: int = 65535
  crop_size: int = 224
  num_frames: int = 3       # frames per source, spread over the segment (0: crops only)
  frame_size: int = 224
  frame_rate: float = 0.0   # > 0: frames per second of segment instead of num_frames
  sample_rate: int = 11025
  # Training: each source also gets `companions`, a random segment of a random
  # clip of its class (SeCo's intra-modal consistency).
  class_companions: bool = False
  # Training: the share of mixtures made of clips of one class, which only
  # what each player does in time tells apart (their pictures and timbres are
  # the same).
  same_class_fraction: float = 0.0

  @property
  def frames_per_source(self) -> int:
    return frame_count(self.segment_length, self.num_frames, self.frame_rate, self.sample_rate)

  def read(self, source, spec: mixtures.MixtureSpec) -> dict[str, np.ndarray]:
    """Compact arrays (`mixtures.read_mixture`); `mixtures.finish` makes the batch."""
    return mixtures.read_mixture(source, spec, segment_length=self.segment_length,
                                 crop_size=self.crop_size, num_frames=self.frames_per_source,
                                 frame_size=self.frame_size, sample_rate=self.sample_rate)


def frame_count(segment_length: int, num_frames: int, frame_rate: float = 0.0,
                sample_rate: int = 11025) -> int:
  """Frames per source: `num_frames`, or with `frame_rate` > 0 that many per second.

  A rate keeps the frames' spacing in time the same for training segments
  and longer evaluation windows, which models reading motion need.
  """
  if frame_rate > 0:
    return max(1, round(segment_length / sample_rate * frame_rate))
  return num_frames


def batch_source_counts(min_mix: int, num_mix: int, batch_size: int) -> tuple[int, ...]:
  """Sources of the mixture at each batch position: every count in [min_mix, num_mix]
  in equal shares (as near as the batch size allows), ascending.

  E.g. `(2, 3, 8)` -> `(2, 2, 2, 2, 3, 3, 3, 3)`.
  """
  kinds = num_mix - min_mix + 1
  if not 1 <= min_mix <= num_mix or batch_size < kinds:
    raise ValueError(f"batch of {batch_size} cannot hold every source count in "
                     f"[{min_mix}, {num_mix}]")
  return tuple(min_mix + position * kinds // batch_size for position in range(batch_size))


class _RandomMixture(grain.transforms.RandomMap):
  """Stream index -> one random mixture (the rng is grain's, seeded per index)."""

  def __init__(self, source, index: mixtures.ClipIndex, options: MixOptions,
               shard_count: int = 1):
    self._source, self._index, self._options = source, index, options
    self._shard_count = shard_count

  def random_map(self, element, rng: np.random.Generator):
    options = self._options
    count = options.num_mix
    if options.batch_counts:  # element -> this shard's element -> position in its batch
      counts = options.batch_counts
      count = counts[(int(element) // self._shard_count) % len(counts)]
    elif options.min_mix is not None and options.min_mix < count:
      count = int(rng.integers(options.min_mix, options.num_mix + 1))
    # Drawn only when used, so the default stream stays what it was.
    same_class = (options.same_class_fraction > 0
                  and rng.random() < options.same_class_fraction)
    spec = mixtures.sample_mixture(rng, self._index, count, options.segment_length,
                                   same_class=same_class)
    raw = options.read(self._source, spec)
    if options.class_companions:
      raw["companions"] = mixtures.read_companions(rng, self._source, self._index,
                                                   raw["labels"], options.segment_length)
    return mixtures.pad_sources(raw, options.num_mix)


def train_dataset(source, index: mixtures.ClipIndex, options: MixOptions, *, batch_size: int,
                  seed: int, shard_index: int = 0, shard_count: int = 1,
                  num_workers: int = 0) -> grain.IterDataset:
  """Endless batches of random mixtures for one process.

  Args:
    source: the training split (random access, e.g. `tfds.data_source`).
    index: `mixtures.clip_index(source)`.
    options: mixture shape.
    batch_size: per-process batch size.
    seed: the stream's seed (element k is the same mixture for the same seed).
    shard_index, shard_count: this process's share of the stream
      (`jax.process_index()`, `jax.process_count()`): disjoint elements.
    num_workers: grain worker processes (0: in this process). Batches are
      formed before the stream is split among workers, so the batches are the
      same for any worker count (a saved iterator state belongs to one count).

  Returns:
    An `IterDataset` of dicts of `[batch_size, ...]` numpy arrays (the batch contract).
  """
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
  if not 0.0 <= options.same_class_fraction <= 1.0:
    raise ValueError(f"same_class_fraction={options.same_class_fraction} must be in [0, 1]")
  if options.min_mix is not None and not 1 <= options.min_mix <= options.num_mix:
    raise ValueError(f"min_mix={options.min_mix} must be in [1, num_mix={options.num_mix}]")
  if options.batch_counts and (len(options.batch_counts) != batch_size or
                               not all(1 <= c <= options.num_mix for c in options.batch_counts)):
    raise ValueError(f"batch_counts={options.batch_counts} needs one count in [1, num_mix="
                     f"{options.num_mix}] per batch position (batch_size={batch_size})")
  # Random map first, then the shard: element k's rng is seeded by its index in the
  # whole stream, so processes get disjoint elements, not the same ones.
  ds = grain.MapDataset.range(_STREAM).random_map(
      _RandomMixture(source, index, options, shard_count), seed=seed)
  ds = ds[shard_index::shard_count].batch(batch_size, drop_remainder=True).to_iter_dataset()
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags: outside an absl
      flags.FLAGS.mark_as_parsed()   # app (tests, notebooks) they keep their defaults
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  # Scaling to float32 after the process boundary: workers send int16 audio and
  # uint8 pictures, a quarter of the bytes.
  ds = ds.map(mixtures.finish)
  return ds


def eval_mixture_specs(index: mixtures.ClipIndex, num_mix: int, segment_length: int, *,
                       seed: int, per_combination: int = 10,
                       class_subset: tuple[int, ...] | None = None) -> list[mixtures.MixtureSpec]:
  """The protocol's fixed list: every class combination x `per_combination` centre segments."""
  by_class = index.by_class
  classes = sorted(by_class if class_subset is None else class_subset)
  missing = [c for c in classes if c not in by_class]
  if missing:
    raise ValueError(f"class_subset names classes with no clip in the split: {missing}")
  rng = np.random.default_rng([seed, num_mix])
  specs = []
  for combo in itertools.combinations(classes, num_mix):
    for _ in range(per_combination):
      indices = tuple(int(rng.choice(by_class[c])) for c in combo)
      offsets = tuple(max(index.lengths[i] - segment_length, 0) // 2 for i in indices)
      specs.append(mixtures.MixtureSpec(indices, offsets))
  return specs


def multi_source_specs(index: mixtures.ClipIndex, segment_length: int
                       ) -> list[mixtures.MixtureSpec]:
  """Every example of a split as its own mixture (duets): the centre segment of each."""
  return [mixtures.MixtureSpec((i,), (max(length - segment_length, 0) // 2,))
          for i, length in enumerate(index.lengths)]


def eval_list_path(folder: str | pathlib.Path, dataset: str, split: str, num_mix: int, *,
                   segment_length: int, per_combination: int, seed: int,
                   class_subset: tuple[int, ...] | None = None) -> epath.Path:
  """Where the list of (dataset, split, N, segment, count, class subset, seed) lives.

  Every setting that changes the list is in the file name (e.g.
  `synthetic_music-small_test_2mix_len65535_per2_seed0.json`), so scoring with
  another `eval.segment_length` or `per_combination` makes its own list instead
  of clashing with a saved one.
  """
  name = (f"{dataset.replace('/', '-')}_{split}_{num_mix}mix_len{segment_length}"
          f"_per{per_combination}_seed{seed}")
  if class_subset is not None:
    name += "_classes-" + "-".join(str(c) for c in sorted(class_subset))
  return epath.Path(folder) / f"{name}.json"


def eval_mixture_list(path: str | pathlib.Path, index: mixtures.ClipIndex, num_mix: int,
                      segment_length: int, *, seed: int, per_combination: int = 10,
                      class_subset: tuple[int, ...] | None = None) -> list[mixtures.MixtureSpec]:
  """The saved list at `path` (JSON: video ids + offsets), written on first use.

  The file names clips by video id, so it stays valid if a dataset is rebuilt
  with its examples in another order.

  Raises:
    ValueError: the file was made with other settings, or names clips the split lacks.
  """
  path = epath.Path(path)  # local or gs://
  settings = {"num_mix": num_mix, "segment_length": segment_length, "seed": seed,
              "per_combination": per_combination,
              "class_subset": None if class_subset is None else list(class_subset)}
  position = {v: i for i, v in enumerate(index.video_ids)}
  if path.exists():
    saved = json.loads(path.read_text())
    if saved.get("settings") != settings:
      raise ValueError(f"{path}: made with {saved.get('settings')}, asked for {settings}")
    try:
      return [mixtures.MixtureSpec(tuple(position[v] for v in m["video_ids"]), tuple(m["offsets"]))
              for m in saved["mixtures"]]
    except KeyError as e:
      raise ValueError(f"{path}: names clip {e} that the split does not have") from e
  specs = eval_mixture_specs(index, num_mix, segment_length, seed=seed,
                             per_combination=per_combination, class_subset=class_subset)
  mixtures.write_json_atomic(path, {"settings": settings, "mixtures": [
      {"video_ids": [index.video_ids[i] for i in s.indices], "offsets": list(s.offsets)}
      for s in specs]})
  return specs


def eval_dataset(source, specs: list[mixtures.MixtureSpec], options: MixOptions, *,
                 batch_size: int) -> grain.IterDataset:
  """The listed mixtures in order, batched (the last batch may be smaller)."""
  ds = grain.MapDataset.source(specs).map(lambda spec: options.read(source, spec))
  return ds.to_iter_dataset().batch(batch_size, drop_remainder=False).map(mixtures.finish)
