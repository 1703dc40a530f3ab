"""Separating one's own recording with a trained checkpoint (`--mode=separate`).

  python -m avsep_jax.main --config=configs/crn.py --workdir=runs/crn --mode=separate \
      --input=duet.mp4 [--boxes="x1,y1,x2,y2;x1,y1,x2,y2" | --detections=duet.npy]
  python -m avsep_jax.main --config=configs/crn.py --workdir=runs/crn --mode=separate \
      --input=mixture.wav --images=violin.jpg,cello.jpg

Each source is asked for by a picture, as in training:

- a video: one box per source in the video's pixels (`boxes`), or a detector's
  `.npy` rows `[frame_idx, class_id, score, x1, y1, x2, y2]` (per window, the
  `num_sources` best boxes of the frame nearest its centre, left to right;
  `frame_idx` counted at `detection_fps`), or by default `num_sources` equal
  vertical strips of the frame, left to right (a duet: its halves);
- an audio file (wav, mp3, ...): one picture of each instrument (`images`).

The audio (resampled to 11025 Hz mono) is cut into windows of
`eval.segment_length` samples every half window, batched onto the devices,
and the windows' estimates are put back together by overlap-add with Hann
weights normalised by their sum (so estimates that equal their window give the
input back exactly). Writes `source<k>.wav` per source, of the input's exact
length, and `report/index.html` into the output folder (local or `gs://`);
the folder is staged and moved into place at the end, so a failed run leaves
nothing half-written.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
from typing import Callable, Sequence

from etils import epath
import numpy as np
from flax import nnx
from PIL import Image

from avsep_jax import data
from avsep_jax import evaluate
from avsep_jax import files
from avsep_jax import report as report_lib

SAMPLE_RATE = 11025
FRAME_RATE = 8.0          # frames read from a video per second (the builders' rate)
FRAME_SHORT_SIDE = 256    # they are kept at this shorter side (pixels)
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus")


@dataclasses.dataclass(frozen=True)
class Recording:
  """A user's input: audio `[L]` float32 in [-1, 1] and, for a video, its frames."""
  path: str
  audio: np.ndarray
  frames: list[Image.Image] | None = None   # at FRAME_RATE, shorter side FRAME_SHORT_SIDE
  source_size: tuple[int, int] | None = None  # (width, height) of the video's own frames


def read_recording(path: str | pathlib.Path) -> Recording:
  """Reads a video (audio + frames) or an audio file.

  Raises:
    FileNotFoundError: no such file.
    ValueError (`media.MediaError`): unreadable file, no audio stream, no
      audio samples, NaN/inf or all-zero audio, or a video stream that cannot
      be decoded.
  """
  from data_builders import media  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"--input {path}: no such file")
  audio, source_rate = media.read_audio_and_rate(path)
  if not np.any(audio):
    raise ValueError(f"--input {path}: the audio is silent (every sample is 0): nothing to "
                     "separate")
  if source_rate and source_rate != media.SAMPLE_RATE:
    print(f"note: {path.name}: {source_rate} Hz audio, resampled to {media.SAMPLE_RATE} Hz "
          "(the models' rate)", flush=True)
  audio = audio.astype(np.float32) / 32768.0
  if path.suffix.lower() in AUDIO_SUFFIXES:
    return Recording(str(path), audio)
  frames = media.read_video_frames(path, FRAME_RATE, FRAME_SHORT_SIDE)
  decoded, images = {}, []
  for jpeg in frames.jpegs:  # repeated frames share their bytes: decode each once
    if jpeg not in decoded:
      decoded[jpeg] = Image.open(io.BytesIO(jpeg)).convert("RGB")
    images.append(decoded[jpeg])
  return Recording(str(path), audio, images, frames.source_size)


