"""Training-time audio augmentation (pure jnp, jit-able)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_equalizer(key, signals, max_db: float, num_terms: int = 4,
                     min_hz: float = 50.0, sample_rate: int = 11025):
  """Filters each signal by its own random smooth gain curve over log-frequency.

  The gain in dB is `sum_k a_k cos(pi k u)` for k = 1..num_terms, with
  `u in [0, 1]` the log-frequency from `min_hz` to Nyquist (frequencies below
  `min_hz` take its gain) and `a_k ~ U(-1, 1) * max_db / num_terms`, so the
  curve stays within +-max_db. Applied as one circular filter over each
  signal's whole length (an FFT of the signal, times the gain, inverse FFT).

  Args:
    key: a JAX PRNG key.
    signals: `[..., L]` waveforms.
    max_db: largest gain or cut anywhere (dB); 0 returns `signals` as they are.
    num_terms: cosine terms: how many bumps the curve can have over the band.
    min_hz: the curve's lowest frequency (Hz).
    sample_rate: Hz.

  Returns:
    `[..., L]` filtered waveforms, same dtype.
  """
  if max_db == 0:
    return signals
  length = signals.shape[-1]
  freqs = jnp.fft.rfftfreq(length, 1.0 / sample_rate)
  nyquist = sample_rate / 2
  u = jnp.log(jnp.clip(freqs, min_hz, nyquist) / min_hz) / jnp.log(nyquist / min_hz)
  amplitudes = jax.random.uniform(key, signals.shape[:-1] + (num_terms,), jnp.float32,
                                  -1.0, 1.0) * (max_db / num_terms)
  basis = jnp.cos(jnp.pi * jnp.arange(1, num_terms + 1)[:, None] * u[None])  # [terms, F]
  gain_db = amplitudes @ basis                                          # [..., F]
  spectrum = jnp.fft.rfft(signals, axis=-1) * 10.0 ** (gain_db / 20.0)
  return jnp.fft.irfft(spectrum, n=length, axis=-1).astype(signals.dtype)
