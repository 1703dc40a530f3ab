"""STFT and inverse STFT with librosa's conventions, in pure `jnp`.

`stft`/`istft` follow `librosa.stft`/`librosa.istft` (librosa 0.11): periodic
Hann window of length `n_fft`, `center=True` padding of `n_fft // 2` samples on
each side (zeros by default, `pad_mode="constant"`), one-sided spectrum with
`n_fft // 2 + 1` bins, and window-sum-square normalisation in the inverse.
Frames are cut and overlap-added with reshapes and static slices rather than
gathers, so both directions are cheap to differentiate and run on any backend.

Shapes: waveforms `[..., L]` (samples), spectrograms `[..., F, T]` (frequency
bins, frames); leading axes are batch axes.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

from avsep_jax import validation

_PAD_MODES = ("constant", "reflect")


@functools.lru_cache(maxsize=None)
def hann_window(n_fft: int) -> np.ndarray:
  """Periodic Hann window `[n_fft]` (scipy's `get_window('hann', n, fftbins=True)`)."""
  n = np.arange(n_fft)
  return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)


def num_frames(length: int, n_fft: int = 1022, hop_length: int = 256,
               center: bool = True) -> int:
  """Number of STFT frames for a signal of `length` samples."""
  padded = length + 2 * (n_fft // 2) if center else length
  return 1 + (padded - n_fft) // hop_length


def _check_sizes(n_fft: int, hop_length: int) -> None:
  if n_fft < 2 or hop_length < 1 or hop_length > n_fft:
    raise ValueError(
        f"need n_fft >= 2 and 1 <= hop_length <= n_fft; got {n_fft=}, {hop_length=}")


def _frames(x: jnp.ndarray, n_fft: int, hop_length: int, n: int) -> jnp.ndarray:
  """Cuts `[..., P]` into `n` frames `[..., n, n_fft]` hop_length apart."""
  k = math.ceil(n_fft / hop_length)  # hop-sized blocks per frame
  total = (n + k - 1) * hop_length
  x = x[..., :total]
  x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, total - x.shape[-1])])
  blocks = x.reshape(x.shape[:-1] + (n + k - 1, hop_length))
  frames = jnp.concatenate([blocks[..., j:j + n, :] for j in range(k)], axis=-1)
  return frames[..., :n_fft]


def _overlap_add(frames: jnp.ndarray, hop_length: int) -> jnp.ndarray:
  """Overlap-adds frames `[..., n, W]` spaced hop_length apart -> `[..., (n-1)*hop + W]`."""
  n, width = frames.shape[-2:]
  k = math.ceil(width / hop_length)
  frames = jnp.pad(frames, [(0, 0)] * (frames.ndim - 1) + [(0, k * hop_length - width)])
  chunks = frames.reshape(frames.shape[:-1] + (k, hop_length))  # [..., n, k, hop]
  pad_lead = [(0, 0)] * (frames.ndim - 2)
  out = 0
  for j in range(k):
    out = out + jnp.pad(chunks[..., j, :], pad_lead + [(j, k - 1 - j), (0, 0)])
  out = out.reshape(out.shape[:-2] + ((n + k - 1) * hop_length,))
  return out[..., :(n - 1) * hop_length + width]


