"""`audioset_instruments`: AudioSet clips of one musical instrument that you downloaded.

AudioSet (Gemmeke et al., ICASSP 2017) is published as segment lists
(`balanced_train_segments.csv`, `unbalanced_train_segments.csv`,
`eval_segments.csv`: `YTID, start_seconds, end_seconds, "positive_labels"`)
and `class_labels_indices.csv` (`index,mid,display_name`). Put the lists you
use and the downloaded clips (`<YTID>_<start>.mp4`, `Y<YTID>.mp4`, any folder
depth) in `manual_dir`. The default config keeps the 15 instruments of the
AudioSet subset of Gao et al. (ECCV 2018) and Co-Separation, by AudioSet's
display names, and only clips labelled with exactly one of them. The train
lists give `train` (a seeded 10 % of each class held out as `validation`),
the eval list `test`.

    python -m avsep_jax.data.prepare --dataset=audioset_instruments --manual_dir=~/AudioSet
"""

from __future__ import annotations

from etils import epath

from data_builders import manual
from data_builders import videos as videos_lib

_DESCRIPTION = __doc__.split("\n\n")[1]

INSTRUMENTS15 = ("Accordion", "Acoustic guitar", "Banjo", "Cello", "Drum", "Electric guitar",
                 "Flute", "French horn", "Harmonica", "Harp", "Marimba, xylophone", "Piano",
                 "Saxophone", "Trombone", "Violin, fiddle")
LISTS = {"balanced_train_segments.csv": "train", "unbalanced_train_segments.csv": "train",
         "eval_segments.csv": "test"}


def read_class_names(path) -> dict[str, str]:
  """`class_labels_indices.csv` -> `{mid: display_name}`."""
  rows = list(videos_lib.csv_rows(path))
  return {row[1].strip(): row[2].strip() for row in rows[1:] if len(row) >= 3}


def read_segments(path, names: dict[str, str], split: str) -> list[videos_lib.ListedClip]:
  """A segment list -> clips with display-name labels ('#' lines are comments)."""
  clips = []
  for line_no, row in enumerate(videos_lib.csv_rows(path, skipinitialspace=True), 1):
    if not row or row[0].startswith("#"):
      continue
    try:
      youtube_id, start = row[0].strip(), float(row[1])
    except (IndexError, ValueError) as e:
      raise ValueError(f"{path}:{line_no}: expected YTID, start_seconds, end_seconds, "
                       f'"labels"; got {row}') from e
    mids = ",".join(row[3:]).replace('"', "").split(",")
    labels = tuple(names.get(m.strip(), m.strip()) for m in mids if m.strip())
    clips.append(videos_lib.ListedClip(youtube_id, start, labels, split))
  return clips


class AudiosetInstruments(manual.ManualVideoBuilder):
  """AudioSet single-instrument clips from a manual_dir of downloaded videos."""

  BUILDER_CONFIGS = [manual.ManualConfig(
      name="instruments15", description="15 instruments, single-instrument clips.",
      class_names=INSTRUMENTS15, clip=videos_lib.ClipOptions(clip_seconds=10.0))]
  HOMEPAGE = "https://research.google.com/audioset/"
  DESCRIPTION = _DESCRIPTION
  VALIDATION_FRACTION = 0.1
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put class_labels_indices.csv, the segment lists you use (balanced_train_segments.csv, "
      "unbalanced_train_segments.csv, eval_segments.csv) and your downloaded clips in one "
      "folder and pass it as manual_dir (`python -m avsep_jax.data.prepare "
      "--dataset=audioset_instruments --manual_dir=DIR`).")

  def find_recordings(self, manual_dir, report):
    root = epath.Path(manual_dir)
    indices = root / "class_labels_indices.csv"
    if not indices.exists():
      raise ValueError(f"{indices} is missing: put AudioSet's class_labels_indices.csv there")
    names = read_class_names(indices)
    lists = [name for name in LISTS if (root / name).exists()]
    if not lists:
      raise ValueError(f"{root} has none of AudioSet's segment lists {sorted(LISTS)}")
    listed = [clip for name in lists for clip in read_segments(root / name, names, LISTS[name])]
    found = videos_lib.find_listed_clips(root, listed, self.builder_config.class_names, report)
    return videos_lib.hold_out_validation(found, self.VALIDATION_FRACTION, self._split_seed)
