"""Static HTML reports: what a person sees of an evaluation or of a separated file.

`write_report(folder, title=..., tables=..., samples=...)` writes
`folder/index.html` with its pictures and sounds beside it:

- metric tables (overall, per refinement step, per class);
- for each sample: the mixture; per source its visual query (object crop,
  and the middle frame of its frame clip for models that read frames),
  the ground truth (when known), the separated source and, for models with
  refinement steps, the estimate after every step; each as a log-magnitude
  spectrogram (PNG) and a wav with an `<audio>` player.

All spectrograms of one sample share one colour scale: the mixture's peak
down to `range_db` below it. The page uses relative links only, so the folder
opens from disk or any static server. The folder is written beside its final
place and renamed into it at the end, so an interrupted run never leaves a
half-written report.
"""

from __future__ import annotations

import dataclasses
import html
import os
import pathlib
from typing import Sequence

from etils import epath
import numpy as np

from avsep_jax import audio
from avsep_jax import files

SPECTROGRAM_RANGE_DB = 80.0
SPECTROGRAM_COLORMAP = "magma"


@dataclasses.dataclass
class SourceView:
  """One source of a sample.

  Attributes:
    name: what it is (class name, or "source 1").
    estimates: separated waveforms `[L]` after each model step; the last is
      the model's answer.
    pictures: `(caption, uint8 [H, W, 3])` of its visual query (crop, frame).
    reference: its true waveform `[L]` (evaluation), or None.
    scores: e.g. `{"sdr": ..., "sir": ..., "sar": ...}` in dB, or None.
  """
  name: str
  estimates: Sequence[np.ndarray]
  pictures: Sequence[tuple[str, np.ndarray]] = ()
  reference: np.ndarray | None = None
  scores: dict | None = None


@dataclasses.dataclass
class SampleView:
  """One mixture and its sources, under a section heading (`group`)."""
  group: str
  title: str
  mixture: np.ndarray
  sources: Sequence[SourceView]


@dataclasses.dataclass(frozen=True)
class SpectrogramOptions:
  """How waveforms become pictures: the model's STFT and log-frequency rows."""
  sample_rate: int = 11025
  n_fft: int = 1022
  hop_length: int = 256
  warp_bins: int = 256
  range_db: float = SPECTROGRAM_RANGE_DB


def spectrogram_options(config) -> SpectrogramOptions:
  """The experiment's audio settings (`config.audio`) for the report's pictures."""
  a = config.audio  # audio is 11025 Hz by the feature contract
  return SpectrogramOptions(n_fft=a.n_fft, hop_length=a.hop_length, warp_bins=a.warp_bins or 256)


def log_spectrograms(waves: np.ndarray, options: SpectrogramOptions) -> np.ndarray:
  """Waveforms `[K, L]` -> log-magnitude maps `[K, F, T]` in dB (low frequencies first)."""
  mag = audio.magnitude_map(np.asarray(waves, np.float32), n_fft=options.n_fft,
                            hop_length=options.hop_length, warp_bins=options.warp_bins)
  return 20.0 * np.log10(np.maximum(np.asarray(mag), 1e-8))


def _write_png(path: pathlib.Path, image: np.ndarray, **imsave_args) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  plt.imsave(path, image, **imsave_args)


def _write_wav(path: pathlib.Path, wave: np.ndarray, sample_rate: int) -> None:
  import soundfile  # pylint: disable=g-import-not-at-top
  soundfile.write(path, np.clip(np.asarray(wave, np.float32), -1.0, 1.0), sample_rate,
                  subtype="PCM_16")


class _Page:
  """Collects the page's HTML and writes its media files into `root`."""

  def __init__(self, root: pathlib.Path, options: SpectrogramOptions):
    self.root, self.options, self.parts = root, options, []

  def media(self, stem: str, wave: np.ndarray, db: np.ndarray, top_db: float,
            caption: str) -> str:
    """A figure: spectrogram picture, caption and player of one waveform."""
    png, wav = f"{stem}.png", f"{stem}.wav"
    _write_png(self.root / png, db[::-1], cmap=SPECTROGRAM_COLORMAP,
               vmin=top_db - self.options.range_db, vmax=top_db)
    _write_wav(self.root / wav, wave, self.options.sample_rate)
    text = html.escape(caption)
    return (f'<figure><img class="spectrogram" src="{png}" alt="{text} spectrogram">'
            f'<figcaption>{text}</figcaption>'
            f'<audio controls preload="none" src="{wav}"></audio></figure>')

  def picture(self, stem: str, rgb: np.ndarray, caption: str) -> str:
    png = f"{stem}.png"
    _write_png(self.root / png, np.asarray(rgb, np.uint8))
    text = html.escape(caption)
    return (f'<figure><img class="query" src="{png}" alt="{text}">'
            f"<figcaption>{text}</figcaption></figure>")


def _score_text(scores: dict | None) -> str:
  if not scores:
    return ""
  return ", ".join(f"{k.upper()} {v:.2f} dB" for k, v in scores.items()
                   if np.isfinite(v))


