"""Mix-and-separate examples: which clips a mixture uses, and loading it as arrays.

A mixture is described by a `MixtureSpec` (example indices in a split and the
first sample of each source's segment), so the same description serves random
training mixtures (drawn per step) and the fixed evaluation lists (saved as
JSON). `load_mixture` reads the clips from a TFDS data source (any dataset with
the project's feature contract) and returns one example of the batch contract:

  mixture      f32 [L]             sum of the sources / N (SoP's mixing)
  sources      f32 [N, L]          each clip's segment, in [-1, 1]
  crops        f32 [N, S, S, 3]    each source's detection box at the segment's
                                   centre frame, resized, ImageNet-normalised
  frames       f32 [N, T, F, F, 3] (only when asked) T frames spread over the
                                   segment, resized, ImageNet-normalised
  labels       i32 [N]             class ids
  source_mask  bool [N]            valid sources (False for padding: `pad_sources`)
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import json
import os
import pathlib

import numpy as np
from PIL import Image

from avsep_jax import files

# SoP's image normalisation (ImageNet statistics), on RGB in [0, 1].
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclasses.dataclass(frozen=True)
class MixtureSpec:
  """One mixture: example indices in the split and each segment's first sample."""
  indices: tuple[int, ...]
  offsets: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ClipIndex:
  """What mixing needs to know about a split without decoding clips.

  Attributes:
    labels: the (first) class id of each example.
    lengths: audio samples of each example.
    video_ids: each example's id (names mixtures in evaluation lists).
    allowed: the classes mixtures may use (None: all; SeCo's training classes).
  """
  labels: tuple[int, ...]
  lengths: tuple[int, ...]
  video_ids: tuple[str, ...]
  allowed: tuple[int, ...] | None = None

  @functools.cached_property
  def by_class(self) -> dict[int, list[int]]:
    """Example indices of each (allowed) class (built once: training draws from it)."""
    out: dict[int, list[int]] = {}
    for i, label in enumerate(self.labels):
      if self.allowed is None or label in self.allowed:
        out.setdefault(label, []).append(i)
    return out


def _nbytes(value) -> int:
  """Approximate memory held by a decoded example (arrays, bytes, nested lists/dicts)."""
  if isinstance(value, np.ndarray):
    if value.dtype == object:
      return value.nbytes + sum(_nbytes(v) for v in value.ravel())
    return value.nbytes
  if isinstance(value, (bytes, str)):
    return len(value)
  if isinstance(value, dict):
    return sum(_nbytes(v) for v in value.values())
  if isinstance(value, (list, tuple)):
    return sum(_nbytes(v) for v in value)
  return 8


class CachedSource:
  """Random access to `source` keeping the most recently read examples decoded.

  Reading one example of the embedded dataset (the whole record, every
  frame's JPEG included) and parsing it costs ~3 ms; random training mixtures
  keep coming back to the same few hundred clips, so a worker that keeps them
  spends its time on cutting segments and crops instead. The cache is bounded
  by `max_bytes` (least recently used examples leave first) and is not
  pickled: each grain worker process fills its own.
  """

  def __init__(self, source, max_bytes: int):
    self._source, self._max_bytes = source, int(max_bytes)
    self._cache: collections.OrderedDict = collections.OrderedDict()
    self._bytes = 0

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int):
    if index in self._cache:
      self._cache.move_to_end(index)
      return self._cache[index][0]
    example = self._source[index]
    size = _nbytes(example)
    if size <= self._max_bytes:
      self._cache[index] = (example, size)
      self._bytes += size
      while self._bytes > self._max_bytes:
        _, (_, dropped) = self._cache.popitem(last=False)
        self._bytes -= dropped
    return example

  @property
  def cached_bytes(self) -> int:
    return self._bytes

  @property
  def cached_indices(self) -> tuple[int, ...]:
    """Indices held, least recently used first."""
    return tuple(self._cache)

  def __getstate__(self):
    return {"_source": self._source, "_max_bytes": self._max_bytes}

  def __setstate__(self, state):
    self.__init__(state["_source"], state["_max_bytes"])


def write_json_atomic(path, payload) -> None:
  """Writes JSON so that no reader sees a half-written file (local or `gs://`)."""
  files.write_text_atomic(path, json.dumps(payload, indent=1))


