"""Decoding users' media with PyAV: audio to 11025 Hz mono int16, frames at a target rate.

Every function raises `MediaError` (with the file and what is wrong) for a file
it cannot use, so builders can count and report bad files instead of dying
half-way through a long build.
"""

from __future__ import annotations

import dataclasses
import io

from etils import epath
import numpy as np
from PIL import Image

SAMPLE_RATE = 11025


class MediaError(ValueError):
  """A file that cannot be used: names the file and the reason."""

  def __init__(self, path, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path, self.reason = str(path), reason


def _open(path):
  import av  # pylint: disable=g-import-not-at-top
  try:
    if "://" in str(path):  # gs://... (Beam workers on Dataflow): PyAV reads a file object
      return av.open(io.BytesIO(epath.Path(path).read_bytes()))
    return av.open(str(path))
  except (av.error.FFmpegError, OSError) as e:
    raise MediaError(path, f"cannot open ({e})") from e


def read_audio(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """The first audio stream of an audio or video file, mono, resampled: int16 `[L]`.

  Raises:
    MediaError: unreadable or truncated file, no audio stream, no samples, or
      NaN/inf samples (floating-point files).
  """
  return read_audio_and_rate(path, sample_rate)[0]


def read_audio_and_rate(path, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
  """`read_audio` and the file's own sample rate (Hz)."""
  import av  # pylint: disable=g-import-not-at-top
  with _open(path) as container:
    if not container.streams.audio:
      raise MediaError(path, "has no audio stream")
    stream = container.streams.audio[0]
    source_rate = int(stream.rate or 0)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    chunks = []
    try:
      for frame in container.decode(stream):
        # Converting to int16 would turn NaN and inf into arbitrary sample values.
        if frame.format.name.startswith(("flt", "dbl")) and \
            not np.isfinite(frame.to_ndarray()).all():
          raise MediaError(path, f"has non-finite (NaN or inf) audio samples near "
                                 f"{float(frame.time or 0):.2f} s")
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
      chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except av.error.FFmpegError as e:
      raise MediaError(path, f"audio cannot be decoded ({e})") from e
  audio = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
  if not len(audio):
    raise MediaError(path, "has no audio samples")
  return audio, source_rate


def resize_short_side(image: Image.Image, short_side: int) -> Image.Image:
  """`image` scaled so that its shorter side is `short_side` pixels (0: unchanged)."""
  if not short_side:
    return image
  scale = short_side / min(image.size)
  size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
  return image.resize(size, Image.BILINEAR)


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
  out = io.BytesIO()
  image.convert("RGB").save(out, format="JPEG", quality=quality)
  return out.getvalue()


@dataclasses.dataclass
class Frames:
  """Frames as stored: JPEG bytes, and the sizes that map detector boxes onto them.

  Attributes:
    jpegs: one encoded frame per `1 / fps` seconds (repeated bytes where the
      source's rate is lower).
    source_size: `(width, height)` of the decoded frames (what a detector saw).
    stored_size: `(width, height)` of the stored JPEGs.
  """
  jpegs: list[bytes]
  source_size: tuple[int, int]
  stored_size: tuple[int, int]


class _Encoder:
  """Resizes and encodes each distinct frame once."""

  def __init__(self, short_side: int):
    self.short_side, self.source_size, self.stored_size = short_side, None, None

  def __call__(self, image) -> bytes:
    """A PIL image, or a PyAV video frame (scaled by FFmpeg before conversion)."""
    if isinstance(image, Image.Image):
      self.source_size = image.size
      image = resize_short_side(image, self.short_side)
    else:
      self.source_size = (image.width, image.height)
      scale = self.short_side / min(self.source_size) if self.short_side else 1.0
      image = image.reformat(width=max(1, round(image.width * scale)),
                             height=max(1, round(image.height * scale)),
                             format="rgb24").to_image()
    self.stored_size = image.size
    return encode_jpeg(image)

  def frames(self, jpegs: list[bytes]) -> Frames:
    return Frames(jpegs, self.source_size, self.stored_size)


def read_video_frames(path, fps: float, short_side: int = 0) -> Frames:
  """The first video stream's frames nearest to times `k / fps`, resized and JPEG-encoded.

  A target time past the last decoded frame ends the list, so a video of D
  seconds gives about `D * fps` frames. Frames are encoded as they are decoded
  (a long video never sits decoded in memory).

  Raises:
    MediaError: unreadable file, no video stream, a stream that stops
      decoding (a truncated file), or no frames.
  """
  import av  # pylint: disable=g-import-not-at-top
  encode, jpegs = _Encoder(short_side), []
  with _open(path) as container:
    if not container.streams.video:
      raise MediaError(path, "has no video stream")
    stream = container.streams.video[0]
    native = float(stream.average_rate or stream.guessed_rate or fps)
    previous = None        # (time, jpeg) of the last decoded frame
    try:
      for index, frame in enumerate(container.decode(stream)):
        t = float(frame.time) if frame.time is not None else index / native
        current = None
        while len(jpegs) / fps <= t:
          target = len(jpegs) / fps
          if previous is not None and target - previous[0] < t - target:
            jpegs.append(previous[1])
          else:
            current = current or encode(frame)
            jpegs.append(current)
        if current is None and (len(jpegs) + 1) / fps - t < 1 / native:
          current = encode(frame)   # may be the nearest to the next target
        previous = (t, current) if current is not None else previous
    except av.error.FFmpegError as e:
      raise MediaError(path, f"video stops decoding after {len(jpegs)} frames ({e})") from e
  if not jpegs:
    raise MediaError(path, "has no video frames")
  return encode.frames(jpegs)


def read_frame_folder(folder, fps: float, folder_fps: float, short_side: int = 0) -> Frames:
  """Frames `000001.jpg, ...` extracted at `folder_fps`, resampled to `fps` (nearest).

  Raises:
    MediaError: a missing or empty folder, or an undecodable image.
  """
  folder = epath.Path(folder)
  if not folder.is_dir():
    raise MediaError(folder, "frame folder is missing")
  paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
  if not paths:
    raise MediaError(folder, "frame folder has no .jpg/.png frames")
  count = int(np.floor((len(paths) - 1) / folder_fps * fps)) + 1
  picks = np.minimum(np.round(np.arange(count) / fps * folder_fps).astype(int), len(paths) - 1)
  encode, cache = _Encoder(short_side), {}
  for k in picks:
    if k not in cache:
      try:
        image = Image.open(io.BytesIO(paths[k].read_bytes()))
        image.load()
      except Exception as e:  # PIL raises several types for corrupt data
        raise MediaError(paths[k], f"cannot decode image ({e})") from e
      cache[k] = encode(image.convert("RGB"))
  return encode.frames([cache[k] for k in picks])
