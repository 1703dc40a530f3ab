"""Ground-truth masks, loss weights and mask-to-waveform reconstruction (SoP family).

All functions are pure `jnp`, batched over leading axes. Magnitudes are `|STFT|`
in linear amplitude (waveforms in [-1, 1]); spectrogram maps are `[..., F, T]`.
"""

from __future__ import annotations

import jax.numpy as jnp

from avsep_jax import validation
from avsep_jax.audio import spectral

# SoP adds this to the mixture magnitude before dividing or taking logs.
MAG_EPS = 1e-10


def log_magnitude(mag, eps: float = MAG_EPS):
  """Network input `log(mag + eps)` (natural log), same shape as `mag`."""
  return jnp.log(jnp.asarray(mag) + eps)


def ratio_mask(source_mag, mix_mag, max_value: float = 5.0, eps: float = MAG_EPS):
  """Ratio mask `clip(source_mag / (mix_mag + eps), 0, max_value)` (SoP, Co-Separation, CRN).

  Args:
    source_mag: one source's magnitude `[..., F, T]`.
    mix_mag: the mixture's magnitude, broadcastable to `source_mag`.
    max_value: upper clip (SoP/Co-Separation: 5; the CPU recipe uses 1).
    eps: added to the mixture magnitude so silent bins give 0, not NaN.
  """
  ratio = jnp.asarray(source_mag) / (jnp.asarray(mix_mag) + eps)
  return jnp.clip(ratio, 0.0, max_value)


def binary_mask(source_mag, mix_mag, threshold: float = 0.5):
  """Binary mask `source_mag > threshold * mix_mag` as floats in {0, 1} (SoP, MTSC)."""
  source_mag = jnp.asarray(source_mag)
  return (source_mag > threshold * jnp.asarray(mix_mag)).astype(source_mag.dtype)


def loss_weight(mix_mag, low: float = 1e-3, high: float = 10.0):
  """SoP's per-bin loss weight `clip(log1p(mix_mag), low, high)`."""
  return jnp.clip(jnp.log1p(jnp.asarray(mix_mag)), low, high)


def mask_to_waveform(mask, mix_spec, length: int, hop_length: int = 256,
                     center: bool = True, clip: bool = False):
  """Separated waveform from a linear-frequency mask and the mixture's complex STFT.

  Computes `istft(mask * |mix| * exp(1j * angle(mix)))`, i.e. the masked
  mixture magnitude with the mixture's phase.

  Args:
    mask: real mask `[..., F, T]` on the STFT's linear bins (unwarp log-frequency
      masks with `log_freq_unwarp` first). Leading axes broadcast against
      `mix_spec`'s, e.g. `[B, N, F, T]` masks with a `[B, 1, F, T]` mixture.
    mix_spec: complex mixture STFT `[..., F, T]`.
    length: output length in samples (the mixture's).
    hop_length: STFT hop (samples).
    center: the STFT's `center` setting.
    clip: clip the waveform to [-1, 1] as SoP's `istft_reconstruction` does.

  Returns:
    Waveform `[..., length]`.
  """
  validation.check_min_rank("mask", mask, 2, "[..., F, T] bins x frames")
  validation.check_min_rank("mix_spec", mix_spec, 2, "[..., F, T] bins x frames")
  mask, mix_spec = jnp.asarray(mask), jnp.asarray(mix_spec)
  if mask.shape[-2:] != mix_spec.shape[-2:]:
    raise ValueError(
        f"mask shape {mask.shape} and mix_spec shape {mix_spec.shape} differ in "
        "their last two axes [F, T]; a log-frequency mask must be mapped back "
        "with log_freq_unwarp(mask, out_bins=F) first")
  validation.check_real_floating("mask", mask)
  validation.check_finite("mask", mask)
  # |mix| * exp(1j * angle(mix)) == mix, so masking the complex STFT is exact.
  wave = spectral.istft(mask * mix_spec, hop_length=hop_length, length=length,
                        center=center)
  return jnp.clip(wave, -1.0, 1.0) if clip else wave