def clip_index(source, cache_path: str | os.PathLike | None = None) -> ClipIndex:
  """Labels, lengths and ids of every example of a data source (read once, then cached).

  Args:
    source: a random-access source of examples (e.g. `tfds.data_source(...)`).
    cache_path: JSON file to reuse / write; None reads every time. The cache is
      trusted while its example count matches the source: give each dataset
      build its own path.

  Raises:
    ValueError: an example has no label (its index is named).
  """
  if cache_path is not None and os.path.exists(cache_path):
    with open(cache_path) as f:
      cached = json.load(f)
    if len(cached["labels"]) == len(source):
      return ClipIndex(tuple(cached["labels"]), tuple(cached["lengths"]),
                       tuple(cached["video_ids"]))
  labels, lengths, ids = [], [], []
  for i in range(len(source)):
    example = source[i]
    if len(example["labels"]) == 0:
      raise ValueError(f"example {i} ({example['video_id']!r}) has no label")
    labels.append(int(example["labels"][0]))
    lengths.append(int(len(example["audio"])))
    video_id = example["video_id"]
    ids.append(video_id.decode() if isinstance(video_id, bytes) else str(video_id))
  index = ClipIndex(tuple(labels), tuple(lengths), tuple(ids))
  if cache_path is not None:
    write_json_atomic(pathlib.Path(cache_path), dataclasses.asdict(index))
  return index


def sample_mixture(rng: np.random.Generator, index: ClipIndex, num_mix: int,
                   segment_length: int, same_class: bool = False) -> MixtureSpec:
  """A random training mixture: `num_mix` clips of distinct classes, random segments.

  With `same_class`, the clips are `num_mix` different clips of one random
  class instead (a class with fewer clips repeats some, at other segments).

  Raises:
    ValueError: the split has fewer than `num_mix` classes.
  """
  by_class = index.by_class
  if len(by_class) < num_mix:
    raise ValueError(f"num_mix={num_mix} needs that many classes; the split has {len(by_class)}")
  if same_class:
    clips = by_class[int(rng.choice(sorted(by_class)))]
    indices = tuple(int(i) for i in rng.choice(clips, num_mix, replace=len(clips) < num_mix))
  else:
    classes = rng.choice(sorted(by_class), num_mix, replace=False)
    indices = tuple(int(rng.choice(by_class[c])) for c in classes)
  offsets = tuple(int(rng.integers(0, max(index.lengths[i] - segment_length, 0) + 1))
                  for i in indices)
  return MixtureSpec(indices, offsets)


def read_companions(rng: np.random.Generator, source, index: ClipIndex, labels,
                    segment_length: int) -> np.ndarray:
  """For each label, a random segment of a random clip of that class (it may be the
  source's own clip): int16 `[N, segment_length]` (SeCo's "temp" segments)."""
  out = []
  for label in labels:
    i = int(rng.choice(index.by_class[int(label)]))
    offset = int(rng.integers(0, max(index.lengths[i] - segment_length, 0) + 1))
    audio = np.asarray(source[i]["audio"], np.int16)[offset:offset + segment_length]
    out.append(np.pad(audio, (0, segment_length - len(audio))))
  return np.stack(out)


def _resize(image: Image.Image, size: int) -> np.ndarray:
  return np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), np.uint8)


def normalise_images(pixels: np.ndarray) -> np.ndarray:
  """uint8 RGB `[..., 3]` -> float32, ImageNet-normalised (SoP's input scaling)."""
  return (pixels.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def denormalise_images(pixels: np.ndarray) -> np.ndarray:
  """`normalise_images` undone: uint8 `[..., H, W, 3]` for showing."""
  restored = (np.asarray(pixels, np.float32) * IMAGENET_STD + IMAGENET_MEAN) * 255.0
  return np.clip(np.round(restored), 0, 255).astype(np.uint8)


def _decode(jpeg: bytes, what: str) -> Image.Image:
  try:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
  except Exception as e:  # PIL raises several types for corrupt data
    raise ValueError(f"{what}: cannot decode JPEG ({e})") from e
  return image


def _box_crop(example, label: int, frame_idx: int, size: int, what: str,
              occurrence: int = 0) -> np.ndarray:
  """The class's detection box in the frame nearest `frame_idx` that has one.

  `occurrence`: which player of the class, counted left to right in that frame
  (an ensemble with two violins has two boxes of the class).
  """
  det = np.asarray(example["detections"]).reshape(-1, 7)
  rows = np.flatnonzero(det[:, 1].astype(int) == label)
  if len(rows) == 0:
    crops = example["object_crops"]
    if len(crops):  # no box for the class: the clip's packed crop
      return _resize(_decode(crops[0], f"{what} object crop"), size)
    return np.zeros((size, size, 3), np.uint8)  # nothing to see (e.g. audio-only data)
  near = rows[np.argmin(np.abs(det[rows, 0] - frame_idx) - det[rows, 2] * 1e-3)]
  frame_no = int(det[near, 0])
  if occurrence:
    there = rows[det[rows, 0] == frame_no]
    near = there[np.argsort(det[there, 3], kind="stable")][min(occurrence, len(there) - 1)]
  box = det[near, 3:]
  frames = example["frames"]
  if not 0 <= frame_no < len(frames):
    raise ValueError(f"{what}: detection row {near} names frame {frame_no} of {len(frames)}")
  frame = _decode(frames[frame_no], f"{what} frame {frame_no}")
  x1, y1, x2, y2 = (int(round(v)) for v in box)
  return _resize(frame.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))), size)


