"""The embedded `synthetic_music` builder: feature contract, splits, determinism, bad input."""

import io

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import data_builders  # pylint: disable=unused-import
from data_builders.synthetic_music import instruments
from data_builders.synthetic_music import melodies
from data_builders.synthetic_music import pictures
from data_builders.synthetic_music import sound
from data_builders.synthetic_music import synthetic_music_dataset_builder as smb

TINY = next(c for c in smb.CONFIGS if c.name == "tiny")
NUM_CLASSES = len(instruments.INSTRUMENTS)
SKIP_STATS = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)


def source(data_dir, split):
  return tfds.data_source("synthetic_music/tiny", data_dir=data_dir, split=split)


def test_at_least_twelve_classes_with_distinct_sound_and_picture():
  assert NUM_CLASSES >= 12 and len(set(instruments.CLASS_NAMES)) == NUM_CLASSES
  voices = {(v.program, v.drum_keys) for i in instruments.INSTRUMENTS for v in i.voices}
  assert len(voices) >= NUM_CLASSES
  assert len({i.emoji for i in instruments.INSTRUMENTS}) == NUM_CLASSES


def test_split_sizes_and_feature_contract(tiny_data_dir):
  length = int(TINY.clip_seconds * smb.SAMPLE_RATE)
  num_frames = int(np.ceil(TINY.clip_seconds * TINY.fps))
  sizes = {s: len(source(tiny_data_dir, s)) for s in ("train", "validation", "test", "duet")}
  assert sizes == {"train": NUM_CLASSES, "validation": NUM_CLASSES, "test": NUM_CLASSES,
                   "duet": TINY.duet_clips}
  for split in ("train", "duet"):
    for ex in source(tiny_data_dir, split):
      num_sources = len(ex["labels"])
      assert ex["audio"].dtype == np.int16 and ex["audio"].shape == (length,)
      assert ex["sources"].dtype == np.int16
      assert ex["sources"].shape == ((0, length) if split == "train" else (2, length))
      if split == "duet":  # the mixture is the sum of the kept sources
        assert len(set(ex["labels"])) == 2
        np.testing.assert_allclose(ex["sources"].astype(int).sum(0), ex["audio"], atol=2)
      assert np.all((0 <= np.asarray(ex["labels"])) & (np.asarray(ex["labels"]) < NUM_CLASSES))
      assert ex["fps"] == pytest.approx(TINY.fps) and len(ex["frames"]) == num_frames
      frame = Image.open(io.BytesIO(ex["frames"][0]))
      assert frame.size == (TINY.frame_size, TINY.frame_size) and frame.mode == "RGB"
      det = ex["detections"]
      assert det.dtype == np.float32 and det.shape[1] == 7
      assert det.shape[0] >= num_sources * (num_frames - 2)  # a box per instrument per frame
      assert set(det[:, 1].astype(int)) == set(ex["labels"])
      assert np.all((det[:, 0] >= 0) & (det[:, 0] < num_frames))
      assert np.all((det[:, 2] > 0) & (det[:, 2] < 1))
      assert np.all((det[:, 3] < det[:, 5]) & (det[:, 4] < det[:, 6]))
      assert np.all((det[:, 3:] >= 0) & (det[:, 3:] <= TINY.frame_size))
      assert len(ex["object_crops"]) == num_sources == len(ex["object_crop_rows"])
      for crop, row in zip(ex["object_crops"], ex["object_crop_rows"]):
        x1, y1, x2, y2 = det[row, 3:]
        assert Image.open(io.BytesIO(crop)).size == (x2 - x1, y2 - y1)
      assert ex["video_id"].decode().startswith(split)


