"""Separation models (Flax NNX) and the registry that builds them from a config.

`model.name` in a config picks the class; the section's other keys are its
constructor arguments. Every model maps
`{"mix_mag": [B, F, T], "crops" | "frames": ..., "source_mask": [B, N]}` to
`{"mask_logits": [S, B, N, F, T]}` (S = 1, or 1 + refinement steps), plus
`"class_logits"` `[B, N, C]` where it has a classifier.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from flax import nnx

from avsep_jax.models.class_masks import ClassMaskUNet
from avsep_jax.models.coseparation import CoSeparation
from avsep_jax.models import layers
from avsep_jax.models.crn import CRN
from avsep_jax.models.ial_cms import IALCMS
from avsep_jax.models.mtsc import MTSC
from avsep_jax.models.seco import SeCo
from avsep_jax.models.sop import SoundOfPixels
from avsep_jax.models.unet import AudioUNet
from avsep_jax.models.visual import VisualEncoder

MODELS: dict[str, type[nnx.Module]] = {
    "sop": SoundOfPixels,
    "coseparation": CoSeparation,
    "crn": CRN,
    "mtsc": MTSC,
    "class_masks": ClassMaskUNet,
    "ial_cms": IALCMS,
    "seco": SeCo,
}


def model_class(name: str) -> type[nnx.Module]:
  """The registered class of `name`; unknown names list the valid ones."""
  if name not in MODELS:
    raise ValueError(f"model.name={name!r} is not a registered model; valid: {sorted(MODELS)}")
  return MODELS[name]


def build_model(model_config: Mapping[str, Any], *, rngs: nnx.Rngs) -> nnx.Module:
  """Builds `model_config["name"]` with the config's other keys as arguments.

  `compute_dtype` ('float32' or 'bfloat16', default float32) is not a class
  argument: it sets the compute dtype of the built model's convolutions and
  linear layers (`layers.set_compute_dtype`).

  Raises:
    ValueError: unknown name, or keys the class does not take (the valid ones listed).
  """
  kwargs = dict(model_config)
  cls = model_class(kwargs.pop("name", None))
  compute_dtype = kwargs.pop("compute_dtype", "float32")
  params = inspect.signature(cls.__init__).parameters
  valid = sorted(k for k in params if k not in ("self", "rngs"))
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f"model {cls.__name__}: unknown config keys {unknown}; valid: {valid}")
  return layers.set_compute_dtype(cls(**_plain(kwargs), rngs=rngs), compute_dtype)


def _plain(value):
  """ConfigDicts and lists as plain dicts and tuples (hashable, as NNX attributes want)."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_plain(v) for v in value)
  return value


__all__ = ["MODELS", "AudioUNet", "CRN", "ClassMaskUNet", "CoSeparation", "IALCMS", "MTSC",
           "SeCo", "SoundOfPixels", "VisualEncoder", "build_model", "model_class"]
