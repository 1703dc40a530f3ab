"""avsep_jax.audio against librosa and independent references."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from avsep_jax import audio
from avsep_jax import synthetic_signals


def rel_err(ours, ref):
  ours, ref = np.asarray(ours), np.asarray(ref)
  return np.linalg.norm(ours - ref) / np.linalg.norm(ref)


def music(rng, length, shape=()):
  count = int(np.prod(shape)) if shape else 1
  x = np.stack([synthetic_signals.note_track(rng, length) for _ in range(count)])
  return (0.5 * x).reshape(shape + (length,)).astype(np.float32)


# ----------------------------------------------------------------------------- STFT


@pytest.mark.filterwarnings("ignore:n_fft=1022 is too large")  # librosa, short inputs
@pytest.mark.parametrize("length", [65535, 32767, 4000, 700, 300])
def test_stft_matches_librosa(rng, length):
  x = music(rng, length)
  ours = audio.stft(x)
  ref = librosa.stft(x, n_fft=1022, hop_length=256)
  assert ours.shape == ref.shape == (512, 1 + length // 256)
  assert ours.dtype == jnp.complex64
  assert rel_err(ours, ref) < 1e-4


@pytest.mark.parametrize("center,pad_mode", [(False, "constant"), (True, "reflect")])
def test_stft_options_match_librosa(rng, center, pad_mode):
  x = music(rng, 5000)
  ours = audio.stft(x, n_fft=512, hop_length=128, center=center, pad_mode=pad_mode)
  ref = librosa.stft(x, n_fft=512, hop_length=128, center=center, pad_mode=pad_mode)
  assert ours.shape == ref.shape
  assert rel_err(ours, ref) < 1e-4


def test_stft_default_size_is_sop_grid(rng):
  """65535 samples at n_fft 1022 / hop 256 give SoP's 512 x 256 spectrogram."""
  assert audio.stft(music(rng, 65535)).shape == (512, 256)
  assert audio.num_frames(65535) == 256


def test_stft_batched_and_jitted(rng):
  x = music(rng, 8000, (2, 3))
  batched = jax.jit(audio.stft)(x)
  assert batched.shape == (2, 3, 512, 32)
  for i in range(2):
    for j in range(3):
      np.testing.assert_allclose(batched[i, j], audio.stft(x[i, j]), rtol=1e-5, atol=1e-4)


def test_hann_window_is_scipy_periodic():
  import scipy.signal
  np.testing.assert_allclose(audio.hann_window(1022),
                             scipy.signal.get_window("hann", 1022, fftbins=True))


# ---------------------------------------------------------------------------- iSTFT


@pytest.mark.parametrize("length", [None, 65535, 60000, 70000])
def test_istft_matches_librosa(rng, length):
  spec = librosa.stft(music(rng, 65535), n_fft=1022, hop_length=256)
  # Perturb so the input is not a consistent STFT: the inverse must still match.
  spec = spec * (1.0 + 0.3 * rng.standard_normal(spec.shape)).astype(np.float32)
  ours = audio.istft(spec, length=length)
  ref = librosa.istft(spec, n_fft=1022, hop_length=256, length=length)
  assert ours.shape == ref.shape
  assert rel_err(ours, ref) < 1e-4


def test_istft_short_length_matches_librosa(rng):
  spec = librosa.stft(music(rng, 3000), n_fft=1022, hop_length=256)
  for length in (1, 200, 2999):
    ours = audio.istft(spec, length=length)
    ref = librosa.istft(spec, n_fft=1022, hop_length=256, length=length)
    assert ours.shape == (length,)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_roundtrip_reconstructs_signal(rng):
  x = music(rng, 32767, (2,))
  y = audio.istft(audio.stft(x), length=32767)
  assert rel_err(y, x) < 1e-5


# ------------------------------------------------------------------------ warp