def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
  """'x1,y1,x2,y2;x1,y1,x2,y2' -> boxes (video pixels), or a ValueError naming the part."""
  boxes = []
  for k, part in enumerate(p for p in text.split(";") if p.strip()):
    try:
      x1, y1, x2, y2 = (float(v) for v in part.split(","))
    except ValueError as e:
      raise ValueError(f"--boxes: box {k + 1} {part.strip()!r} is not four numbers "
                       "x1,y1,x2,y2") from e
    boxes.append((x1, y1, x2, y2))
  if not boxes:
    raise ValueError("--boxes: no box given (expected 'x1,y1,x2,y2;x1,y1,x2,y2')")
  return boxes


def check_boxes(boxes, size: tuple[int, int], what: str) -> None:
  """Each box must have x1 < x2, y1 < y2 and lie inside a `size` = (width, height) frame."""
  width, height = size
  for k, (x1, y1, x2, y2) in enumerate(boxes):
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
      raise ValueError(f"{what}: box {k + 1} ({x1:g},{y1:g},{x2:g},{y2:g}) is not inside "
                       f"the {width}x{height} frame with x1 < x2 and y1 < y2")


def strips(num_sources: int, size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
  """`num_sources` equal vertical strips of a (width, height) frame, left to right."""
  width, height = size
  return [(width * k / num_sources, 0.0, width * (k + 1) / num_sources, float(height))
          for k in range(num_sources)]


class Queries:
  """The pictures that ask for each source in a window: crops and, if used, frame clips."""

  def __init__(self, recording: Recording, *, crop_size: int, frame_size: int,
               frames_per_window: int, boxes=None, detections=None, detection_fps: float = 8.0,
               images: Sequence[str] = (), num_sources: int = 2):
    self.crop_size, self.frame_size = crop_size, frame_size
    self.frames_per_window = frames_per_window
    self.frames, self.detections, self.detection_fps = recording.frames, None, detection_fps
    if recording.frames is None:
      if not images:
        raise ValueError(f"--input {recording.path} is audio only: give a picture of each "
                         "instrument with --images=a.jpg,b.jpg")
      self.pictures = [_read_picture(p) for p in images]
      self.num_sources = len(self.pictures)
      self.names = [pathlib.Path(p).stem for p in images]
      return
    if images:
      raise ValueError("--images are for audio inputs; for a video give --boxes or "
                       "--detections (or neither: equal strips, left to right)")
    stored = recording.frames[0].size
    self.scale = (stored[0] / recording.source_size[0], stored[1] / recording.source_size[1])
    if boxes is not None and detections is not None:
      raise ValueError("give --boxes or --detections, not both")
    if detections is not None:
      from data_builders import videos  # pylint: disable=g-import-not-at-top
      self.detections = videos.load_detections(detections)
      if not len(self.detections):
        raise ValueError(f"--detections {detections}: holds no detection")
      check_boxes(self.detections[:, 3:], recording.source_size, f"--detections {detections}")
      self.num_sources = num_sources
      self.names = [f"source {k + 1}" for k in range(num_sources)]
      return
    if boxes is None:
      boxes = strips(num_sources, recording.source_size)
      self.names = ["left", "right"] if num_sources == 2 else [
          f"strip {k + 1}" for k in range(num_sources)]
    else:
      check_boxes(boxes, recording.source_size, "--boxes")
      self.names = [f"box {k + 1}" for k in range(len(boxes))]
    self.boxes, self.num_sources = list(boxes), len(boxes)

  def _boxes_at(self, frame: int) -> list:
    if self.detections is None:
      return self.boxes
    rows = self.detections
    times = rows[:, 0] / self.detection_fps
    nearest = rows[np.abs(times - frame / FRAME_RATE) == np.abs(times - frame / FRAME_RATE).min()]
    best = nearest[np.argsort(-nearest[:, 2], kind="stable")][:self.num_sources]
    best = best[np.argsort(best[:, 3], kind="stable")]
    boxes = [tuple(b) for b in best[:, 3:]]
    return boxes + [boxes[-1]] * (self.num_sources - len(boxes))  # fewer players seen

  def _crop(self, frame: int, k: int, size: int) -> np.ndarray:
    x1, y1, x2, y2 = self._boxes_at(frame)[k]
    sx, sy = self.scale
    image = self.frames[frame].crop((round(x1 * sx), round(y1 * sy),
                                     max(round(x2 * sx), round(x1 * sx) + 1),
                                     max(round(y2 * sy), round(y1 * sy) + 1)))
    return np.asarray(image.resize((size, size), Image.BILINEAR), np.uint8)

  def window(self, start: int, length: int) -> dict[str, np.ndarray]:
    """uint8 `crops` `[N, c, c, 3]` (and `frames` `[N, T, f, f, 3]`) of the window at `start`."""
    if self.frames is None:
      crops = np.stack([_square(p, self.crop_size) for p in self.pictures])
      out = {"crops": crops}
      if self.frames_per_window:
        clips = np.stack([_square(p, self.frame_size) for p in self.pictures])
        out["frames"] = np.repeat(clips[:, None], self.frames_per_window, axis=1)
      return out
    last = len(self.frames) - 1
    centre = min(round((start + length / 2) / SAMPLE_RATE * FRAME_RATE), last)
    out = {"crops": np.stack([self._crop(centre, k, self.crop_size)
                              for k in range(self.num_sources)])}
    if self.frames_per_window:
      times = (start + (np.arange(self.frames_per_window) + 0.5) * length
               / self.frames_per_window) / SAMPLE_RATE
      picks = np.clip(np.round(times * FRAME_RATE).astype(int), 0, last)
      out["frames"] = np.stack([np.stack([self._crop(p, k, self.frame_size) for p in picks])
                                for k in range(self.num_sources)])
    return out


def _read_picture(path: str) -> Image.Image:
  try:
    return Image.open(path).convert("RGB")
  except (OSError, ValueError) as e:
    raise ValueError(f"--images: {path} cannot be read as a picture ({e})") from e


def _square(image: Image.Image, size: int) -> np.ndarray:
  return np.asarray(image.resize((size, size), Image.BILINEAR), np.uint8)


def overlap_add(window_estimates: np.ndarray, starts: Sequence[int], length: int) -> np.ndarray:
  """Window estimates `[K, ..., W]` -> `[..., length]`: Hann-weighted, normalised by the sum
  of the weights at each sample (so estimates equal to their windows give the input back)."""
  width = window_estimates.shape[-1]
  weights = np.hanning(width + 2)[1:-1].astype(np.float64)   # > 0 everywhere
  total = np.zeros(window_estimates.shape[1:-1] + (length,))
  norm = np.zeros(length)
  for estimate, start in zip(window_estimates, starts):
    stop = min(start + width, length)
    total[..., start:stop] += estimate[..., :stop - start] * weights[:stop - start]
    norm[start:stop] += weights[:stop - start]
  return (total / norm).astype(np.float32)


def separate_audio(estimate: Callable, audio: np.ndarray, window_inputs: Callable, *,
                   window: int, batch_size: int, progress: bool = True) -> np.ndarray:
  """Every step's estimate of each source over the whole input: `[S, N, L]`.

  Args:
    estimate: `(batch, mixtures [B, W]) -> estimates [S, B, N, W]` for one batch.
    audio: the input `[L]`.
    window_inputs: `(start, window) -> {"crops": ..., "frames": ...}` of one window.
    window: samples per window (the hop is half of it).
    batch_size: windows per call of `estimate`.
    progress: show a progress bar.
  """
  length = len(audio)
  padded = np.pad(audio, (0, max(0, window - length)))
  starts = evaluate.window_starts(len(padded), window, max(1, window // 2))
  batches = [starts[i:i + batch_size] for i in range(0, len(starts), batch_size)]
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    batches = tqdm.tqdm(batches, desc="separating", unit="batch")
  outputs = []
  for chunk in batches:
    mixtures = np.stack([padded[s:s + window] for s in chunk])
    pictures = [window_inputs(s, window) for s in chunk]
    batch = {k: data.mixtures.normalise_images(np.stack([p[k] for p in pictures]))
             for k in pictures[0]}
    outputs.append(np.asarray(estimate(batch, mixtures)))          # [S, B, N, W]
  per_window = np.concatenate(outputs, axis=1).transpose(1, 0, 2, 3)  # [K, S, N, W]
  return overlap_add(per_window, starts, len(padded))[..., :length]


def model_estimator(config, model, mesh) -> Callable:
  """`(batch, mixtures [B, W]) -> estimates [S, B, N, W]` of `model` on the mesh."""
  graphdef, state = nnx.split(model)
  config_json = config.to_json()

  def estimate(batch, mixtures):
    size, count = len(mixtures), batch["crops"].shape[1]
    inputs = dict(batch, mixture=mixtures, source_mask=np.ones((size, count), bool))
    estimates, size = evaluate.on_mesh(
        lambda inputs: evaluate.separate_mixture(graphdef, config_json, state, inputs),
        inputs, mesh)
    return estimates[:, :size]

  return estimate


def separate_file(config, workdir: str | pathlib.Path, input_path: str | pathlib.Path, *,
                  output: str | pathlib.Path | None = None, boxes: str | None = None,
                  detections: str | None = None, images: Sequence[str] = (),
                  num_sources: int = 2, detection_fps: float = 8.0, step: int | None = None,
                  progress: bool = True) -> epath.Path:
  """Separates `input_path` with `workdir`'s checkpoint; returns the output folder.

  The folder (default `workdir/separated/<input name>`) gets `source<k>.wav`
  per source and `report/index.html`. Every input problem (unreadable file,
  no audio, boxes outside the frame, ...) raises before anything is written.
  """
  recording = read_recording(input_path)
  d = config.dataset
  window = config.eval.segment_length
  queries = Queries(recording, crop_size=d.crop_size, frame_size=d.frame_size,
                    frames_per_window=data.frame_count(window, d.num_frames, d.frame_rate),
                    boxes=parse_boxes(boxes) if boxes else None, detections=detections,
                    detection_fps=detection_fps, images=images, num_sources=num_sources)
  model, mesh, step = evaluate.load_checkpoint(config, workdir, step)
  estimates = separate_audio(model_estimator(config, model, mesh), recording.audio,
                             queries.window, window=window, batch_size=config.eval.batch_size,
                             progress=progress)                        # [S, N, L]
  out = epath.Path(output or epath.Path(workdir) / "separated" / pathlib.Path(input_path).name)
  with files.staged_folder(out) as staging:
    import soundfile  # pylint: disable=g-import-not-at-top
    middle = queries.window(max(0, len(recording.audio) // 2 - window // 2), window)
    pictures = evaluate.query_pictures(
        {k: data.mixtures.normalise_images(v[None]) for k, v in middle.items()})
    views = []
    for k in range(estimates.shape[1]):
      soundfile.write(staging / f"source{k + 1}.wav", np.clip(estimates[-1, k], -1, 1),
                      SAMPLE_RATE, subtype="PCM_16")
      views.append(report_lib.SourceView(f"{k + 1}: {queries.names[k]}", list(estimates[:, k]),
                                         pictures=pictures(0, k)))
    report_lib.write_report(
        staging / "report", title=f"{pathlib.Path(input_path).name}: separated",
        notes=[f"{config.model.name} checkpoint step {step} from {workdir}.",
               f"{len(recording.audio) / SAMPLE_RATE:.1f} s at {SAMPLE_RATE} Hz; the pictures "
               "show each source's query in the middle of the recording."],
        samples=[report_lib.SampleView("separated sources", pathlib.Path(input_path).name,
                                       recording.audio, views)],
        options=report_lib.spectrogram_options(config))
  return out
