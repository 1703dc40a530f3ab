"""The `music` builder on small fake manual_dirs in each layout, corrupt files included."""

import json

import numpy as np
import soundfile
import pytest
import tensorflow_datasets as tfds

from avsep_jax import data
from avsep_jax.data import mixtures
from data_builders import media
from data_builders import videos
from data_builders.music import music_dataset_builder as music
import fake_media

CLIPS = videos.ClipOptions(clip_seconds=3.0, min_seconds=2.5, frame_short_side=32,
                           crop_size=24)
VIOLIN, CELLO = music.MUSIC21_CLASSES.index("violin"), music.MUSIC21_CLASSES.index("cello")


def build(name, manual_dir, data_dir, *, strict=False, **config):
  """Builds a `music` variant; returns the builder."""
  config = music.MusicConfig(name=name, clip=config.pop("clip", CLIPS), **config)
  builder = music.Music(config=config, data_dir=str(data_dir), num_workers=1, strict=strict)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir), compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


def report_of(builder) -> dict:
  lines = (builder.data_path / "build_report.tsv").read_text().splitlines()
  return dict(line.split("\t") for line in lines if not line.startswith("#"))


@pytest.fixture(scope="module")
def videos_dir(tmp_path_factory):
  """The MUSIC download layout: `solo/<class>/<id>.mp4`, `duet/<a> <b>/<id>.mp4`."""
  root = tmp_path_factory.mktemp("music_videos")
  for cls, freq in (("violin", 440), ("cello", 220), ("flute", 880)):
    for i in range(3):
      fake_media.write_mp4(root / "solo" / cls / f"{cls}{i}.mp4", freq=freq * (1 + 0.1 * i))
  fake_media.write_mp4(root / "solo/kazoo/k0.mp4")                    # not a MUSIC class
  (root / "solo/violin/empty.mp4").write_bytes(b"")
  fake_media.truncate(fake_media.write_mp4(root / "solo/violin/cut.mp4"))
  fake_media.write_mp4(root / "solo/cello/short.mp4", seconds=2.0)
  fake_media.write_mp4(root / "solo/cello/mute.mp4", audio=False)
  fake_media.write_mp4(root / "duet/cello violin/duet0.mp4")
  fake_media.write_detections(root / "detections/violin0.mp4.npy", 70, class_id=VIOLIN)
  np.save(root / "detections/cello1.npy", np.zeros((3, 5), np.float32))  # wrong shape
  return root


def test_videos_layout_builds_clips_and_reports_every_bad_file(videos_dir, tmp_path):
  builder = build("videos", videos_dir, tmp_path)
  bad = report_of(builder)
  assert set(bad) == {str(videos_dir / p) for p in (
      "solo/violin/empty.mp4", "solo/violin/cut.mp4", "solo/cello/short.mp4",
      "solo/cello/mute.mp4", "detections/cello1.npy")}
  assert "shorter than the 2.50 s" in bad[str(videos_dir / "solo/cello/short.mp4")]
  assert "no audio stream" in bad[str(videos_dir / "solo/cello/mute.mp4")]
  assert "shape (3, 5)" in bad[str(videos_dir / "detections/cello1.npy")]
  assert len(builder.info.metadata["bad_files"]) == 5
  assert "'kazoo' is not a class" in (builder.data_path / "build_report.tsv").read_text()
  # 8 usable 7 s solos -> two 3 s clips each (the 1 s tail is dropped); no duet.
  counts = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert sum(counts.values()) == 16 and min(counts.values()) > 0
  # A recording's clips stay in its split; splits.json says which.
  splits = json.loads((builder.data_path / "splits.json").read_text())
  for split in counts:
    ids = {str(ex["video_id"], "utf-8").rsplit("_", 1)[0]
           for ex in tfds.data_source(f"music/videos", split=split, data_dir=str(tmp_path))}
    assert ids <= set(splits[split])
    assert not ids & set().union(*(set(v) for k, v in splits.items() if k != split))


