"""Users' downloaded videos -> examples of the project's feature contract.

The parts every real-data builder shares (`music`; URMP, VGGSound and AudioSet
reuse them):

- `find_videos`: the recordings in a `manual_dir`, in any of the layouts users
  have (see `LAYOUTS`);
- `make_examples`: one recording -> clips of `clip_seconds` (audio resampled
  to 11025 Hz mono, frames at `fps`, detection rows on the stored frames, one
  packed object crop per instrument);
- `BuildReport`: files that cannot be used are counted and listed with the
  reason (or, with `strict`, stop the build), so a build never lacks examples
  silently;
- `assign_splits`: splits from the layout where it has them, else seeded
  per-class splits of whole recordings (clips of one recording never straddle
  splits).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re

from etils import epath
import numpy as np
from PIL import Image

from data_builders import media

SAMPLE_RATE = media.SAMPLE_RATE
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg", ".m4a", ".aac")

LAYOUTS = {
    "videos": "video files `<class>/<id>.mp4` (any of `solo/`, `duet/` or no "
              "top folder; a duet's folder names its two classes, e.g. "
              "`duet/acoustic_guitar violin/<id>.mp4`), as the MUSIC JSON lists download",
    "frames_audio": "extracted `frames/<class>/<id>.mp4/000001.jpg` (at `frames_fps`) and "
                    "`audio/<class>/<id>.mp3|.wav` (the Sound-of-Pixels / SeCo layout)",
    "csv": "CSV index files with rows `AUDIO_PATH,FRAMES_PATH,DETECTION_PATH` (the IAL-CMS "
           "layout): `train.csv`, `val.csv`, `test.csv` give the splits; the class is the "
           "audio file's folder",
    "seco_pickle": "SeCo's `train.pkl` / `test.pkl` with `frames/<class>/<index>.mp4/` at "
                   "12 fps (only with --allow_pickle: unpickling runs code from the file)",
}

SPLIT_FILES = {"train": "train", "val": "validation", "validation": "validation",
               "test": "test"}


@dataclasses.dataclass(frozen=True)
class VideoSource:
  """One recording found in `manual_dir`.

  Attributes:
    video_id: unique id (the file stem, e.g. the YouTube id).
    labels: its instruments' class names (one for a solo).
    video: a video file (frames, and the audio when `audio` is None).
    audio: an audio file.
    frames_dir: a folder of extracted frames.
    detections: a detection `.npy` (`[frame_idx, class_id, score, x1, y1, x2, y2]`).
    split: the split the layout puts it in, or None.
    stems: one audio file per label, in the labels' order (ensembles with
      separately recorded parts, e.g. URMP): the clip's `sources`, and their
      sum its `audio`.
    samples: the audio itself (11025 Hz mono, float in [-1, 1] or int16)
      instead of a file (SeCo's pickles).
    frames_fps: the rate of `frames_dir` when it is not `ClipOptions.frames_fps`.
  """
  video_id: str
  labels: tuple[str, ...]
  video: str | None = None
  audio: str | None = None
  frames_dir: str | None = None
  detections: str | None = None
  split: str | None = None
  stems: tuple[str, ...] = ()
  samples: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
  frames_fps: float | None = None


@dataclasses.dataclass(frozen=True)
class ClipOptions:
  """How recordings become examples.

  Attributes:
    clip_seconds: examples are consecutive clips of this length; a shorter
      tail is kept when at least `min_seconds` long.
    min_seconds: recordings (and tails) shorter than this are not used: the
      default is one 65535-sample evaluation window.
    fps: stored frame rate.
    frame_short_side: stored frames are resized to this shorter side (pixels).
    frames_fps: rate at which extracted frame folders were written.
    crop_size: longer side of the packed object crops (pixels).
    detection_fps: rate of the frames the detector ran on (its `frame_idx`);
      0: `frames_fps` for frame folders, `fps` for videos.
    detection_index_base: the detector's first frame index (1 when it counted
      `000001.jpg` as frame 1).
  """
  clip_seconds: float = 10.0
  min_seconds: float = 65535 / SAMPLE_RATE
  fps: float = 8.0
  frame_short_side: int = 256
  frames_fps: float = 8.0
  crop_size: int = 256
  detection_fps: float = 0.0
  detection_index_base: int = 0


class BadFile(media.MediaError):
  """A file of the manual_dir that the build cannot use (named, with the reason)."""


@dataclasses.dataclass
class BuildReport:
  """Files skipped by a build, each with its reason; `strict` raises at the first."""
  strict: bool = False
  bad: list = dataclasses.field(default_factory=list)      # [(path, reason)]
  notes: list = dataclasses.field(default_factory=list)    # [str]: e.g. listed, not found

  def add(self, error: media.MediaError):
    if self.strict:
      raise error
    self.bad.append((error.path, error.reason))

  def text(self) -> str:
    lines = [f"# {len(self.bad)} files skipped"]
    lines += [f"{path}\t{reason}" for path, reason in self.bad]
    lines += [f"# note: {note}" for note in self.notes]
    return "\n".join(lines) + "\n"


def split_class_names(name: str, class_names) -> tuple[str, ...] | None:
  """A folder name -> its class names: 'violin', 'acoustic_guitar violin' (a duet), or
  'acoustic_guitar_violin' (matched against the class list); None if it names none."""
  known = set(class_names)
  if name in known:
    return (name,)
  parts = name.split()
  if len(parts) > 1:
    return tuple(parts) if all(p in known for p in parts) else None
  # Underscore-joined: try every split point (class names contain underscores).
  for cut in (m.start() for m in re.finditer("_", name)):
    left, right = name[:cut], name[cut + 1:]
    if left in known and right in known:
      return (left, right)
  return None


def csv_rows(path, **reader_options):
  """The rows (lists of str) of a CSV file, local or `gs://`, one at a time."""
  return csv.reader(io.StringIO(epath.Path(path).read_text(), newline=""), **reader_options)


def files_under(root: epath.Path) -> list[epath.Path]:
  """Every file below `root`, sorted (local folders and `gs://` alike: epath has no rglob)."""
  return sorted(folder / name for folder, _, names in root.walk() for name in names)


def _detection_file(manual_dir: epath.Path, video_id: str, stem_with_ext: str):
  for folder in ("detections", "detection_results"):
    for name in (f"{stem_with_ext}.npy", f"{video_id}.npy"):
      path = manual_dir / folder / name
      if path.exists():
        return str(path)
  return None


SECO_PICKLES = ("train.pkl", "test.pkl")
SECO_FRAMES_FPS = 12.0


def read_seco_pickles(root: epath.Path, class_names, report: BuildReport,
                      allow_pickle: bool) -> list[VideoSource]:
  """SeCo's `train.pkl` / `test.pkl` (clips `{category, index, audio}`; the test file
  `{data: [...], samples: [...]}`) with frames in `frames/<category>/<index>.mp4/`
  at 12 fps. Unpickling runs code from the file, so it needs `allow_pickle`."""
  import pickle  # pylint: disable=g-import-not-at-top
  paths = [root / name for name in SECO_PICKLES if (root / name).exists()]
  if not paths:
    return []
  if not allow_pickle:
    raise ValueError(f"{paths[0]}: SeCo pickles found; unpickling runs code stored in the "
                     "file, so it is off by default. Pass --allow_pickle (builder argument "
                     "allow_pickle=True) if you trust these files")
  out = []
  for path in paths:
    with path.open("rb") as handle:
      payload = pickle.load(handle)   # opted in by the user (allow_pickle)
    clips = payload["data"] if isinstance(payload, dict) else payload
    split = "train" if path.name == "train.pkl" else "test"
    for k, clip in enumerate(clips):
      try:
        category, index, samples = str(clip["category"]), str(clip["index"]), clip["audio"]
      except (TypeError, KeyError) as e:
        report.add(BadFile(f"{path}[{k}]", f"expected a dict with category, index, audio ({e})"))
        continue
      if category not in class_names:
        report.notes.append(f"{path}[{k}]: category {category!r} is not a class; skipped")
        continue
      out.append(VideoSource(f"{category}-{index}", (category,),
                             frames_dir=str(root / "frames" / category / f"{index}.mp4"),
                             split=split, samples=np.asarray(samples),
                             frames_fps=SECO_FRAMES_FPS))
  return out


def find_videos(manual_dir, class_names, report: BuildReport,
                allow_pickle: bool = False) -> list[VideoSource]:
  """The recordings under `manual_dir` (any layout of `LAYOUTS`), sorted by id.

  Folders whose name is not a class (or a duet of classes) of `class_names`
  are noted in `report.notes` and skipped. Detection files are looked up in
  `manual_dir/detections/` (or `detection_results/`) as `<id>.npy` or
  `<id>.mp4.npy` unless the CSV names them.

  Raises:
    ValueError: `manual_dir` is missing or holds no layout this reads.
  """
  root = epath.Path(manual_dir)
  if not root.is_dir():
    raise ValueError(f"manual_dir {root} does not exist; see the dataset's download "
                     "instructions in README.md")
  pickled = read_seco_pickles(root, class_names, report, allow_pickle)
  if pickled:
    return pickled
  found: dict[str, VideoSource] = {}
  ignored = set()

  def add(source: VideoSource):
    if source.video_id in found:
      report.notes.append(f"{source.video_id}: found twice; kept the first")
      return
    found[source.video_id] = source

  csvs = sorted(p for p in root.glob("*.csv") if p.stem.lower() in SPLIT_FILES)
  for path in csvs:
    split = SPLIT_FILES[path.stem.lower()]
    for line_no, row in enumerate(csv_rows(path), 1):
      if not row or row[0].strip().upper() == "AUDIO_PATH":
        continue
      if len(row) < 2:
        report.add(BadFile(f"{path}:{line_no}", "expected AUDIO_PATH,FRAMES_PATH"
                                                "[,DETECTION_PATH]"))
        continue
      audio, frames = (root / row[0].strip()), (root / row[1].strip())
      labels = split_class_names(audio.parent.name, class_names)
      if labels is None:
        ignored.add(audio.parent.name)
        continue
      det = row[2].strip() if len(row) > 2 and row[2].strip() else None
      add(VideoSource(frames.name.split(".")[0], labels, audio=str(audio),
                      frames_dir=str(frames), detections=str(root / det) if det else None,
                      split=split))

  frames_root, audio_root = root / "frames", root / "audio"
  if not csvs and frames_root.is_dir() and audio_root.is_dir():
    for class_dir in sorted(p for p in frames_root.iterdir() if p.is_dir()):
      labels = split_class_names(class_dir.name, class_names)
      if labels is None:
        ignored.add(class_dir.name)
        continue
      for frames in sorted(p for p in class_dir.iterdir() if p.is_dir()):
        video_id = frames.name.split(".")[0]
        audios = [audio_root / class_dir.name / f"{video_id}{s}" for s in AUDIO_SUFFIXES]
        audio = next((a for a in audios if a.exists()), None)
        if audio is None:
          report.add(BadFile(frames, f"no audio file audio/{class_dir.name}/{video_id}.mp3 "
                                     "(or .wav, ...)"))
          continue
        add(VideoSource(video_id, labels, audio=str(audio), frames_dir=str(frames),
                        detections=_detection_file(root, video_id, frames.name)))

  if not csvs and not frames_root.is_dir():
    tops = [root / "solo", root / "duet"] if any(
        (root / t).is_dir() for t in ("solo", "duet")) else [root]
    for top in (t for t in tops if t.is_dir()):
      for class_dir in sorted(p for p in top.iterdir() if p.is_dir()):
        labels = split_class_names(class_dir.name, class_names)
        if labels is None:
          ignored.add(class_dir.name)
          continue
        for video in sorted(p for p in class_dir.iterdir()
                            if p.suffix.lower() in VIDEO_SUFFIXES):
          add(VideoSource(video.stem, labels, video=str(video),
                          detections=_detection_file(root, video.stem, video.name)))

  for name in sorted(ignored):
    report.notes.append(f"folder {name!r} is not a class of this dataset; skipped")
  if not found and not report.bad:
    raise ValueError(f"manual_dir {root} holds no recordings in a layout this builder reads:\n"
                     + "\n".join(f"  - {k}: {v}" for k, v in LAYOUTS.items()))
  return [found[k] for k in sorted(found)]


def _group_rng(seed: int, labels: tuple[str, ...]) -> np.random.Generator:
  """The seeded generator of one class's (or class combination's) split."""
  return np.random.default_rng([seed, *map(ord, "|".join(labels))])


def assign_splits(videos: list[VideoSource], fractions: dict[str, float],
                  seed: int, by_class: bool = True) -> dict[str, list[VideoSource]]:
  """`{split: videos}`: the layout's splits where every video has one, else per
  class (the labels' tuple; with `by_class` False, all videos as one group) a
  seeded shuffle cut by `fractions` (each split gets at least one recording of
  a group with enough of them)."""
  if videos and all(v.split for v in videos):
    out = {}
    for v in videos:
      out.setdefault(v.split, []).append(v)
    return out
  out = {name: [] for name in fractions}
  groups: dict[tuple, list] = {}
  for v in videos:
    groups.setdefault(v.labels if by_class else (), []).append(v)
  names = list(fractions)
  weights = np.asarray([fractions[n] for n in names], np.float64)
  for labels in sorted(groups):
    group = groups[labels]
    order = _group_rng(seed, labels).permutation(len(group))
    counts = np.floor(weights / weights.sum() * len(group)).astype(int)
    counts[(counts == 0) & (weights > 0)] = 1     # every split gets one of each class ...
    while counts.sum() > len(group):               # ... as far as there are enough
      k = int(np.argmax(counts)) if counts[0] <= 1 else 0
      counts[k] -= 1
    counts[0] += len(group) - counts.sum()         # the rest to the first (train)
    start = 0
    for name, count in zip(names, counts):
      out[name].extend(group[i] for i in order[start:start + count])
      start += count
  return {k: sorted(v, key=lambda x: x.video_id) for k, v in out.items()}


def load_detections(path) -> np.ndarray:
  """A detection `.npy`: float32 `[M, 7]` rows `[frame_idx, class_id, score, x1, y1, x2, y2]`.

  Never unpickles. Raises `BadFile` for a missing or unreadable file, the
  wrong shape, non-finite values or boxes with x2 < x1 or y2 < y1.
  """
  try:
    rows = np.load(io.BytesIO(epath.Path(path).read_bytes()), allow_pickle=False)
  except FileNotFoundError as e:
    raise BadFile(path, "detection file is missing") from e
  except (ValueError, OSError) as e:
    raise BadFile(path, f"cannot read detection array ({e})") from e
  if rows.size == 0:
    return np.zeros((0, 7), np.float32)
  if rows.ndim != 2 or rows.shape[1] != 7:
    raise BadFile(path, f"detection array has shape {rows.shape}; expected [M, 7] rows "
                        "[frame_idx, class_id, score, x1, y1, x2, y2]")
  rows = rows.astype(np.float32)
  if not np.isfinite(rows).all():
    raise BadFile(path, "detection array has non-finite values")
  if (rows[:, 5] < rows[:, 3]).any() or (rows[:, 6] < rows[:, 4]).any():
    raise BadFile(path, "detection array has boxes with x2 < x1 or y2 < y1")
  return rows


def _boxes_per_frame(rows, label_ids, count: int, scale, stored_size, source_rate: float,
                     fps: float, base: int, what: str) -> np.ndarray:
  """Detector rows -> rows on the stored frames `0..count-1`, `class_id` = our label.

  Per stored frame: when the detector's classes are ours (every label has
  rows somewhere), each label's best m boxes (m: how often the label occurs,
  e.g. two violins), left to right; otherwise the recording's number of best
  boxes of any class, left to right, given to the labels in their order (a
  solo: the best box). No rows at all: the whole frame, or for several
  players equal vertical strips left to right, score 0.
  """
  width, height = stored_size
  n = len(label_ids)
  if not len(rows):
    strips = [(width * i / n, width * (i + 1) / n) for i in range(n)]
    return np.asarray([[k, lab, 0.0, x1, 0, x2, height] for k in range(count)
                       for lab, (x1, x2) in zip(label_ids, strips)], np.float32).reshape(-1, 7)
  frame_of = np.round((rows[:, 0] - base) / source_rate * fps).astype(int)
  boxes = rows[:, 3:7] * np.asarray([scale[0], scale[1], scale[0], scale[1]], np.float32)
  boxes = np.clip(boxes, 0, [width, height, width, height])
  classes = rows[:, 1].astype(int)
  class_aware = all((classes == lab).any() for lab in label_ids)
  best_first = lambda idx: idx[np.argsort(-rows[idx, 2], kind="stable")]
  left_to_right = lambda idx: idx[np.argsort(boxes[idx, 0], kind="stable")]
  out = []
  for k in range(count):
    here = np.flatnonzero(frame_of == k)
    if class_aware:
      for lab in sorted(set(label_ids)):
        top = left_to_right(best_first(here[classes[here] == lab])[:label_ids.count(lab)])
        out.extend([k, lab, rows[i, 2], *boxes[i]] for i in top)
    elif len(here) >= n:
      top = left_to_right(best_first(here)[:n])
      out.extend([k, lab, rows[i, 2], *boxes[i]] for lab, i in zip(label_ids, top))
  if not out:
    raise BadFile(what, "no detection row falls on a stored frame (check detection_fps "
                        "and detection_index_base)")
  return np.asarray(out, np.float32)


def _packed_crops(det, label_ids, jpegs, size: int) -> tuple[list[bytes], list[int]]:
  """One crop per source: in the frame of its label's best box, the source's
  occurrence of the label counted left to right (two violins: first, second)."""
  crops, crop_rows = [], []
  for i, lab in enumerate(label_ids):
    mine = np.flatnonzero(det[:, 1] == lab)
    if not len(mine):
      continue
    frame = det[mine[np.argmax(det[mine, 2])], 0]
    there = mine[det[mine, 0] == frame]
    there = there[np.argsort(det[there, 3], kind="stable")]
    row = there[min(label_ids[:i].count(lab), len(there) - 1)]
    crops.append(_crop(jpegs[int(frame)], det[row, 3:], size))
    crop_rows.append(int(row))
  return crops, crop_rows


def _crop(jpeg: bytes, box, size: int) -> bytes:
  image = Image.open(io.BytesIO(jpeg)).convert("RGB")
  x1, y1, x2, y2 = (int(round(v)) for v in box)
  crop = image.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))
  crop.thumbnail((size, size), Image.BILINEAR)
  return media.encode_jpeg(crop)


def make_examples(video: VideoSource, options: ClipOptions, class_names
                  ) -> list[tuple[str, dict]]:
  """One recording -> `(key, example)` for each of its clips.

  Raises:
    media.MediaError: an undecodable or truncated file, no audio or video
      stream, NaN/inf or all-zero audio, audio shorter than
      `options.min_seconds`, or a bad detection file (`BadFile`).
  """
  label_ids = [list(class_names).index(name) for name in video.labels]
  stems = None
  if video.stems:
    audio_path = video.stems[0]
    parts = [media.read_audio(path) for path in video.stems]
    stems = np.stack([part[:min(map(len, parts))] for part in parts])
    audio = np.clip(stems.astype(np.int32).sum(0), -32768, 32767).astype(np.int16)
  elif video.samples is not None:
    audio_path = f"{video.video_id} (samples)"
    samples = np.asarray(video.samples)
    if samples.ndim != 1:
      raise BadFile(audio_path, f"audio array has shape {samples.shape}; expected [L] mono")
    audio = (samples if samples.dtype == np.int16 else
             np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16))
  else:
    audio_path = video.audio or video.video
    audio = media.read_audio(audio_path)
  if not np.any(audio):
    raise BadFile(audio_path, "audio is silent (every sample is 0)")
  seconds = len(audio) / SAMPLE_RATE
  if seconds < options.min_seconds:
    raise BadFile(audio_path, f"audio is {seconds:.2f} s, shorter than the "
                              f"{options.min_seconds:.2f} s a clip needs")
  if video.frames_dir:
    folder_fps = video.frames_fps or options.frames_fps
    frames = media.read_frame_folder(video.frames_dir, options.fps, folder_fps,
                                     options.frame_short_side)
    source_rate = options.detection_fps or folder_fps
  else:
    frames = media.read_video_frames(video.video, options.fps, options.frame_short_side)
    source_rate = options.detection_fps or options.fps
  scale = (frames.stored_size[0] / frames.source_size[0],
           frames.stored_size[1] / frames.source_size[1])
  rows = load_detections(video.detections) if video.detections else np.zeros((0, 7))
  boxes = _boxes_per_frame(rows, label_ids, len(frames.jpegs), scale, frames.stored_size,
                           source_rate, options.fps, options.detection_index_base,
                           video.detections or video.video_id)
  clip_len = int(round(options.clip_seconds * SAMPLE_RATE))
  min_len = int(np.ceil(options.min_seconds * SAMPLE_RATE))
  examples = []
  for index, start in enumerate(range(0, len(audio), clip_len)):
    clip = audio[start:start + clip_len]
    if len(clip) < min_len:
      break
    first = int(round(start / SAMPLE_RATE * options.fps))
    stop = min(len(frames.jpegs), int(round((start + len(clip)) / SAMPLE_RATE * options.fps)))
    if stop <= first:
      break                                   # the video ends before the audio
    det = boxes[(boxes[:, 0] >= first) & (boxes[:, 0] < stop)].copy()
    det[:, 0] -= first
    crops, crop_rows = _packed_crops(det, label_ids, frames.jpegs[first:stop], options.crop_size)
    key = f"{video.video_id}_{index:03d}"
    examples.append((key, {
        "audio": clip,
        "sources": (np.zeros((0, len(clip)), np.int16) if stems is None
                    else stems[:, start:start + len(clip)]),
        "labels": label_ids,
        "frames": frames.jpegs[first:stop],
        "fps": np.float32(options.fps),
        "detections": det,
        "object_crops": crops,
        "object_crop_rows": np.asarray(crop_rows, np.int32),
        "video_id": key,
    }))
  return examples


def write_split_file(path, splits: dict[str, list[str]]) -> None:
  """The recording ids of each split as JSON `{split: [video_id, ...]}`."""
  epath.Path(path).write_text(json.dumps(splits, indent=1) + "\n")


@dataclasses.dataclass(frozen=True)
class ListedClip:
  """A row of a published clip list (VGGSound, AudioSet): which clip, its labels, split."""
  youtube_id: str
  start_seconds: float
  labels: tuple[str, ...]
  split: str | None = None

  def stems(self) -> tuple[str, ...]:
    """File stems downloaders commonly give the clip."""
    start = int(round(self.start_seconds))
    return (f"{self.youtube_id}_{start:06d}", f"{self.youtube_id}_{start}",
            f"{self.youtube_id}_{self.start_seconds:.3f}", f"Y{self.youtube_id}",
            self.youtube_id)


def find_listed_clips(manual_dir, listed: list[ListedClip], class_names,
                      report: BuildReport) -> list[VideoSource]:
  """The clips of a published list found as video files anywhere under `manual_dir`.

  A clip is kept when exactly one of its labels is a class of `class_names`
  (a single instrument the query can name); its file is looked up by the
  stems `ListedClip.stems` gives. Listed clips without a file (videos go
  offline) and clips with several of the classes are counted in
  `report.notes`, not as bad files.
  """
  root = epath.Path(manual_dir)
  if not root.is_dir():
    raise ValueError(f"manual_dir {root} does not exist; see README.md")
  files = {}
  for path in files_under(root):
    if path.suffix.lower() in VIDEO_SUFFIXES:
      files.setdefault(path.stem, path)
  known = set(class_names)
  found, missing, several = [], 0, 0
  for clip in listed:
    ours = [label for label in clip.labels if label in known]
    if len(ours) != 1:
      several += len(ours) > 1
      continue
    path = next((files[s] for s in clip.stems() if s in files), None)
    if path is None:
      missing += 1
      continue
    found.append(VideoSource(path.stem, (ours[0],), video=str(path),
                             detections=_detection_file(root, path.stem, path.name),
                             split=clip.split))
  if missing:
    report.notes.append(f"{missing} listed clips of these classes have no video file")
  if several:
    report.notes.append(f"{several} listed clips with several of these classes were left out")
  if not found and not report.bad:
    raise ValueError(f"manual_dir {root}: none of the {len(listed)} listed clips of these "
                     "classes was found as a video file (<youtube_id>_<start>.mp4)")
  unique = {v.video_id: v for v in found}
  return [unique[k] for k in sorted(unique)]


def hold_out_validation(videos: list[VideoSource], fraction: float, seed: int
                        ) -> list[VideoSource]:
  """Moves a seeded `fraction` of each class's `train` clips (at least one of a class
  with two or more) to a `validation` split."""
  out, by_class = [], {}
  for v in videos:
    (by_class.setdefault(v.labels, []) if v.split == "train" else out).append(v)
  for labels in sorted(by_class):
    group = by_class[labels]
    order = _group_rng(seed, labels).permutation(len(group))
    count = max(1, int(round(fraction * len(group)))) if len(group) > 1 else 0
    held = set(order[:count].tolist())
    out += [dataclasses.replace(v, split="validation") if i in held else v
            for i, v in enumerate(group)]
  return out
