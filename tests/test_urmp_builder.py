"""The `urmp` builder on a fake URMP folder: parts as true sources, two violins, bad pieces."""

import numpy as np
import tensorflow_datasets as tfds

from avsep_jax.data import mixtures
from data_builders import manual
from data_builders import videos
from data_builders.urmp import urmp_dataset_builder as urmp
import fake_media

VIOLIN, CELLO = urmp.URMP_CLASSES.index("violin"), urmp.URMP_CLASSES.index("cello")


def _piece(root, name, freqs, *, video=True, parts=None):
  folder = root / name
  if video:
    fake_media.write_mp4(folder / f"Vid_{name}.mp4", audio=False)
  abbreviations = name.split("_")[2:]
  for k, (abbr, freq) in enumerate(zip(abbreviations, freqs), 1):
    if parts is None or k <= parts:
      fake_media.write_wav(folder / f"AuSep_{k}_{abbr}_{name[:2]}_x.wav", freq=freq)
  return folder


def test_urmp_builds_ensembles_with_their_parts_and_reports_bad_pieces(tmp_path):
  root = tmp_path / "URMP"
  _piece(root, "01_Jupiter_vn_vc", (440, 220))
  sonata = _piece(root, "02_Sonata_vn_vn", (440, 660))
  # Both players detected as violins: the first violin is the left one.
  np.save(sonata / "detections.npy", np.asarray(
      [[k, VIOLIN, 0.9, x, 0, x + 48, 64] for k in range(70) for x in (48, 0)], np.float32))
  _piece(root, "03_Dance_fl_cl", (880, 330), parts=1)             # a part is missing
  _piece(root, "04_Odd_xx_vc", (500, 220))                        # unknown instrument
  _piece(root, "05_Trio_fl_cl_bn", (880, 330, 110), video=False)  # no video
  _piece(root, "06_March_tpt_tba", (523, 110))
  clip = videos.ClipOptions(clip_seconds=3.0, min_seconds=2.5, frame_short_side=32,
                            crop_size=24)
  config = manual.ManualConfig(name="t", class_names=urmp.URMP_CLASSES, clip=clip,
                               split_by_class=False,
                               fractions={"train": 0.7, "validation": 0.15, "test": 0.15})
  builder = urmp.Urmp(config=config, data_dir=str(tmp_path / "data"), num_workers=1)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(root), compute_stats=tfds.download.ComputeStatsMode.SKIP))
  report = (builder.data_path / "build_report.tsv").read_text()
  assert "# 3 files skipped" in report
  assert "1 AuSep_*.wav parts for 2 instruments" in report and "no Vid_*.mp4" in report
  assert "04_Odd_xx_vc\tnot a URMP piece folder" in report
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 2, "validation": 2, "test": 2}                     # 3 pieces x 2 clips
  examples = {str(ex["video_id"], "utf-8"): ex for split in builder.info.splits
              for ex in tfds.data_source("urmp/t", split=split, data_dir=str(tmp_path / "data"))}
  jupiter = examples["01_Jupiter_vn_vc_000"]
  assert list(jupiter["labels"]) == [VIOLIN, CELLO]
  sources = jupiter["sources"].astype(np.int32)
  assert sources.shape == (2, 33075) and np.abs(sources).max(1).min() > 5000
  np.testing.assert_array_equal(jupiter["audio"], sources.sum(0))
  # No detections: two equal strips of the 48 x 32 stored frame, left to right.
  first = jupiter["detections"][jupiter["detections"][:, 0] == 0]
  np.testing.assert_allclose(first[:, [1, 3, 5]], [[VIOLIN, 0, 24], [CELLO, 24, 48]])
  # Two violins: each source gets its own player, by position.
  sonata_ex = examples["02_Sonata_vn_vn_000"]
  rows = sonata_ex["detections"][sonata_ex["detections"][:, 0] == 0]
  np.testing.assert_allclose(rows[:, 3], [0, 24])
  read = mixtures.read_mixture([sonata_ex], mixtures.MixtureSpec((0,), (0,)),
                               segment_length=16383, crop_size=16, num_frames=2, frame_size=16)
  assert list(read["labels"]) == [VIOLIN, VIOLIN]
  assert np.abs(read["crops"][0].astype(int) - read["crops"][1]).mean() > 10
  assert np.abs(read["frames"][0].astype(int) - read["frames"][1]).mean() > 10
  assert len(sonata_ex["object_crops"]) == 2