def stft(wave, n_fft: int = 1022, hop_length: int = 256, center: bool = True,
         pad_mode: str = "constant") -> jnp.ndarray:
  """Short-time Fourier transform, as `librosa.stft` with a Hann window.

  Args:
    wave: real waveform `[..., L]`, L >= 1 samples.
    n_fft: FFT size and window length (samples).
    hop_length: frame step (samples).
    center: pad `n_fft // 2` samples on both sides so frame t is centred at
      sample `t * hop_length`.
    pad_mode: "constant" (zeros, librosa 0.11's default) or "reflect".

  Returns:
    Complex spectrogram `[..., n_fft // 2 + 1, T]` with
    `T = num_frames(L, n_fft, hop_length, center)`; complex64 for float32 input.
  """
  _check_sizes(n_fft, hop_length)
  validation.check_min_rank("wave", wave, 1, "[..., L] samples")
  validation.check_real_floating("wave", wave)
  validation.check_finite("wave", wave)
  if pad_mode not in _PAD_MODES:
    raise ValueError(f"pad_mode must be one of {_PAD_MODES}; got {pad_mode!r}")
  wave = jnp.asarray(wave)
  length = wave.shape[-1]
  min_length = 1 if center else n_fft
  if length < min_length or (pad_mode == "reflect" and center and length <= n_fft // 2):
    raise ValueError(
        f"wave has {length} samples (shape {wave.shape}); stft with {n_fft=}, "
        f"{center=}, {pad_mode=} needs at least "
        f"{max(min_length, n_fft // 2 + 1 if pad_mode == 'reflect' else 0)}")
  if center:
    pad = [(0, 0)] * (wave.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    wave = jnp.pad(wave, pad, mode=pad_mode)
  n = num_frames(length, n_fft, hop_length, center)
  window = jnp.asarray(hann_window(n_fft), wave.dtype)
  frames = _frames(wave, n_fft, hop_length, n) * window  # [..., T, n_fft]
  spec = jnp.fft.rfft(frames, n=n_fft, axis=-1)         # [..., T, F]
  return jnp.swapaxes(spec, -1, -2)


@functools.lru_cache(maxsize=None)
def _window_sumsquare(n_fft: int, hop_length: int, n: int) -> np.ndarray:
  win_sq = hann_window(n_fft) ** 2
  out = np.zeros(n_fft + hop_length * (n - 1))
  for t in range(n):
    out[t * hop_length:t * hop_length + n_fft] += win_sq
  return out


def istft(spec, n_fft: int | None = None, hop_length: int = 256,
          length: int | None = None, center: bool = True) -> jnp.ndarray:
  """Inverse STFT, as `librosa.istft` with a Hann window.

  Args:
    spec: complex spectrogram `[..., F, T]`.
    n_fft: FFT size; default `2 * (F - 1)` (so 1022 for 512 bins).
    hop_length: frame step (samples).
    length: output length in samples; default what the frames cover
      (`hop_length * (T - 1)` when `center`). Shorter outputs are cut, longer
      ones zero-padded, exactly as librosa does.
    center: whether the forward STFT padded `n_fft // 2` on both sides.

  Returns:
    Real waveform `[..., length]` (float32 for complex64 input).
  """
  validation.check_min_rank("spec", spec, 2, "[..., F, T] bins x frames")
  spec = jnp.asarray(spec)
  bins, frames_in = spec.shape[-2:]
  n_fft = 2 * (bins - 1) if n_fft is None else n_fft
  _check_sizes(n_fft, hop_length)
  if n_fft // 2 + 1 != bins:
    raise ValueError(f"spec has {bins} frequency bins (shape {spec.shape}); "
                     f"{n_fft=} needs {n_fft // 2 + 1}")
  if length is not None and length < 1:
    raise ValueError(f"length must be positive; got {length=}")
  if not jnp.issubdtype(spec.dtype, jnp.complexfloating):
    spec = spec.astype(jnp.result_type(spec.dtype, jnp.complex64))
  validation.check_finite("spec", spec)
  n = frames_in
  if length is not None:
    padded = length + 2 * (n_fft // 2) if center else length
    n = min(frames_in, math.ceil(padded / hop_length))
  if length is not None:
    out_len = length
  else:
    out_len = n_fft + hop_length * (n - 1) - (2 * (n_fft // 2) if center else 0)
  real_dtype = jnp.finfo(spec.dtype).dtype
  window = jnp.asarray(hann_window(n_fft), real_dtype)
  frames = jnp.fft.irfft(jnp.swapaxes(spec[..., :n], -1, -2), n=n_fft, axis=-1)
  signal = _overlap_add(frames * window, hop_length)  # [..., n_fft + hop*(n-1)]
  wss = _window_sumsquare(n_fft, hop_length, n)
  tiny = np.finfo(np.dtype(real_dtype)).tiny
  scale = np.where(wss > tiny, 1.0 / np.where(wss > tiny, wss, 1.0), 1.0)
  signal = signal * jnp.asarray(scale, real_dtype)
  start = n_fft // 2 if center else 0
  signal = signal[..., start:start + out_len]
  short = out_len - signal.shape[-1]
  if short > 0:
    signal = jnp.pad(signal, [(0, 0)] * (signal.ndim - 1) + [(0, short)])
  return signal


def magphase(spec) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Splits a complex spectrogram into magnitude and unit phasor, as `librosa.magphase`.

  Args:
    spec: complex `[..., F, T]`.

  Returns:
    `(mag, phase)`: real `|spec|` and complex `exp(1j * angle(spec))` (1 where
    `spec == 0`), so `spec == mag * phase`.
  """
  spec = jnp.asarray(spec)
  mag = jnp.abs(spec)
  phase = jnp.exp(1j * jnp.angle(spec).astype(mag.dtype))
  return mag, phase
