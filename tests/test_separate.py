"""`--mode=separate`: one's own video or audio file through a trained checkpoint."""

import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import soundfile

from avsep_jax import audio
from avsep_jax import separate
from avsep_jax import train
from configs import crn
from data_builders import media
import fake_media

ROOT = pathlib.Path(__file__).resolve().parent.parent


def tiny_config(data_dir):
  config = crn.get_config("tiny")
  config.dataset.data_dir = data_dir
  config.eval.after_training = False
  config.train.steps, config.train.checkpoint_every = 1, 1
  return config


@pytest.fixture(scope="module")
def workdir(tiny_data_dir, tmp_path_factory):
  """A tiny CRN checkpoint (one training step)."""
  path = tmp_path_factory.mktemp("crn")
  train.train_and_evaluate(tiny_config(tiny_data_dir), path)
  return path


@pytest.fixture(scope="module")
def duet_video(tmp_path_factory):
  return fake_media.write_mp4(tmp_path_factory.mktemp("in") / "duet.mp4", seconds=7.0)


def ideal_estimator(masks_value):
  """Stands in for a model whose masks are all `masks_value`: STFT, mask, iSTFT."""
  def estimate(batch, mixtures):
    count = batch["crops"].shape[1]
    features = audio.separation_features(jnp.asarray(mixtures), warp_bins=0)
    masks = jnp.full((1, len(mixtures), count) + features["mix_mag"].shape[1:], masks_value)
    return np.asarray(audio.masks_to_waveforms(masks, features["mix_spec"], mixtures.shape[-1]))
  return estimate


def picture_queries(count):
  pixels = np.zeros((8, 8, 3), np.uint8)
  return lambda start, window: {"crops": np.stack([pixels] * count)}


def test_overlap_add_gives_the_input_back_when_masks_are_all_ones():
  rng = np.random.default_rng(0)
  length = 60 * 11025 + 123                       # 60 s, not a whole number of windows
  wave = (0.1 * rng.standard_normal(length)).astype(np.float32)  # inside [-1, 1]
  ones = separate.separate_audio(ideal_estimator(1.0), wave, picture_queries(2),
                                 window=16383, batch_size=4, progress=False)
  assert ones.shape == (1, 2, length)
  np.testing.assert_allclose(ones[0, 0], wave, atol=1e-4)
  np.testing.assert_allclose(ones[0, 1], wave, atol=1e-4)
  halves = separate.separate_audio(ideal_estimator(0.5), wave, picture_queries(2),
                                   window=16383, batch_size=3, progress=False)
  np.testing.assert_allclose(halves[0].sum(0), wave, atol=1e-4)   # the sources sum to it
  # An input shorter than one window keeps its length too.
  short = separate.separate_audio(ideal_estimator(1.0), wave[:5000], picture_queries(1),
                                  window=16383, batch_size=4, progress=False)
  np.testing.assert_allclose(short[0, 0], wave[:5000], atol=1e-4)