def grid_sample_reference(img, coords_y, coords_x, align_corners):
  """Per-point bilinear sampling with zeros padding: torch grid_sample semantics."""
  h, w = img.shape
  out = np.zeros((len(coords_y), len(coords_x)))
  for a, gy in enumerate(coords_y):
    for b, gx in enumerate(coords_x):
      if align_corners:
        py, px = (gy + 1) / 2 * (h - 1), (gx + 1) / 2 * (w - 1)
      else:
        py, px = ((gy + 1) * h - 1) / 2, ((gx + 1) * w - 1) / 2
      y0, x0 = int(np.floor(py)), int(np.floor(px))
      val = 0.0
      for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
          if 0 <= yy < h and 0 <= xx < w:
            val += wy * wx * img[yy, xx]
      out[a, b] = val
  return out


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("inverse", [False, True])
def test_warp_matches_grid_sample(rng, align_corners, inverse):
  in_bins, out_bins, frames = (64, 128, 9) if inverse else (128, 64, 9)
  img = rng.uniform(0, 1, (in_bins, frames)).astype(np.float32)
  fn = audio.log_freq_unwarp if inverse else audio.log_freq_warp
  ours = fn(img, out_bins=out_bins, align_corners=align_corners)
  ref = grid_sample_reference(img, audio.warp_coordinates(out_bins, inverse),
                              np.linspace(-1, 1, frames), align_corners)
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_warp_matches_map_coordinates(rng):
  """Same values as per-point bilinear gathers on SoP's 512 -> 256 grid."""
  mag = jnp.asarray(rng.uniform(0, 2, (512, 256)), jnp.float32)
  rows = (audio.warp_coordinates(256) + 1) / 2 * 511
  yy, tt = np.meshgrid(rows, np.arange(256), indexing="ij")
  ref = jax.scipy.ndimage.map_coordinates(mag, [yy, tt], order=1, mode="constant")
  # map_coordinates rounds its pixel coordinates (up to 511) to float32: ~3e-5.
  np.testing.assert_allclose(audio.log_freq_warp(mag), ref, atol=1e-4)


def test_warp_grid_endpoints_and_monotone():
  for inverse in (False, True):
    g = audio.warp_coordinates(256 if not inverse else 512, inverse)
    np.testing.assert_allclose([g[0], g[-1]], [-1.0, 1.0], atol=1e-12)
    assert np.all(np.diff(g) > 0)
  # Forward warp spends more output rows on low frequencies than a linear map.
  assert audio.warp_coordinates(256)[128] < 0.0


def test_unwarp_inverts_warp_on_smooth_maps():
  f = np.linspace(0, 1, 512)[:, None]
  smooth = np.broadcast_to(0.5 + 0.4 * np.sin(3 * f), (512, 16)).astype(np.float32)
  back = audio.log_freq_unwarp(audio.log_freq_warp(smooth))
  assert np.abs(np.asarray(back) - smooth)[:-8].max() < 2e-3


def test_warp_batched_and_differentiable(rng):
  x = jnp.asarray(rng.uniform(0, 1, (2, 3, 512, 20)), jnp.float32)
  y = jax.jit(audio.log_freq_warp)(x)
  assert y.shape == (2, 3, 256, 20)
  g = jax.grad(lambda v: audio.log_freq_unwarp(audio.log_freq_warp(v)).sum())(x)
  assert g.shape == x.shape and bool(jnp.isfinite(g).all())


# --------------------------------------------------------------------- masks


def test_ratio_and_binary_masks():
  src = jnp.array([0.0, 1.0, 2.0, 30.0, 0.0])
  mix = jnp.array([1.0, 2.0, 2.0, 3.0, 0.0])
  np.testing.assert_allclose(audio.ratio_mask(src, mix), [0.0, 0.5, 1.0, 5.0, 0.0],
                             rtol=1e-6)
  np.testing.assert_allclose(audio.ratio_mask(src, mix, max_value=1.0),
                             [0.0, 0.5, 1.0, 1.0, 0.0], rtol=1e-6)
  # Strictly greater than half the mixture: src 1 of mix 2 is not dominant.
  np.testing.assert_array_equal(audio.binary_mask(src, mix), [0, 0, 1, 1, 0])


def test_loss_weight_and_log_magnitude():
  mag = jnp.array([0.0, 1e-6, np.e - 1, 1e6])
  np.testing.assert_allclose(audio.loss_weight(mag), [1e-3, 1e-3, 1.0, 10.0], rtol=1e-5)
  np.testing.assert_allclose(audio.log_magnitude(jnp.array([0.0, 1.0])),
                             [np.log(1e-10), 0.0], rtol=1e-6)


