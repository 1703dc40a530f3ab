"""avsep_jax: visually-guided music source separation in JAX/Flax.

Public API: `avsep_jax.audio` (STFT/iSTFT, log-frequency warp, masks) and
`avsep_jax.metrics` (BSS-eval SDR/SIR/SAR).
"""

from avsep_jax import audio
from avsep_jax import metrics

__all__ = ["audio", "metrics"]