def test_separates_a_duet_video_on_the_command_line(tiny_data_dir, workdir, duet_video,
                                                   tmp_path):
  out = tmp_path / "out"
  done = subprocess.run(
      [sys.executable, "-m", "avsep_jax.main", "--config=configs/crn.py:tiny",
       f"--config.dataset.data_dir={tiny_data_dir}",
       f"--workdir={workdir}", "--mode=separate", f"--input={duet_video}", f"--output={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  length = len(media.read_audio(duet_video))
  for k in (1, 2):
    wave, rate = soundfile.read(out / f"source{k}.wav")
    assert rate == 11025 and len(wave) == length
  page = (out / "report" / "index.html").read_text()
  steps = 1 + crn.get_config("tiny").model.refine_steps
  assert page.count("<audio") == 1 + 2 * steps            # mixture, every step of each source
  assert "1: left" in page and "2: right" in page


def test_long_audio_with_pictures_and_a_video_with_detections(tiny_data_dir, workdir, duet_video,
                                                              tmp_path, capsys):
  config = tiny_config(tiny_data_dir)
  wav = fake_media.write_wav(tmp_path / "long.wav", seconds=60.0)
  pictures = []
  for k, colour in enumerate(((200, 30, 30), (30, 30, 200))):
    pictures.append(tmp_path / f"instrument{k}.png")
    Image.new("RGB", (40, 30), colour).save(pictures[-1])
  out = separate.separate_file(config, workdir, wav, images=[str(p) for p in pictures],
                               progress=False)
  assert out == workdir / "separated" / "long.wav"
  assert "long.wav: 22050 Hz audio, resampled to 11025 Hz" in capsys.readouterr().out
  length = len(media.read_audio(wav))
  assert length == 60 * 11025
  for k in (1, 2):
    assert len(soundfile.read(out / f"source{k}.wav")[0]) == length
  # Detections: two players per frame; each window asks for them left to right.
  rows = [[k, 0, 0.9, 50, 5, 90, 60] for k in range(56)] + [
      [k, 1, 0.8, 2, 5, 40, 60] for k in range(56)]
  np.save(tmp_path / "duet.npy", np.asarray(rows, np.float32))
  out = separate.separate_file(config, workdir, duet_video, output=tmp_path / "det",
                               detections=str(tmp_path / "duet.npy"), progress=False)
  assert (out / "source2.wav").exists() and "2: source 2" in (
      out / "report" / "index.html").read_text()


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("garbage", "cannot open"),
    ("no_audio", "no audio stream"),
    ("empty_wav", "no audio samples"),
    ("box_outside", "is not inside the 96x64 frame"),
    ("box_syntax", "is not four numbers"),
    ("audio_without_pictures", "give a picture of each instrument"),
    ("bad_detections", "shape (3, 5)"),
    ("detections_outside", "is not inside the 96x64 frame"),
    ("nan_audio", "non-finite (NaN or inf) audio samples"),
    ("silent_audio", "the audio is silent (every sample is 0)"),
])
def test_bad_input_fails_clearly_and_writes_nothing(tiny_data_dir, workdir, duet_video, tmp_path,
                                                    case, message):
  config = tiny_config(tiny_data_dir)
  kwargs, path = {}, duet_video
  if case == "missing":
    path = tmp_path / "nothing.mp4"
  elif case == "garbage":
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"not a video at all" * 100)
  elif case == "no_audio":
    path = fake_media.write_mp4(tmp_path / "mute.mp4", audio=False)
  elif case == "empty_wav":
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, np.float32), 22050)
  elif case == "box_outside":
    kwargs["boxes"] = "0,0,40,60;50,0,120,60"
  elif case == "box_syntax":
    kwargs["boxes"] = "0,0,40;50,0,90,60"
  elif case == "audio_without_pictures":
    path = fake_media.write_wav(tmp_path / "mix.wav", seconds=3.0)
  elif case == "bad_detections":
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), np.float32))
    kwargs["detections"] = str(tmp_path / "bad.npy")
  elif case == "detections_outside":
    np.save(tmp_path / "far.npy", np.asarray([[0, 0, 0.9, 50, 5, 190, 60]], np.float32))
    kwargs["detections"] = str(tmp_path / "far.npy")
  elif case in ("nan_audio", "silent_audio"):
    path = tmp_path / f"{case}.wav"
    fill = np.nan if case == "nan_audio" else 0.0
    soundfile.write(path, np.full(3 * 22050, fill, np.float32), 22050, subtype="FLOAT")
    kwargs["images"] = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    for name in kwargs["images"]:
      Image.new("RGB", (32, 32), (200, 40, 40)).save(name)
  out = tmp_path / "out"
  with pytest.raises((ValueError, FileNotFoundError), match=message.replace("(", r"\(")
                     .replace(")", r"\)")):
    separate.separate_file(config, workdir, path, output=out, progress=False, **kwargs)
  assert not out.exists() and not list(tmp_path.glob(".out.*"))