def load_mixture(source, spec: MixtureSpec, *, segment_length: int, crop_size: int,
                 num_frames: int = 0, frame_size: int = 224,
                 sample_rate: int = 11025) -> dict[str, np.ndarray]:
  """The batch-contract arrays of one mixture (see the module docstring).

  Equal to `finish(read_mixture(...))`; pipelines with worker processes call the
  two halves on either side of the process boundary, which then carries compact
  int16 audio and uint8 pictures instead of float32.

  Args:
    source: random-access examples with the project's feature contract.
    spec: which clips and where.
    segment_length: L, samples per source; clips shorter than that are zero-padded.
    crop_size: side of the object crops.
    num_frames: T frames per source, spread evenly over the segment (0: no `frames`).
    frame_size: side of the frames when `num_frames > 0`.
    sample_rate: of the audio, to place frames in time.
  """
  return finish(read_mixture(source, spec, segment_length=segment_length, crop_size=crop_size,
                              num_frames=num_frames, frame_size=frame_size,
                              sample_rate=sample_rate))


def read_mixture(source, spec: MixtureSpec, *, segment_length: int, crop_size: int,
                 num_frames: int = 0, frame_size: int = 224,
                 sample_rate: int = 11025) -> dict[str, np.ndarray]:
  """`load_mixture` before scaling: int16 `sources`, uint8 `crops`/`frames`, no `mixture`.

  An example with several labels and their separate `sources` (a duet) gives
  all of its sources: its own mixture with true references. Each source's
  crop is its class's detection box, and, since the frames show every
  player, each source's frames are its box in each frame.
  """
  sources, crops, frames, labels = [], [], [], []
  for index, offset in zip(spec.indices, spec.offsets):
    example = source[index]
    what = f"example {index} ({example['video_id']!r})"
    parts = [(np.asarray(example["audio"], np.int16), int(example["labels"][0]))]
    if len(example["labels"]) > 1:
      stems = np.asarray(example["sources"]) if "sources" in example else np.zeros((0, 0))
      if len(stems) != len(example["labels"]):
        raise ValueError(f"{what}: {len(example['labels'])} labels but {len(stems)} separate "
                         "sources; a multi-source example needs one source per label")
      parts = [(np.asarray(s, np.int16), int(c)) for s, c in zip(stems, example["labels"])]
    fps = float(example["fps"])
    centre_s = (offset + segment_length / 2) / sample_rate
    if num_frames:
      times = (offset + (np.arange(num_frames) + 0.5) * segment_length / num_frames
               ) / sample_rate
      count = len(example["frames"])
      if count == 0:
        raise ValueError(f"{what}: has no frames, but num_frames={num_frames} were asked for")
      picks = np.clip(np.round(times * fps).astype(int), 0, count - 1)
    for i, (audio, label) in enumerate(parts):
      audio = audio[offset:offset + segment_length]
      sources.append(np.pad(audio, (0, segment_length - len(audio))))
      labels.append(label)
      occurrence = [c for _, c in parts[:i]].count(label)    # e.g. the second violin
      crops.append(_box_crop(example, label, int(round(centre_s * fps)), crop_size, what,
                             occurrence))
      if num_frames:
        if len(parts) > 1:
          frames.append(np.stack([_box_crop(example, label, p, frame_size, what, occurrence)
                                  for p in picks]))
        else:
          frames.append(np.stack([_resize(_decode(example["frames"][p], f"{what} frame {p}"),
                                          frame_size) for p in picks]))
  out = {
      "sources": np.stack(sources),
      "crops": np.stack(crops),
      "labels": np.asarray(labels, np.int32),
      "source_mask": np.ones(len(labels), bool),
  }
  if num_frames:
    out["frames"] = np.stack(frames)
  return out


def pad_sources(raw: dict[str, np.ndarray], num_mix: int) -> dict[str, np.ndarray]:
  """`read_mixture` output with fewer sources padded to `num_mix` (`source_mask` False)."""
  pad = num_mix - len(raw["labels"])
  if pad <= 0:
    return raw
  out = {}
  for key, value in raw.items():
    filler = np.zeros((pad,) + value.shape[1:], value.dtype)  # silence, blank, label 0, False
    out[key] = np.concatenate([value, filler])
  return out


def finish(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`read_mixture` output (one example or a batch) -> the float32 batch contract."""
  out = dict(raw)
  out["sources"] = raw["sources"].astype(np.float32) / 32768.0      # [..., N, L]
  if "companions" in raw:
    out["companions"] = raw["companions"].astype(np.float32) / 32768.0
  count = np.maximum(raw["source_mask"].sum(-1, keepdims=True), 1).astype(np.float32)
  out["mixture"] = out["sources"].sum(-2) / count                   # SoP: sum / N
  out["crops"] = normalise_images(raw["crops"])
  if "frames" in raw:
    out["frames"] = normalise_images(raw["frames"])
  return out
