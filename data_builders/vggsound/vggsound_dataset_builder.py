"""`vggsound`: the clips of VGGSound's instrument classes ("playing ...") you downloaded.

VGGSound (Chen et al., ICASSP 2020) is published as `vggsound.csv`, rows
`youtube_id,start_seconds,label,split` of 10 s clips. Put that file and the
downloaded clips (`<youtube_id>_<start:06d>.mp4`, any folder depth) in
`manual_dir`. The `instruments` config keeps the 55 labels that name playing a
musical instrument, with VGGSound's own label text; the published train/test
split is kept, and a seeded 10 % of each class's training clips is held out as
`validation`.

    python -m avsep_jax.data.prepare --dataset=vggsound --manual_dir=~/VGGSound
"""

from __future__ import annotations

from etils import epath

from data_builders import manual
from data_builders import videos as videos_lib

_DESCRIPTION = __doc__.split("\n\n")[1]

# VGGSound labels for playing a musical instrument (sung, whistled, tapped and
# struck-object classes such as "singing bowl" or "wind chime" are left out).
INSTRUMENT_LABELS = tuple(sorted(
    "playing " + name for name in (
        "accordion", "acoustic guitar", "bagpipes", "banjo", "bass drum", "bass guitar",
        "bassoon", "bongo", "bugle", "castanets", "cello", "clarinet", "congas", "cornet",
        "cymbal", "didgeridoo", "djembe", "double bass", "drum kit", "electric guitar",
        "electronic organ", "erhu", "flute", "french horn", "glockenspiel", "gong", "guiro",
        "hammond organ", "harmonica", "harp", "harpsichord", "mandolin", "marimba, xylophone",
        "oboe", "piano", "saxophone", "shofar", "sitar", "snare drum",
        "steel guitar, slide guitar", "steelpan", "synthesizer", "tabla", "tambourine",
        "theremin", "timbales", "timpani", "trombone", "trumpet", "tuning fork", "tympani",
        "ukulele", "vibraphone", "violin, fiddle", "zither")))
SPLITS = {"train": "train", "test": "test"}


def read_list(path) -> list[videos_lib.ListedClip]:
  """`vggsound.csv` rows -> clips (a malformed row is a `ValueError` naming its line)."""
  clips = []
  for line_no, row in enumerate(videos_lib.csv_rows(path), 1):
    if not row:
      continue
    try:
      youtube_id, start, label, split = (x.strip() for x in row[:4])
      clips.append(videos_lib.ListedClip(youtube_id, float(start), (label,), SPLITS[split]))
    except (ValueError, KeyError) as e:
      raise ValueError(f"{path}:{line_no}: expected youtube_id,start_seconds,label,"
                       f"train|test; got {row}") from e
  return clips


class Vggsound(manual.ManualVideoBuilder):
  """VGGSound instrument clips from a manual_dir of downloaded videos."""

  BUILDER_CONFIGS = [manual.ManualConfig(
      name="instruments", description="The 55 instrument labels; train/validation/test.",
      class_names=INSTRUMENT_LABELS,
      clip=videos_lib.ClipOptions(clip_seconds=10.0))]
  HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/vggsound/"
  DESCRIPTION = _DESCRIPTION
  VALIDATION_FRACTION = 0.1
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put vggsound.csv (from the VGGSound homepage) and your downloaded clips "
      "(<youtube_id>_<start:06d>.mp4) in one folder and pass it as manual_dir "
      "(`python -m avsep_jax.data.prepare --dataset=vggsound --manual_dir=DIR`).")

  def find_recordings(self, manual_dir, report):
    listing = epath.Path(manual_dir) / "vggsound.csv"
    if not listing.exists():
      raise ValueError(f"{listing} is missing: put VGGSound's published vggsound.csv there")
    found = videos_lib.find_listed_clips(manual_dir, read_list(listing),
                                         self.builder_config.class_names, report)
    return videos_lib.hold_out_validation(found, self.VALIDATION_FRACTION, self._split_seed)
