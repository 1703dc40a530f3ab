"""Sound of Pixels' log-frequency warp of spectrograms and its inverse for masks.

SoP resamples the 512 linear-frequency STFT bins onto 256 log-spaced rows with
`F.grid_sample` (bilinear, zeros padding) on the grid of its `warpgrid`:
for output row y in linspace(-1, 1, H_out) the sampled input coordinate is

  forward (spectrogram, 512 -> 256):  g = (base ** ((y + 1) / 2) - (base + 1) / 2) / ((base - 1) / 2)
  inverse (mask, 256 -> 512):         g = log(((base - 1) / 2) * y + (base + 1) / 2) / log(base) * 2 - 1

with base = 21 (SoP's constants 21, 11, 10), and the time axis sampled at
linspace(-1, 1, T).

`grid_sample` maps g in [-1, 1] to input pixels as `(g + 1) / 2 * (n - 1)` with
align_corners=True, or `((g + 1) * n - 1) / 2` with align_corners=False. SoP,
Co-Separation and CRN called it without the argument under PyTorch 0.4, which
meant True; MTSC passes False. We default to True (what the original code
meant): then the time axis is the identity. With False, time is resampled too
(half-pixel shift with zero padding at the edges), exactly as MTSC's code did.

Bilinear sampling along one axis is a linear map, so the warp is applied as two
small interpolation matrices (frequency and, when needed, time) built once per
shape with numpy. This is the same arithmetic as per-point bilinear gathers
(`jax.scipy.ndimage.map_coordinates(order=1, mode="constant")`, which the tests
compare against) but runs as matrix products, which suit TPU/GPU matrix units,
and differentiates without scatter-adds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from avsep_jax import validation

SOP_WARP_BASE = 21.0


def warp_coordinates(out_size: int, inverse: bool = False,
                     base: float = SOP_WARP_BASE) -> np.ndarray:
  """SoP's normalised sampling coordinates `[out_size]` in [-1, 1] (float64).

  Args:
    out_size: number of output rows (256 for the forward warp, 512 for the inverse).
    inverse: False for SoP's `warpgrid(warp=True)` (linear -> log frequency),
      True for `warp=False` (log -> linear, used to unwarp masks).
    base: the warp's log base (SoP: 21).
  """
  y = np.linspace(-1.0, 1.0, out_size)
  half_span, centre = (base - 1.0) / 2.0, (base + 1.0) / 2.0
  if inverse:
    return np.log(half_span * y + centre) / np.log(base) * 2.0 - 1.0
  return (np.power(base, (y + 1.0) / 2.0) - centre) / half_span


def to_pixels(coords: np.ndarray, in_size: int, align_corners: bool) -> np.ndarray:
  """`grid_sample`'s map from normalised coordinates to input pixel positions."""
  if align_corners:
    return (coords + 1.0) / 2.0 * (in_size - 1)
  return ((coords + 1.0) * in_size - 1.0) / 2.0


def bilinear_matrix(pixels: np.ndarray, in_size: int) -> np.ndarray:
  """Matrix `[len(pixels), in_size]` of bilinear weights with zeros outside the input."""
  lo = np.floor(pixels)
  frac = pixels - lo
  lo = lo.astype(np.int64)
  rows = np.arange(len(pixels))
  out = np.zeros((len(pixels), in_size))
  for offset, weight in ((0, 1.0 - frac), (1, frac)):
    idx = lo + offset
    ok = (idx >= 0) & (idx < in_size)
    np.add.at(out, (rows[ok], idx[ok]), weight[ok])
  return out


@functools.lru_cache(maxsize=None)
def warp_matrices(in_bins: int, out_bins: int, frames: int, inverse: bool,
                  align_corners: bool, base: float = SOP_WARP_BASE):
  """Interpolation matrices of the warp: frequency `[out_bins, in_bins]` and time.

  Returns:
    `(freq, time)` float64 numpy arrays; `time` is `[frames, frames]`, or None
    when it is the identity (align_corners=True).
  """
  freq = bilinear_matrix(
      to_pixels(warp_coordinates(out_bins, inverse, base), in_bins, align_corners),
      in_bins)
  if align_corners:
    return freq, None
  time = bilinear_matrix(
      to_pixels(np.linspace(-1.0, 1.0, frames), frames, align_corners), frames)
  return freq, time


def _apply(x, out_bins: int, inverse: bool, align_corners: bool, name: str):
  validation.check_min_rank(name, x, 2, "[..., F, T] bins x frames")
  validation.check_real_floating(name, x)
  validation.check_finite(name, x)
  x = jnp.asarray(x)
  in_bins, frames = x.shape[-2:]
  freq, time = warp_matrices(in_bins, out_bins, frames, inverse, align_corners)
  hi = jax.lax.Precision.HIGHEST  # no bf16 passes on TPU: masks feed the loss
  y = jnp.einsum("gf,...ft->...gt", jnp.asarray(freq, x.dtype), x, precision=hi)
  if time is not None:
    y = jnp.einsum("...gt,st->...gs", y, jnp.asarray(time, x.dtype), precision=hi)
  return y


def log_freq_warp(spec_mag, out_bins: int = 256, align_corners: bool = True):
  """Warps a linear-frequency magnitude `[..., F, T]` to `[..., out_bins, T]` log rows.

  Args:
    spec_mag: real magnitude (or any real map) on linear STFT bins, e.g. 512.
    out_bins: number of log-frequency rows (SoP: 256).
    align_corners: `grid_sample` convention (module docstring); default True.
  """
  return _apply(spec_mag, out_bins, False, align_corners, "spec_mag")


def log_freq_unwarp(mask, out_bins: int = 512, align_corners: bool = True):
  """Maps a log-frequency mask `[..., H, T]` back to `[..., out_bins, T]` linear bins.

  The inverse grid of SoP (`warpgrid(warp=False)`), used on predicted masks
  before they multiply the mixture spectrogram.
  """
  return _apply(mask, out_bins, True, align_corners, "mask")