def _sample_html(page: _Page, index: int, sample: SampleView) -> str:
  stem = f"sample{index:03d}"
  waves = [sample.mixture]
  for source in sample.sources:
    waves += ([source.reference] if source.reference is not None else []) + list(
        source.estimates)
  length = min(len(w) for w in waves)
  db = log_spectrograms(np.stack([np.asarray(w)[:length] for w in waves]), page.options)
  top = float(db[0].max())
  maps = iter(db)
  out = [f'<section class="sample"><h3>{html.escape(sample.title)}</h3><div class="row">',
         page.media(f"{stem}_mixture", sample.mixture, next(maps), top, "mixture"), "</div>"]
  for k, source in enumerate(sample.sources):
    name = html.escape(source.name)
    score = _score_text(source.scores)
    out.append(f'<h4>{name}{" — " + html.escape(score) if score else ""}</h4>'
               '<div class="row">')
    for p, (caption, rgb) in enumerate(source.pictures):
      out.append(page.picture(f"{stem}_s{k}_query{p}", rgb, caption))
    if source.reference is not None:
      out.append(page.media(f"{stem}_s{k}_truth", source.reference, next(maps), top,
                            "ground truth"))
    steps = len(source.estimates)
    for s, estimate in enumerate(source.estimates):
      caption = "separated" if s == steps - 1 else f"step {s}"
      if steps > 1 and s == steps - 1:
        caption = f"separated (step {s})"
      out.append(page.media(f"{stem}_s{k}_step{s}", estimate, next(maps), top, caption))
    out.append("</div>")
  out.append("</section>")
  return "".join(out)


def table_title(table: dict) -> str:
  """A scored list's heading: split, sources per mixture, the masks applied and any
  frame control."""
  title = f"{table['split']}, {table['num_mix']}-mix"
  if table.get("masks"):
    title += f", {table['masks']} masks"
  if table.get("frame_control"):
    title += f", control: frames {table['frame_control']}"
  return title


def _table_html(table: dict) -> str:
  """One evaluation summary (as `evaluate.score_split` returns) as HTML tables."""
  cols = ("sdr", "sir", "sar", "sdr_mixture", "sdri")
  head = ("<tr><th></th>" + "".join(f"<th>{c.replace('_', ' ').upper()}</th>" for c in cols)
          + "<th>count</th></tr>")

  def row(name, r, count):
    cells = "".join(f"<td>{r[c]:.2f}</td>" for c in cols)
    return f"<tr><th>{html.escape(str(name))}</th>{cells}<td>{count}</td></tr>"

  out = [f"<h3>{html.escape(table_title(table))}</h3>",
         f"<p>{table['count']} mixtures scored, {table['skipped']} skipped (silent "
         f"reference), {table['silent_estimates']} silent estimates scored 0 dB; mean dB "
         f"over sources and mixtures; metric {html.escape(str(table['metric_backend']))}.</p>",
         "<table>", head, row("all", table, table["count"])]
  for r in table.get("per_step", []):
    out.append(row(f"step {r['step']}", r, table["count"]))
  out.append("</table><details><summary>per class</summary><table>" + head)
  out += [row(name, r, r["count"]) for name, r in table["per_class"].items()]
  out.append("</table></details>")
  return "".join(out)


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
.row { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0; display: flex; flex-direction: column; align-items: center; }
img.spectrogram { width: 256px; height: 192px; }
img.query { width: 96px; height: 96px; image-rendering: pixelated; }
figcaption { font-size: 0.85em; }
audio { width: 256px; }
section.sample { border-top: 1px solid #ddd; margin-top: 1em; }
"""

# Counts the pictures that actually loaded, for checking the page in a browser.
_LOAD_CHECK = ("<script>window.addEventListener('load', function () {"
               "document.body.dataset.imagesLoaded = Array.prototype.filter.call("
               "document.images, function (i) { return i.complete && i.naturalWidth > 0; })"
               ".length; });</script>")


def write_report(folder: str | os.PathLike, *, title: str, samples: Sequence[SampleView],
                 tables: Sequence[dict] = (), notes: Sequence[str] = (),
                 options: SpectrogramOptions = SpectrogramOptions()) -> epath.Path:
  """Writes the report into `folder` (replacing an earlier one); returns its index.html.

  Args:
    folder: the report's folder.
    title: the page's heading.
    samples: the samples to show, grouped under their `group` headings in order.
    tables: evaluation summaries (`evaluate.score_split` results) for the tables.
    notes: lines shown under the title (checkpoint, input file, ...).
    options: the STFT and colour range of the spectrograms.
  """
  with files.staged_folder(folder) as staging:
    page = _Page(staging, options)
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f"<p>{html.escape(note)}</p>" for note in notes]
    if tables:
      body.append("<h2>Scores</h2>" + "".join(_table_html(t) for t in tables))
    group = None
    for i, sample in enumerate(samples):
      if sample.group != group:
        group = sample.group
        body.append(f"<h2>{html.escape(group)}</h2>")
      body.append(_sample_html(page, i, sample))
    text = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(body) + _LOAD_CHECK + "</body></html>\n")
    (staging / "index.html").write_text(text, encoding="utf-8")
  return epath.Path(folder) / "index.html"