def test_clips_hold_frames_audio_and_detections_on_the_stored_frames(videos_dir, tmp_path):
  build("videos2", videos_dir, tmp_path)
  examples = {str(ex["video_id"], "utf-8"): ex
              for split in ("train", "validation", "test")
              for ex in tfds.data_source("music/videos2", split=split, data_dir=str(tmp_path))}
  ex = examples["violin0_001"]                      # the second 3 s of violin0
  assert list(ex["labels"]) == [VIOLIN]
  assert ex["audio"].shape == (33075,) and ex["sources"].shape == (0, 33075)
  assert len(ex["frames"]) == 24 and float(ex["fps"]) == 8.0
  frame = mixtures._decode(ex["frames"][0], "frame")
  assert frame.size == (48, 32)                     # 96 x 64 -> shorter side 32
  # Detector rows on 8 fps frames 24..47, boxes scaled by 0.5, our class id.
  det = ex["detections"]
  np.testing.assert_array_equal(det[:, 0], np.arange(24))
  np.testing.assert_allclose(det[0, 1:], [VIOLIN, 0.9, 5, 5, 20, 15])
  assert len(ex["object_crops"]) == 1 and list(ex["object_crop_rows"]) == [0]
  # Audio: 11025 Hz mono of a 440 Hz tone.
  spectrum = np.abs(np.fft.rfft(ex["audio"].astype(np.float32)))
  assert abs(np.argmax(spectrum) * 11025 / len(ex["audio"]) - 440) < 5
  # Without detections, the whole frame is the box (score 0).
  np.testing.assert_allclose(examples["flute0_000"]["detections"][0, 2:], [0, 0, 0, 48, 32])


def test_strict_stops_at_the_first_bad_file(videos_dir, tmp_path):
  with pytest.raises(media.MediaError, match=r"cello1\.npy: detection array has shape|"
                                             r"(empty|cut|short|mute)\.mp4"):
    build("strict", videos_dir, tmp_path, strict=True)


def test_duet_config_keeps_duets_with_both_labels_and_half_frame_boxes(videos_dir, tmp_path):
  builder = build("duets", videos_dir, tmp_path, duets=True, fractions={"duet": 1.0})
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"duet": 2}
  ex = tfds.data_source("music/duets", split="duet", data_dir=str(tmp_path))[0]
  assert list(ex["labels"]) == [CELLO, VIOLIN]                 # the folder's order
  rows = ex["detections"][ex["detections"][:, 0] == 0]
  np.testing.assert_allclose(rows[:, [1, 3, 5]], [[CELLO, 0, 24], [VIOLIN, 24, 48]])


def test_frames_audio_layout_with_one_based_detections(tmp_path):
  root = tmp_path / "manual"
  for cls, i in (("violin", 0), ("violin", 1), ("violin", 2), ("cello", 0), ("cello", 1),
                 ("cello", 2)):
    fake_media.write_frames(root / f"frames/{cls}/{cls}{i}.mp4")
    suffix = ".mp3" if i == 0 else ".wav"        # the SoP layout's audio is mp3
    fake_media.write_wav(root / f"audio/{cls}/{cls}{i}{suffix}", sample_rate=44100)
  fake_media.write_frames(root / "frames/cello/orphan.mp4")           # its audio is missing
  (root / "frames/cello/cello2.mp4/000003.jpg").write_bytes(b"not a jpeg")
  # Flute's three recordings are all unusable: no frames, silent, NaN audio.
  (root / "frames/flute/flute0.mp4").mkdir(parents=True)
  fake_media.write_wav(root / "audio/flute/flute0.wav")
  for name, samples in (("flute1", np.zeros(7 * 22050, np.float32)),
                        ("flute2", np.full(7 * 22050, np.nan, np.float32))):
    fake_media.write_frames(root / f"frames/flute/{name}.mp4")
    soundfile.write(root / f"audio/flute/{name}.wav", samples, 22050, subtype="FLOAT")
  # 1-based frame numbers (000001.jpg is frame 1), boxes in the 96 x 64 JPEGs.
  fake_media.write_detections(root / "detections/violin1.mp4.npy", 56, box=(0, 0, 96, 64),
                              class_id=3, base=1)
  clip = videos.ClipOptions(**{**CLIPS.__dict__, "detection_index_base": 1})
  builder = build("frames", root, tmp_path / "data", clip=clip)
  bad = report_of(builder)
  assert set(bad) == {str(root / p) for p in (
      "frames/cello/orphan.mp4", "frames/cello/cello2.mp4/000003.jpg", "frames/flute/flute0.mp4",
      "audio/flute/flute1.wav", "audio/flute/flute2.wav")}
  assert "no audio file" in bad[str(root / "frames/cello/orphan.mp4")]
  assert "has no .jpg/.png frames" in bad[str(root / "frames/flute/flute0.mp4")]
  assert "audio is silent" in bad[str(root / "audio/flute/flute1.wav")]
  assert "non-finite (NaN or inf) audio samples" in bad[str(root / "audio/flute/flute2.wav")]
  examples = [ex for split in builder.info.splits
              for ex in tfds.data_source("music/frames", split=split,
                                         data_dir=str(tmp_path / "data"))]
  assert len(examples) == 10                                    # 5 recordings x 2 clips
  ex = next(e for e in examples if e["video_id"] == b"violin1_000")
  # The detector's class (3) is not ours: the best box of the frame, our label.
  np.testing.assert_array_equal(ex["detections"][:, 0], np.arange(24))
  np.testing.assert_allclose(ex["detections"][0, 1:], [VIOLIN, 0.9, 0, 0, 48, 32])