def test_magphase_recomposes(rng):
  spec = audio.stft(music(rng, 4000))
  mag, phase = audio.magphase(spec)
  np.testing.assert_allclose(mag * phase, spec, atol=1e-5)
  np.testing.assert_allclose(jnp.abs(phase), 1.0, atol=1e-6)


def test_mask_to_waveform_oracle_masks_separate(rng):
  """Ideal ratio masks on a 2-mix give back each source closely; ones give the mixture."""
  src = music(rng, 32767, (2,)) / 2  # SoP's mixing: each source divided by N
  mix = src.sum(0)
  mix_spec = audio.stft(mix)
  src_mag = jnp.abs(audio.stft(src))
  masks = audio.ratio_mask(src_mag, jnp.abs(mix_spec), max_value=5.0)
  waves = audio.mask_to_waveform(masks, mix_spec[None], length=32767)
  assert waves.shape == (2, 32767)
  for k in range(2):
    assert rel_err(waves[k], src[k]) < 0.35
  ones = audio.mask_to_waveform(jnp.ones((512, 128)), mix_spec, length=32767)
  assert rel_err(ones, mix) < 1e-5
  clipped = audio.mask_to_waveform(jnp.full((512, 128), 50.0), mix_spec, 32767, clip=True)
  assert float(jnp.abs(clipped).max()) <= 1.0


# ---------------------------------------------------------------- bad input


def test_random_equalizer_gives_each_signal_a_smooth_bounded_gain_curve(rng):
  noise = jnp.asarray(rng.normal(size=(2, 3, 8192)).astype(np.float32))
  key = jax.random.key(0)
  out = jax.jit(audio.random_equalizer, static_argnums=2)(key, noise, 12.0)
  assert out.shape == noise.shape and out.dtype == noise.dtype
  gain_db = 20 * np.log10(np.abs(np.fft.rfft(out)) / np.abs(np.fft.rfft(noise)))  # [2, 3, F]
  assert np.abs(gain_db).max() <= 12.0 + 1e-3
  assert (np.abs(gain_db).max(-1) > 1.0).all()                 # every signal is filtered
  assert np.abs(np.diff(gain_db, axis=-1)).max() < 0.5          # smooth over frequency
  rows = gain_db.reshape(6, -1)
  assert min(np.abs(a - b).max() for i, a in enumerate(rows) for b in rows[i + 1:]) > 1.0
  low = np.fft.rfftfreq(8192, 1 / 11025) < 50.0                 # below min_hz: min_hz's gain
  flat = gain_db[..., low]
  np.testing.assert_allclose(flat, np.broadcast_to(flat[..., -1:], flat.shape), atol=1e-3)
  np.testing.assert_array_equal(audio.random_equalizer(key, noise, 0.0), noise)
  again = audio.random_equalizer(key, noise, 12.0)
  np.testing.assert_allclose(again, out, atol=1e-6)             # the key decides the curves


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match=r"wave must have at least 1 axes"):
    audio.stft(jnp.float32(1.0))
  with pytest.raises(ValueError, match=r"wave .* contains 1 non-finite"):
    audio.stft(np.array([0.0, np.nan, 0.0], np.float32))
  with pytest.raises(ValueError, match=r"wave has 0 samples"):
    audio.stft(np.zeros((2, 0), np.float32))
  with pytest.raises(ValueError, match=r"real floating-point"):
    audio.stft(np.zeros(100, np.int16))
  with pytest.raises(ValueError, match=r"spec has 100 frequency bins"):
    audio.istft(jnp.zeros((100, 4), jnp.complex64), n_fft=1022)
  with pytest.raises(ValueError, match=r"spec must have at least 2 axes"):
    audio.istft(jnp.zeros((512,), jnp.complex64))
  with pytest.raises(ValueError, match=r"spec .* non-finite"):
    audio.istft(jnp.full((512, 4), jnp.inf, jnp.complex64))
  with pytest.raises(ValueError, match=r"log_freq_unwarp"):
    audio.mask_to_waveform(jnp.ones((256, 8)), jnp.ones((512, 8), jnp.complex64), 1000)
  with pytest.raises(ValueError, match=r"mask .* non-finite"):
    audio.log_freq_unwarp(jnp.full((256, 8), jnp.nan))
