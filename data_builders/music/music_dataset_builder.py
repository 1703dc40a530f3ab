"""`music`: MUSIC-21 / MUSIC-11 solos and MUSIC duets from videos the user downloaded.

MUSIC (Zhao et al., ECCV 2018; MUSIC-21: ICCV 2019) is published as lists of
YouTube ids (`MUSIC_solo_videos.json`, `MUSIC21_solo_videos.json`,
`MUSIC_duet_videos.json`); users download the videos themselves and point the
build at them (`manual_dir`), in any layout `data_builders.videos.LAYOUTS`
reads. Each recording is cut into clips of `clip_seconds`; its frames are
stored at `fps`, its audio at 11025 Hz mono; detection `.npy` files of an
external detector give the object boxes (without them: the whole frame, or a
duet's halves).

MUSIC has no official split: the recordings of each class are split by a
seeded shuffle (`split_seed`, 80/10/10 %), unless the layout gives splits
(`train.csv`/`val.csv`/`test.csv`); the build writes the split it used to
`splits.json` beside the data, and files it could not use to
`build_report.tsv`.

    python -m avsep_jax.data.prepare --dataset=music/music21 --manual_dir=~/MUSIC
"""

from __future__ import annotations

import dataclasses


from data_builders import manual
from data_builders import videos as videos_lib

_DESCRIPTION = __doc__.split("\n\n")[1]
VALIDATION_FRACTION = 0.1   # of each class's training recordings, when a layout has no val split

# The published class lists (the MUSIC JSON lists' folder names), sorted.
MUSIC11_CLASSES = ("accordion", "acoustic_guitar", "cello", "clarinet", "erhu", "flute",
                   "saxophone", "trumpet", "tuba", "violin", "xylophone")
MUSIC21_CLASSES = tuple(sorted(MUSIC11_CLASSES + (
    "bagpipe", "banjo", "bassoon", "congas", "drum", "electric_bass", "guzheng", "piano",
    "pipa", "ukulele")))


@dataclasses.dataclass
class MusicConfig(manual.ManualConfig):
  """`manual.ManualConfig` plus `duets`: True keeps only recordings of two classes
  (one `duet` split), False only solos."""
  class_names: tuple[str, ...] = MUSIC21_CLASSES
  duets: bool = False


CONFIGS = [
    MusicConfig(name="music21", description="MUSIC-21 solos: 21 classes, train/validation/test."),
    MusicConfig(name="music11", description="MUSIC-11 solos: the original 11 classes.",
                class_names=MUSIC11_CLASSES),
    MusicConfig(name="music_duet", description="MUSIC duets (two labels, no separate sources).",
                duets=True, fractions={"duet": 1.0}),
]


class Music(manual.ManualVideoBuilder):
  """MUSIC solos or duets from a manual_dir of downloaded videos."""

  BUILDER_CONFIGS = CONFIGS
  DEFAULT_CONFIG_NAME = "music21"
  HOMEPAGE = "https://github.com/roudimit/MUSIC_dataset"
  DESCRIPTION = _DESCRIPTION
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download the videos of the MUSIC JSON lists (https://github.com/roudimit/MUSIC_dataset) "
      "and pass their folder as manual_dir (`python -m avsep_jax.data.prepare "
      "--dataset=music/music21 --manual_dir=DIR`, or `--config.dataset.manual_dir=DIR` for "
      "avsep_jax.main), in one of these layouts:\n" + "\n".join(
          f"  - {k}: {v}" for k, v in videos_lib.LAYOUTS.items()))

  def find_recordings(self, manual_dir, report):
    config = self.builder_config
    found = videos_lib.find_videos(manual_dir, config.class_names, report,
                                   allow_pickle=self._allow_pickle)
    found = [v for v in found if (len(v.labels) == 2) == config.duets]
    splits = {v.split for v in found}
    if found and None not in splits and "train" in splits and "validation" not in splits:
      # The layout has train/test only (SeCo's pickles, CSVs without val.csv).
      found = videos_lib.hold_out_validation(found, VALIDATION_FRACTION, self._split_seed)
    return found
