"""Melodies for `synthetic_music`: tunes from a score corpus, performed with expression.

A tune is read once into a `[M, 3]` float array of notes `(midi_pitch, start,
duration)` in quarter notes (chords keep their top note, rests are gaps).
`perform` turns it into timed note events for one instrument: tempo, octave,
dynamics, articulation and rests are drawn from the clip's random generator, so
the same tune played twice is a different performance.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

# Corpus spec for the default: the fiddle tunes of Ryan's Mammoth Collection that ship
# inside music21 (about 1,060 files, one tune each).
DEFAULT_CORPUS = "music21:ryansMammoth"
TUNE_SUFFIXES = (".abc", ".mid", ".midi", ".xml", ".musicxml", ".mxl", ".krn")


def tune_paths(corpus: str) -> list[str]:
  """Sorted tune files of a corpus spec.

  Args:
    corpus: `music21:<collection>` for a collection inside music21's core corpus
      (e.g. `music21:ryansMammoth`), or a folder of tune files (ABC, MIDI,
      MusicXML, Humdrum; one tune per file).

  Raises:
    ValueError: the spec names no files.
  """
  if corpus.startswith("music21:"):
    import music21  # pylint: disable=g-import-not-at-top
    collection = corpus.split(":", 1)[1]
    paths = [str(p) for p in music21.corpus.corpora.CoreCorpus().getPaths()
             if pathlib.Path(p).parent.name == collection]
  else:
    folder = pathlib.Path(corpus).expanduser()
    if not folder.is_dir():
      raise ValueError(f"melody_corpus {corpus!r}: not a folder and not 'music21:<collection>'")
    paths = [str(p) for p in folder.rglob("*") if p.suffix.lower() in TUNE_SUFFIXES]
  if not paths:
    raise ValueError(f"melody_corpus {corpus!r} has no tune files ({', '.join(TUNE_SUFFIXES)})")
  return sorted(paths)


def parse_tune(path: str) -> np.ndarray:
  """Notes of one tune file: `[M, 3]` float32 rows `(midi_pitch, start, duration)`.

  Start and duration are in quarter notes; a chord contributes its top note;
  rests are left as gaps. For a file holding several tunes, the first is used.

  Raises:
    ValueError: the file cannot be parsed or has no notes (names the file).
  """
  import music21  # pylint: disable=g-import-not-at-top
  try:
    score = music21.converter.parse(path)
  except Exception as e:  # music21 raises many types for bad files
    raise ValueError(f"melody file {path}: cannot be parsed ({e})") from e
  if isinstance(score, music21.stream.Opus):
    score = score.scores[0]
  rows = []
  for element in score.flatten().notes:
    pitches = element.pitches
    if not pitches:
      continue
    rows.append((max(p.midi for p in pitches), float(element.offset),
                 float(element.quarterLength)))
  rows = [r for r in rows if r[2] > 0]
  if not rows:
    raise ValueError(f"melody file {path}: no notes")
  return np.asarray(sorted(rows, key=lambda r: r[1]), np.float32)


@dataclasses.dataclass(frozen=True)
class Voice:
  """How one instrument plays a tune.

  Attributes:
    program: General MIDI program (0-127); ignored for drums.
    low, high: playable MIDI pitch range; melodies are moved by octaves into it.
    drum_keys: for percussion (General MIDI channel 10), the drum keys a melody's
      pitches map onto, lowest pitch first; empty for pitched instruments.
    legato: fraction of each note's written length that sounds (min, max).
  """
  program: int = 0
  low: int = 48
  high: int = 84
  drum_keys: tuple[int, ...] = ()
  legato: tuple[float, float] = (0.75, 0.97)

  @property
  def is_drums(self) -> bool:
    return bool(self.drum_keys)


@dataclasses.dataclass(frozen=True)
class Expression:
  """Ranges the performance is drawn from (per clip)."""
  tempo_bpm: tuple[float, float] = (80.0, 140.0)
  velocity: tuple[int, int] = (55, 110)     # the clip's base loudness
  phrase_swell: float = 18.0                # +- velocity of the slow dynamic curve
  note_jitter: float = 7.0                  # +- velocity per note
  drop_note: float = 0.05                   # probability a single note is left out
  rest_probability: float = 0.5             # probability the clip has long rests
  rest_seconds: tuple[float, float] = (0.6, 2.0)


def perform(notes: np.ndarray, voice: Voice, seconds: float, rng: np.random.Generator,
            expression: Expression = Expression()) -> np.ndarray:
  """Timed note events of one performance lasting `seconds`.

  The tune starts at a random note and wraps around when it ends. Pitched
  voices are moved by whole octaves so the tune's median pitch sits in the
  middle of the voice's range (notes still outside are folded by octaves);
  drums map each pitch to a drum key by its rank in the tune's range.

  Returns:
    `[E, 4]` float64 rows `(onset_s, key, velocity, duration_s)`, onsets
    ascending, all onsets in `[0, seconds)`.
  """
  pitches, starts, lengths = notes[:, 0], notes[:, 1], notes[:, 2]
  tune_quarters = float(starts[-1] + lengths[-1])
  sec_per_quarter = 60.0 / rng.uniform(*expression.tempo_bpm)
  first = rng.integers(len(notes))
  onsets, keys, durs = [], [], []
  offset = -float(starts[first])
  index = first
  while True:
    t = (starts[index] + offset) * sec_per_quarter
    if t >= seconds:
      break
    onsets.append(t)
    keys.append(pitches[index])
    durs.append(lengths[index] * sec_per_quarter)
    index += 1
    if index == len(notes):  # wrap: the tune starts again after its last note
      index, offset = 0, offset + tune_quarters
  onsets, keys, durs = (np.asarray(x, np.float64) for x in (onsets, keys, durs))

  if voice.is_drums:
    lo, hi = keys.min(), keys.max()
    rank = (keys - lo) / max(hi - lo, 1.0)
    keys = np.asarray(voice.drum_keys)[
        np.minimum((rank * len(voice.drum_keys)).astype(int), len(voice.drum_keys) - 1)]
    durs = np.minimum(durs, 0.25)
  else:
    centre = (voice.low + voice.high) / 2
    keys = keys + 12 * np.round((centre - np.median(keys)) / 12)
    keys = np.where(keys < voice.low, keys + 12 * np.ceil((voice.low - keys) / 12), keys)
    keys = np.where(keys > voice.high, keys - 12 * np.ceil((keys - voice.high) / 12), keys)
    durs = durs * rng.uniform(*voice.legato)

  base = rng.uniform(*expression.velocity)
  period = rng.uniform(3.0, 8.0)
  swell = expression.phrase_swell * np.sin(2 * np.pi * onsets / period + rng.uniform(0, 6.3))
  velocity = base + swell + rng.uniform(-1, 1, len(onsets)) * expression.note_jitter
  velocity = np.clip(np.round(velocity), 1, 127)

  keep = rng.random(len(onsets)) >= expression.drop_note
  if rng.random() < expression.rest_probability:  # one or two long silences
    for _ in range(1 + (rng.random() < 0.3)):
      start = rng.uniform(0, seconds)
      keep &= ~((onsets >= start) & (onsets < start + rng.uniform(*expression.rest_seconds)))
  events = np.stack([onsets, keys, velocity, durs], 1)[keep]
  return events