def test_audio_is_loud_enough_with_some_rests(tiny_data_dir):
  rms, quiet = [], []
  for ex in source(tiny_data_dir, "train"):
    audio = ex["audio"] / 32768.0
    frames = audio[:len(audio) // 1024 * 1024].reshape(-1, 1024)
    rms.append(np.sqrt(np.mean(audio ** 2)))
    quiet.append(np.mean(np.sqrt(np.mean(frames ** 2, 1)) < 0.005))
    assert np.abs(audio).max() < 1.0
  assert np.median(rms) > 0.05        # loudness-normalised
  assert 0 < np.mean(quiet) < 0.5     # some near-silent windows, mostly sound


def test_examples_are_deterministic_and_match_the_build(tiny_data_dir):
  plans = smb.plan_clips(TINY, melodies.tune_paths(TINY.melody_corpus))
  smb._init_worker(TINY)  # pylint: disable=protected-access
  plan = plans["duet"][1]
  key, first = smb.make_example(plan)
  _, again = smb.make_example(plan)
  built = next(ex for ex in source(tiny_data_dir, "duet") if ex["video_id"].decode() == key)
  for name in ("audio", "sources", "detections"):
    np.testing.assert_array_equal(first[name], again[name])
    np.testing.assert_array_equal(first[name], built[name])
  assert first["frames"] == again["frames"] == list(built["frames"])


def test_splits_use_disjoint_tunes():
  plans = smb.plan_clips(TINY, melodies.tune_paths(TINY.melody_corpus))
  tunes = {s: {t for p in ps for t in p.tune_paths} for s, ps in plans.items()}
  splits = list(tunes)
  for i, a in enumerate(splits):
    for b in splits[i + 1:]:
      assert not tunes[a] & tunes[b], (a, b)
  assert all(len(set(p.class_ids)) == len(p.class_ids) for p in plans["duet"])


def test_perform_keeps_pitched_voices_in_range():
  rng = np.random.default_rng(0)
  tune = np.array([[40, 0, 1], [90, 1, 1], [62, 2, 0.5], [64, 2.5, 0.5]], np.float32)
  voice = melodies.Voice(program=40, low=55, high=100)
  events = melodies.perform(tune, voice, 12.0, rng)
  assert np.all((events[:, 1] >= 55) & (events[:, 1] <= 100))
  assert np.all(np.diff(events[:, 0]) >= 0) and events[:, 0].max() < 12.0
  assert np.all((events[:, 2] >= 1) & (events[:, 2] <= 127))


def test_bad_sources_name_the_file(tmp_path):
  with pytest.raises(ValueError, match="no such file"):
    sound.Renderer(str(tmp_path / "missing.sf2"), 11025)
  with pytest.raises(ValueError, match=r"picture_dir .*: no accordion.png or accordion.svg"):
    pictures.load_pictures(["accordion"], ["1fa97"], str(tmp_path))
  (tmp_path / "accordion.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match=r"accordion.png: cannot be read"):
    pictures.load_pictures(["accordion"], ["1fa97"], str(tmp_path))
  with pytest.raises(ValueError, match="melody_corpus .*no tune files"):
    melodies.tune_paths(str(tmp_path))
  (tmp_path / "bad.abc").write_text("this is not ABC\n")
  with pytest.raises(ValueError, match=r"bad.abc"):
    melodies.parse_tune(str(tmp_path / "bad.abc"))


def test_interrupted_build_is_not_read_as_complete(tmp_path, monkeypatch):
  calls = []

  def failing(plan):
    calls.append(plan)
    if len(calls) == 5:
      raise RuntimeError("interrupted")
    return original(plan)

  original = smb.make_example
  monkeypatch.setattr(smb, "make_example", failing)
  builder = tfds.builder("synthetic_music/tiny", data_dir=str(tmp_path), num_workers=1)
  with pytest.raises(RuntimeError, match="interrupted"):
    builder.download_and_prepare(download_config=SKIP_STATS)
  assert not tfds.builder("synthetic_music/tiny", data_dir=str(tmp_path)).is_prepared()
  with pytest.raises(Exception):
    tfds.data_source("synthetic_music/tiny", data_dir=str(tmp_path), split="train",
                     download=False)


def test_picture_motion_follows_note_onsets():
  picture = pictures.load_pictures(["violin"], ["1f3bb"])["violin"]
  onsets = np.array([[1.0, 60, 127, 0.3], [3.0, 62, 127, 0.3]])  # loud notes at 1 s and 3 s
  _, det, _, _ = pictures.render_frames(np.random.default_rng(0), [picture], [12], [onsets],
                                        seconds=4.0, fps=8.0, frame_size=224,
                                        scale_px=(100.0, 100.0))
  area = (det[:, 5] - det[:, 3]) * (det[:, 6] - det[:, 4])
  at_onsets, quiet = area[[8, 24]], area[[4, 5, 6, 20, 21]]  # frames at t = 1 s, 3 s vs. rest
  assert at_onsets.min() > quiet.max()  # the picture swells on each note
