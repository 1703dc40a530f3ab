"""`vggsound` and `audioset_instruments` on fake manual_dirs: published lists + clips."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_builders import manual
from data_builders import videos
from data_builders.audioset_instruments import audioset_instruments_dataset_builder as audioset
from data_builders.vggsound import vggsound_dataset_builder as vggsound
import fake_media


def _build(builder_cls, class_names, manual_dir, data_dir):
  config = manual.ManualConfig(name="t", class_names=class_names,
                               clip=videos.ClipOptions(frame_short_side=32, crop_size=24))
  builder = builder_cls(config=config, data_dir=str(data_dir), num_workers=1)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir), compute_stats=tfds.download.ComputeStatsMode.SKIP))
  examples = {split: sorted(str(ex["video_id"], "utf-8") for ex in tfds.data_source(
      f"{builder.name}/t", split=split, data_dir=str(data_dir))) for split in builder.info.splits}
  return builder, examples


def test_vggsound_keeps_instrument_clips_with_the_published_split(tmp_path):
  root = tmp_path / "VGGSound"
  (root / "vggsound.csv").parent.mkdir(parents=True)
  (root / "vggsound.csv").write_text(
      "a1,30,playing cello,train\na2,0,playing cello,train\na3,10,playing cello,train\n"
      'b1,0,"playing violin, fiddle",train\nb2,0,"playing violin, fiddle",train\n'
      "c1,5,dog barking,train\nm1,0,playing cello,train\n"
      'd1,0,playing cello,test\nd2,0,"playing violin, fiddle",test\nx1,0,playing cello,test\n')
  for stem in ("a1_000030", "a2_0", "deeper/a3_000010", "b1_000000", "b2_000000",
               "c1_000005", "d1_000000", "d2_000000", "x1_000000"):
    fake_media.write_mp4(root / "clips" / f"{stem}.mp4")
  fake_media.truncate(root / "clips/x1_000000.mp4")
  builder, examples = _build(vggsound.Vggsound, vggsound.INSTRUMENT_LABELS, root, tmp_path / "d")
  assert {k: len(v) for k, v in examples.items()} == {"train": 3, "validation": 2, "test": 2}
  assert examples["test"] == ["d1_000000_000", "d2_000000_000"]
  report = (builder.data_path / "build_report.tsv").read_text()
  assert "# 1 files skipped" in report and "x1_000000.mp4" in report
  assert "1 listed clips of these classes have no video file" in report
  cello = vggsound.INSTRUMENT_LABELS.index("playing cello")
  ex = next(e for e in tfds.data_source("vggsound/t", split="test", data_dir=str(tmp_path / "d"))
            if e["video_id"] == b"d1_000000_000")
  assert list(ex["labels"]) == [cello] and abs(len(ex["audio"]) - 77175) < 300  # 7 s, 11025 Hz


def test_vggsound_list_errors_name_the_line(tmp_path):
  (tmp_path / "vggsound.csv").write_text("a1,30,playing cello,train\na2,zero,playing cello\n")
  with pytest.raises(ValueError, match=r"vggsound.csv:2: expected youtube_id"):
    vggsound.read_list(tmp_path / "vggsound.csv")


def test_audioset_keeps_clips_of_exactly_one_instrument(tmp_path):
  root = tmp_path / "AudioSet"
  root.mkdir()
  (root / "class_labels_indices.csv").write_text(
      'index,mid,display_name\n0,/m/c,Cello\n1,/m/h,Harp\n2,/m/d,Dog\n3,/m/v,"Violin, fiddle"\n')
  (root / "balanced_train_segments.csv").write_text(
      "# Segments csv created Sun Mar  5 10:54:31 2017\n"
      "# YTID, start_seconds, end_seconds, positive_labels\n"
      'e1, 30.000, 40.000, "/m/c"\ne2, 0.000, 10.000, "/m/c,/m/d"\n'
      'e3, 0.000, 10.000, "/m/c,/m/h"\ne4, 0.000, 10.000, "/m/h"\ne5, 0.000, 10.000, "/m/h"\n'
      'e6, 0.000, 10.000, "/m/v"\ne7, 0.000, 10.000, "/m/v"\n')
  (root / "eval_segments.csv").write_text('t1, 0.000, 10.000, "/m/c"\nt2, 0.000, 10.000, "/m/h"\n')
  for stem in ("e1_30", "Ye2", "e3_0", "e4_000000", "e5_0", "e6_0", "e7_0", "t1_0", "t2_0"):
    fake_media.write_mp4(root / f"{stem}.mp4")
  builder, examples = _build(audioset.AudiosetInstruments, audioset.INSTRUMENTS15, root,
                             tmp_path / "d")
  assert {k: len(v) for k, v in examples.items()} == {"train": 3, "validation": 3, "test": 2}
  assert not any(name.startswith("e3") for split in examples.values() for name in split)
  assert "1 listed clips with several of these classes were left out" in (
      builder.data_path / "build_report.tsv").read_text()
  labels = {str(ex["video_id"], "utf-8"): int(ex["labels"][0]) for split in examples
            for ex in tfds.data_source("audioset_instruments/t", split=split,
                                       data_dir=str(tmp_path / "d"))}
  assert labels["Ye2_000"] == audioset.INSTRUMENTS15.index("Cello")
  assert labels["e6_0_000"] == audioset.INSTRUMENTS15.index("Violin, fiddle")
  assert np.isin(list(labels.values()), [3, 9, 14]).all()
