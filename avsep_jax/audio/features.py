"""The separation front end: what every model and loss sees of a batch's audio.

One function turns waveforms into the log-frequency maps of the SoP family,
inside the jitted train or eval step (so the host only moves waveforms).
"""

from __future__ import annotations

import jax.numpy as jnp

from avsep_jax.audio import masks
from avsep_jax.audio import spectral
from avsep_jax.audio import warp

MASK_KINDS = ("ratio", "binary")


def _spectrum_map(spec, warp_bins: int, align_corners: bool):
  mag = jnp.abs(spec)
  return warp.log_freq_warp(mag, warp_bins, align_corners) if warp_bins else mag


def magnitude_map(waveforms, *, n_fft: int = 1022, hop_length: int = 256, warp_bins: int = 256,
                  align_corners: bool = True):
  """Waveforms `[..., L]` -> magnitude maps `[..., F, T]` in the network's bins (as
  `separation_features`' `mix_mag`)."""
  spec = spectral.stft(waveforms, n_fft=n_fft, hop_length=hop_length)
  return _spectrum_map(spec, warp_bins, align_corners)


def separation_features(mixture, sources=None, *, n_fft: int = 1022, hop_length: int = 256,
                        warp_bins: int = 256, align_corners: bool = True, mask: str = "ratio",
                        mask_max: float = 5.0, binary_threshold: float = 0.5) -> dict:
  """Spectrogram features of a mixture and, for training and scoring, its sources.

  Args:
    mixture: waveform `[B, L]` (the sum of `sources`).
    sources: each source's share of the mixture `[B, N, L]` (already divided by
      N, as SoP mixes), or None at inference.
    n_fft, hop_length: STFT (Hann, centred).
    warp_bins: log-frequency rows (SoP: 256; CPU recipe: 128); 0 keeps the
      linear bins.
    align_corners: the warp's `grid_sample` convention.
    mask: ground-truth mask kind, 'ratio' (clipped to [0, mask_max]) or
      'binary' (source > binary_threshold x mixture).
    mask_max: ratio-mask clip (SoP/Co-Separation: 5; the CPU recipe: 1).
    binary_threshold: of binary masks (SoP: 0.5).

  Returns:
    dict with `mix_spec` complex `[B, n_fft // 2 + 1, T]` (for reconstruction),
    `mix_mag` `[B, F, T]` (the network's input map), `weight` `[B, F, T]`
    (SoP's `clip(log1p(mix_mag), 1e-3, 10)`), and with sources `target`
    `[B, N, F, T]` and the sources' magnitudes `source_mag` `[B, N, F, T]` in
    `mix_mag`'s bins.
  """
  if mask not in MASK_KINDS:
    raise ValueError(f"mask={mask!r}: expected one of {MASK_KINDS}")
  mix_spec = spectral.stft(mixture, n_fft=n_fft, hop_length=hop_length)

  def to_map(spec):
    return _spectrum_map(spec, warp_bins, align_corners)

  mix_mag = to_map(mix_spec)
  out = {"mix_spec": mix_spec, "mix_mag": mix_mag, "weight": masks.loss_weight(mix_mag)}
  if sources is not None:
    src_mag = to_map(spectral.stft(sources, n_fft=n_fft, hop_length=hop_length))
    out["source_mag"] = src_mag
    if mask == "ratio":
      out["target"] = masks.ratio_mask(src_mag, mix_mag[:, None], max_value=mask_max)
    else:
      out["target"] = masks.binary_mask(src_mag, mix_mag[:, None], threshold=binary_threshold)
  return out


def masks_to_waveforms(masks_warped, mix_spec, length: int, *, hop_length: int = 256,
                       align_corners: bool = True):
  """Separated waveforms from masks in `mix_mag`'s bins.

  Args:
    masks_warped: masks `[..., B, N, F', T]` (log-frequency rows, or linear bins).
    mix_spec: the mixture's complex STFT `[B, F, T]`.
    length: samples per waveform.

  Returns:
    `[..., B, N, length]`, clipped to [-1, 1] as SoP's reconstruction.
  """
  bins = mix_spec.shape[-2]
  linear = (masks_warped if masks_warped.shape[-2] == bins
            else warp.log_freq_unwarp(masks_warped, bins, align_corners))
  return masks.mask_to_waveform(linear, mix_spec[:, None], length, hop_length=hop_length,
                                clip=True)
