"""`urmp`: the URMP ensembles (duets to quintets), each part's recording kept as a source.

URMP (Li et al., IEEE TMM 2019) has 44 classical pieces, each in a folder
`NN_Piece_<inst>_<inst>...` (e.g. `01_Jupiter_vn_vc`) with the video
`Vid_*.mp4`, the mixture `AuMix_*.wav` and every part separately,
`AuSep_<k>_<inst>_*.wav`. The parts are the clips' `sources` (labels in part
order), their sum the clips' `audio`, so every clip is a mixture with true
references (`eval.duet_split`). Without a detection file the players are
taken to sit left to right in part order, each in an equal vertical strip of
the frame (the URMP videos are arranged so; check yours).

There is no official split: pieces are split 70/15/15 % by a seeded shuffle
(`split_seed`), written to `splits.json`.

    python -m avsep_jax.data.prepare --dataset=urmp --manual_dir=~/URMP/Dataset
"""

from __future__ import annotations

import re

from etils import epath

from data_builders import manual
from data_builders import videos as videos_lib

_DESCRIPTION = __doc__.split("\n\n")[1]

# URMP's instrument abbreviations (folder and file names) -> class names.
ABBREVIATIONS = {"vn": "violin", "va": "viola", "vc": "cello", "db": "double_bass",
                 "fl": "flute", "ob": "oboe", "cl": "clarinet", "sax": "saxophone",
                 "bn": "bassoon", "tpt": "trumpet", "hn": "horn", "tbn": "trombone",
                 "tba": "tuba"}
URMP_CLASSES = tuple(sorted(ABBREVIATIONS.values()))
PIECE = re.compile(r"^(\d+)_([^_]+)_(.+)$")


def find_pieces(manual_dir, report: videos_lib.BuildReport) -> list[videos_lib.VideoSource]:
  """The URMP piece folders anywhere under `manual_dir`, sorted by name.

  Raises:
    ValueError: `manual_dir` is missing or has no piece folder.
  """
  root = epath.Path(manual_dir)
  if not root.is_dir():
    raise ValueError(f"manual_dir {root} does not exist; see README.md (URMP)")
  pieces = []
  parts = (p for p in videos_lib.files_under(root) if p.name.startswith("AuSep_"))
  for folder in sorted({p.parent for p in parts}):
    match = PIECE.match(folder.name)
    abbreviations = match.group(3).split("_") if match else []
    unknown = [a for a in abbreviations if a not in ABBREVIATIONS]
    if not match or unknown:
      report.add(videos_lib.BadFile(folder, "not a URMP piece folder `NN_Piece_<inst>_...` "
                                            f"with instruments in {sorted(ABBREVIATIONS)}"))
      continue
    stems = sorted(folder.glob("AuSep_*.wav"),
                   key=lambda p: int(p.name.split("_")[1]) if p.name.split("_")[1].isdigit()
                   else 0)
    videos = sorted(folder.glob("Vid_*.mp4"))
    if len(stems) != len(abbreviations):
      report.add(videos_lib.BadFile(folder, f"{len(stems)} AuSep_*.wav parts for "
                                            f"{len(abbreviations)} instruments"))
      continue
    if not videos:
      report.add(videos_lib.BadFile(folder, "no Vid_*.mp4 video"))
      continue
    detections = next((str(p) for p in (root / "detections" / f"{folder.name}.npy",
                                         folder / "detections.npy") if p.exists()), None)
    pieces.append(videos_lib.VideoSource(
        folder.name, tuple(ABBREVIATIONS[a] for a in abbreviations), video=str(videos[0]),
        detections=detections, stems=tuple(str(p) for p in stems)))
  if not pieces and not report.bad:
    raise ValueError(f"manual_dir {root} has no URMP piece folder (NN_Piece_<inst>_... with "
                     "AuSep_*.wav parts)")
  return pieces


class Urmp(manual.ManualVideoBuilder):
  """URMP ensembles from a manual_dir of the downloaded dataset."""

  BUILDER_CONFIGS = [manual.ManualConfig(
      name="default", description="All 44 pieces, train/validation/test by piece.",
      class_names=URMP_CLASSES, split_by_class=False,
      fractions={"train": 0.7, "validation": 0.15, "test": 0.15})]
  HOMEPAGE = "https://labsites.rochester.edu/air/projects/URMP.html"
  DESCRIPTION = _DESCRIPTION
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Request and download URMP from its homepage, unpack it and pass the folder holding "
      "the piece folders (NN_Piece_<inst>_...) as manual_dir (`python -m "
      "avsep_jax.data.prepare --dataset=urmp --manual_dir=DIR`). Detections, if you have "
      "them: `detections/<piece folder>.npy` or `<piece folder>/detections.npy`.")

  def find_recordings(self, manual_dir, report):
    return find_pieces(manual_dir, report)
