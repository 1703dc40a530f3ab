"""Audio front end: STFT/iSTFT, log-frequency warp, masks, loss weights (pure jnp)."""

from avsep_jax.audio.augment import random_equalizer
from avsep_jax.audio.features import magnitude_map
from avsep_jax.audio.features import MASK_KINDS
from avsep_jax.audio.features import masks_to_waveforms
from avsep_jax.audio.features import separation_features
from avsep_jax.audio.masks import binary_mask
from avsep_jax.audio.masks import log_magnitude
from avsep_jax.audio.masks import loss_weight
from avsep_jax.audio.masks import mask_to_waveform
from avsep_jax.audio.masks import MAG_EPS
from avsep_jax.audio.masks import ratio_mask
from avsep_jax.audio.spectral import hann_window
from avsep_jax.audio.spectral import istft
from avsep_jax.audio.spectral import magphase
from avsep_jax.audio.spectral import num_frames
from avsep_jax.audio.spectral import stft
from avsep_jax.audio.warp import log_freq_unwarp
from avsep_jax.audio.warp import log_freq_warp
from avsep_jax.audio.warp import warp_coordinates

__all__ = [
    "MAG_EPS", "MASK_KINDS", "binary_mask", "hann_window", "istft", "log_freq_unwarp",
    "log_freq_warp", "log_magnitude", "loss_weight", "magphase",
    "mask_to_waveform", "masks_to_waveforms", "num_frames", "ratio_mask",
    "magnitude_map", "random_equalizer", "separation_features", "stft", "warp_coordinates",
]