def test_csv_layout_gives_the_splits_and_reports_missing_detections(tmp_path):
  root = tmp_path / "manual"
  rows = {"train": [], "test": []}
  for split, ids in (("train", ("a", "b", "c")), ("test", ("d", "e"))):
    for i, vid in enumerate(ids):
      cls = ("violin", "cello")[i % 2]
      fake_media.write_wav(root / f"audio/{cls}/{vid}.wav")
      fake_media.write_frames(root / f"frames/{cls}/{vid}.mp4")
      det = f"detection_results/{vid}.mp4.npy"
      if vid != "e":
        fake_media.write_detections(root / det, 56)
      rows[split].append(f"audio/{cls}/{vid}.wav,frames/{cls}/{vid}.mp4,{det}")
  for split, lines in rows.items():
    (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
  builder = build("csv", root, tmp_path / "data")
  # No val.csv: one of the two violin recordings of train.csv becomes validation.
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 4, "validation": 2, "test": 2}
  assert report_of(builder) == {
      str(root / "detection_results/e.mp4.npy"): "detection file is missing"}


def test_prepare_builds_a_registered_config_the_pipeline_reads(videos_dir, tmp_path):
  builder = data.prepare_dataset("music/music11", str(tmp_path), manual_dir=str(videos_dir),
                                 max_examples=1, num_workers=1)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 1, "validation": 1, "test": 1}
  source, index = data.open_indexed_split("music/music11", "train", str(tmp_path))
  batch = mixtures.finish(data.MixOptions(num_mix=1, segment_length=16383, crop_size=32,
                                          num_frames=2, frame_size=40).read(
      source, data.MixtureSpec((0,), (0,))))
  assert batch["crops"].shape == (1, 32, 32, 3) and batch["frames"].shape == (1, 2, 40, 40, 3)
  assert np.abs(batch["sources"]).max() > 0.1


def test_seco_pickles_need_the_opt_in(tmp_path):
  import pickle
  root = tmp_path / "seco"
  rng = np.random.default_rng(0)
  clips = {"train": [], "test": []}
  for split, names in (("train", ("0000", "0001", "0002")), ("test", ("0003",))):
    for cls in ("violin", "cello"):
      for index in names:
        clips[split].append({"category": cls, "index": index,
                             "audio": rng.uniform(-0.3, 0.3, 7 * 11025).astype(np.float32)})
        fake_media.write_frames(root / f"frames/{cls}/{index}.mp4", fps=12)
  (root / "train.pkl").write_bytes(pickle.dumps(clips["train"]))
  (root / "test.pkl").write_bytes(pickle.dumps({"data": clips["test"],
                                                "samples": [[[0, 0], [1, 0]]]}))
  with pytest.raises(ValueError, match="unpickling runs code.*--allow_pickle"):
    build("pkl", root, tmp_path / "data")
  config = music.MusicConfig(name="pkl2", clip=CLIPS)
  builder = music.Music(config=config, data_dir=str(tmp_path / "data"), num_workers=1,
                        allow_pickle=True)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(root), compute_stats=tfds.download.ComputeStatsMode.SKIP))
  # 3 training clips of each class: one of each held out; 2 clips of 3 s per 7 s recording.
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 8, "validation": 4, "test": 4}
  ex = next(e for e in tfds.data_source("music/pkl2", split="test",
                                        data_dir=str(tmp_path / "data"))
            if e["video_id"] == b"violin-0003_000")
  expected = np.round(np.clip(clips["test"][0]["audio"][:33075], -1, 1) * 32767)
  np.testing.assert_array_equal(ex["audio"], expected.astype(np.int16))
  assert len(ex["frames"]) == 24                  # 12 fps frames resampled to 8 fps
