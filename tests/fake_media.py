"""Small media files for tests: mp4 (PyAV), wav, frame folders, detection arrays."""

from __future__ import annotations

import pathlib

import numpy as np
import soundfile
from PIL import Image


def frame_picture(k: int, size=(96, 64)) -> np.ndarray:
  """Frame k: a colour that changes with k and a white square moving right."""
  w, h = size
  img = np.zeros((h, w, 3), np.uint8)
  img[..., 0] = (k * 20) % 255
  img[h // 6:h // 2, 10 + k % 40:30 + k % 40] = 255
  return img


def tone(seconds: float, sample_rate: int, freq: float) -> np.ndarray:
  t = np.arange(int(round(seconds * sample_rate))) / sample_rate
  return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_mp4(path, seconds: float = 7.0, *, fps: int = 10, size=(96, 64),
              sample_rate: int = 22050, freq: float = 440.0, audio: bool = True,
              video: bool = True) -> pathlib.Path:
  """An mp4 (MPEG-4 video, AAC mono audio) of `seconds`."""
  import av  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(path), mode="w") as out:
    if video:  # every stream is added before anything is muxed
      v = out.add_stream("mpeg4", rate=fps)
      v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
    if audio:
      a = out.add_stream("aac", rate=sample_rate)
      a.layout = "mono"
    if video:
      for k in range(int(seconds * fps)):
        for packet in v.encode(av.VideoFrame.from_ndarray(frame_picture(k, size), "rgb24")):
          out.mux(packet)
      for packet in v.encode():
        out.mux(packet)
    if audio:
      x = tone(seconds, sample_rate, freq)
      for i in range(0, len(x), 1024):
        frame = av.AudioFrame.from_ndarray(x[None, i:i + 1024], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = sample_rate, i
        for packet in a.encode(frame):
          out.mux(packet)
      for packet in a.encode():
        out.mux(packet)
  return path


def write_wav(path, seconds: float = 7.0, *, sample_rate: int = 22050, freq: float = 440.0):
  """A mono tone in the format the suffix names (.wav, .flac, .mp3)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(path, tone(seconds, sample_rate, freq), sample_rate)
  return path


def write_frames(folder, seconds: float = 7.0, *, fps: int = 8, size=(96, 64)):
  """`000001.jpg, ...` at `fps`."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  for k in range(int(seconds * fps)):
    Image.fromarray(frame_picture(k, size)).save(folder / f"{k + 1:06d}.jpg")
  return folder


def write_detections(path, count: int, box=(10, 10, 40, 30), class_id: int = 0,
                     base: int = 0):
  """One row per frame `base..base+count-1`: `[k, class_id, 0.9, *box]`."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.save(path, np.asarray([[base + k, class_id, 0.9, *box] for k in range(count)], np.float32))
  return path


def truncate(path, fraction: float = 0.5):
  """Cuts a file to `fraction` of its bytes (a broken download)."""
  data = pathlib.Path(path).read_bytes()
  pathlib.Path(path).write_bytes(data[:int(len(data) * fraction)])
