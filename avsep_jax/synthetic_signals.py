"""Deterministic instrument-like signals for tests, benchmarks and the front-end demo.

Numpy only (no JAX): these make inputs, they are not part of a model. A "note
track" is a sequence of harmonic notes with attack/decay envelopes, vibrato and
a little breath noise; "estimates" are what an imperfect separator returns:
a filtered copy of the target plus leakage of the other sources and noise.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 11025


def note_track(rng: np.random.Generator, length: int, sample_rate: int = SAMPLE_RATE,
               low_hz: float = 110.0, high_hz: float = 880.0,
               noise_level: float = 0.01) -> np.ndarray:
  """A monophonic melody `[length]` of harmonic notes (float64, peak about 1).

  Args:
    rng: numpy random generator (the only source of randomness).
    length: samples.
    sample_rate: Hz.
    low_hz, high_hz: range of fundamental frequencies (Hz).
    noise_level: standard deviation of added white noise, relative to peak 1.
  """
  out = np.zeros(length)
  pos = 0
  num_harmonics = int(rng.integers(4, 10))
  rolloff = rng.uniform(0.6, 1.6)  # spectral tilt: amplitude of harmonic h ~ h^-rolloff
  phases = rng.uniform(0, 2 * np.pi, num_harmonics)
  while pos < length:
    dur = int(rng.uniform(0.15, 0.7) * sample_rate)
    seg = min(dur, length - pos)
    t = np.arange(seg) / sample_rate
    f0 = np.exp(rng.uniform(np.log(low_hz), np.log(high_hz)))
    vibrato = 1.0 + 0.004 * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / sample_rate
    tone = np.zeros(seg)
    for h in range(1, num_harmonics + 1):
      if f0 * h < sample_rate / 2:
        tone += h ** -rolloff * np.sin(h * phase + phases[h - 1])
    attack = np.minimum(1.0, t / 0.01)
    envelope = attack * np.exp(-t * rng.uniform(0.5, 6.0))
    if rng.uniform() < 0.15:  # a rest
      envelope *= 0.0
    out[pos:pos + seg] = tone * envelope * rng.uniform(0.3, 1.0)
    pos += seg
  out /= max(np.abs(out).max(), 1e-9)
  return out + noise_level * rng.standard_normal(length)


def fir_lowpass(rng: np.random.Generator, taps: int = 32) -> np.ndarray:
  """A random smooth FIR filter `[taps]` (windowed sinc with a random cut-off)."""
  cutoff = rng.uniform(0.1, 0.45)
  n = np.arange(taps) - (taps - 1) / 2
  h = np.sinc(2 * cutoff * n) * np.hanning(taps)
  return h / h.sum()


def imperfect_estimates(rng: np.random.Generator, sources: np.ndarray,
                        leakage: tuple[float, float] = (0.05, 0.5),
                        noise: tuple[float, float] = (0.005, 0.1),
                        filtered: bool = True) -> np.ndarray:
  """What a separator might return for `sources` `[N, L]`: `[N, L]` estimates.

  Each estimate is the target (FIR-filtered when `filtered`) plus a random
  fraction (in `leakage`) of each other source and white noise of relative
  level in `noise`.
  """
  num, length = sources.shape
  out = np.empty_like(sources)
  for j in range(num):
    target = sources[j]
    if filtered:
      target = np.convolve(target, fir_lowpass(rng), mode="full")[:length]
    others = sum((rng.uniform(*leakage) * sources[k] for k in range(num) if k != j),
                 np.zeros(length))
    level = rng.uniform(*noise) * np.sqrt(np.mean(sources[j] ** 2))
    out[j] = target + others + level * rng.standard_normal(length)
  return out


def mixture_set(seed: int, num_mixtures: int, num_sources: int,
                length: int) -> tuple[np.ndarray, np.ndarray]:
  """`num_mixtures` reference/estimate pairs, each `[num_mixtures, num_sources, length]`."""
  rng = np.random.default_rng(seed)
  refs = np.stack([np.stack([note_track(rng, length) for _ in range(num_sources)])
                   for _ in range(num_mixtures)])
  ests = np.stack([imperfect_estimates(rng, r) for r in refs])
  return refs, ests
