"""The training loop, one for every system: jitted, data-parallel, checkpointed, resumable.

`train_and_evaluate(config, workdir)` builds the model named by `model.name`,
an Optax optimiser with per-module learning rates and schedules from
`config.train`, and the grain mix-and-separate stream of `config.dataset`, then
runs `config.train.steps` steps of one `jax.jit`-compiled step:

- the train state (model + optimiser, an NNX object) is split once into a
  graph definition and a state pytree; the step merges them, computes the
  front end (STFT, warp, targets) from waveforms, the model's loss and its
  gradients, applies the update and returns the new state, which is donated;
- the batch is sharded over the `data` axis of a `jax.make_mesh` mesh and the
  state replicated, so the same code runs on one CPU, 8 fake CPU devices, a
  GPU or a TPU slice (several hosts: each feeds its own share of the stream);
- a step whose loss or gradients are not finite leaves the state unchanged, so
  no checkpoint or logged metric ever holds NaNs; training then stops with an
  error naming the step (`train.on_non_finite='stop'`) or warns, counts it
  and goes on (`'skip'`, up to `train.max_skipped_steps`);
- an Orbax `CheckpointManager` under `workdir/checkpoints` saves the state, the
  base RNG key and the grain iterator state together; a run started on a
  workdir with checkpoints resumes from the latest one exactly;
- clu writes metrics (TensorBoard + log), progress (steps/s, ETA) and, when
  asked, a profile; validation SDR every `eval.every` steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import signal
import threading
import time
from typing import Any

from absl import logging
from etils import epath
import grain
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from avsep_jax import audio
from avsep_jax import data
from avsep_jax import files
from avsep_jax import losses
from avsep_jax import models

DEFAULT_GROUP = "default"
# fold_in index of the per-step key that `train.source_eq_db` draws its curves from.
_EQ_STREAM = 1


class TrainState(nnx.Module):
  """What a step updates: the model and its optimiser (whose `step` counts updates)."""

  def __init__(self, model: nnx.Module, tx: optax.GradientTransformation):
    self.model = model
    self.optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)


def learning_rate_schedule(base: float, train: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up over `warmup_steps`, then x `decay_factor` at each of `decay_steps`."""
  decay = optax.piecewise_constant_schedule(
      base, {int(s) - train.warmup_steps: train.decay_factor for s in train.decay_steps})
  if not train.warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, base, train.warmup_steps)
  return optax.join_schedules([warmup, decay], [train.warmup_steps])


def stage_schedule(base: float, train: ml_collections.ConfigDict,
                   group: str) -> optax.Schedule:
  """`group`'s learning rate over the curriculum `train.stages`.

  Each stage is `dict(start=step, frozen=(module names, ...), warmup=steps)`.
  In a stage that freezes `group` its rate is 0, so its parameters keep their
  values exactly (Adam's and SGD's updates, weight decay included, are scaled
  by the rate). A group that a stage unfreezes ramps linearly from 0 to its
  scheduled rate over that stage's `warmup` steps (the soft transition); other
  groups follow `learning_rate_schedule`. The pieces are joined at the stages'
  starts with `optax.join_schedules`.
  """
  base_schedule = learning_rate_schedule(base, train)
  stages = [dict(s) for s in train.stages]
  if not stages:
    return base_schedule
  pieces, frozen_before = [], False
  for stage in stages:
    frozen = group in stage.get("frozen", ())
    warmup = int(stage.get("warmup", 0)) if frozen_before and not frozen else 0

    def piece(t, start=int(stage["start"]), frozen=frozen, warmup=warmup):
      if frozen:
        return jnp.zeros_like(t, dtype=jnp.float32)
      rate = base_schedule(t + start)
      return rate * jnp.minimum(t / warmup, 1.0) if warmup else rate

    pieces.append(piece)
    frozen_before = frozen
  return optax.join_schedules(pieces, [int(s["start"]) for s in stages[1:]])


def stage_groups(train: ml_collections.ConfigDict) -> list[str]:
  """The modules some stage of `train.stages` freezes (each needs its own group)."""
  return sorted({m for s in train.stages for m in dict(s).get("frozen", ())})


def validate_stages(train: ml_collections.ConfigDict) -> None:
  """Stages start at 0, in increasing order, with known keys; errors name the stage."""
  starts = []
  for i, stage in enumerate(train.stages):
    stage = dict(stage)
    unknown = sorted(set(stage) - {"start", "frozen", "warmup"})
    if unknown or "start" not in stage:
      raise ValueError(f"train.stages[{i}]={stage}: expected keys 'start' (required), "
                       f"'frozen' and 'warmup'; unknown: {unknown}")
    if isinstance(stage.get("frozen", ()), str):
      raise ValueError(f"train.stages[{i}].frozen={stage['frozen']!r}: expected a tuple of "
                       "module names")
    if int(stage.get("warmup", 0)) < 0:
      raise ValueError(f"train.stages[{i}].warmup={stage['warmup']} must be >= 0")
    starts.append(int(stage["start"]))
  if starts and (starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:]))):
    raise ValueError(f"train.stages start at steps {starts}: the first must be 0 and the "
                     "rest increasing")


def _top_level_name(path) -> str:
  key = path[0]
  return str(getattr(key, "key", getattr(key, "name", key)))


def every_k_steps(inner: optax.GradientTransformation, k: int) -> optax.GradientTransformation:
  """Applies `inner` only on updates 0, k, 2k, ...; other updates are zero and
  leave `inner`'s state (Adam's moments, momentum, and so the step count its
  learning-rate schedule reads) untouched (IAL-CMS's separator, updated on
  every third batch)."""
  if k == 1:
    return inner

  def init(params):
    return inner.init(params), jnp.zeros([], jnp.int32)

  def update(updates, state, params=None):
    inner_state, count = state
    new_updates, new_inner = inner.update(updates, inner_state, params)
    apply = count % k == 0
    new_updates = jax.tree.map(lambda u: jnp.where(apply, u, jnp.zeros_like(u)), new_updates)
    new_inner = jax.tree.map(lambda a, b: jnp.where(apply, a, b), new_inner, inner_state)
    return new_updates, (new_inner, count + 1)

  return optax.GradientTransformation(init, update)


# What `train.module_optimizers` may set per module.
MODULE_OPTIMIZER_KEYS = ("b1", "b2", "weight_decay", "every")


def make_optimizer(model: nnx.Module, train: ml_collections.ConfigDict):
  """Optax transform with one learning rate per top-level module.

  `train.module_learning_rates` maps top-level module names (e.g. 'visual',
  'unet', 'classifier', 'refine') to their base rates; other parameters use
  `train.learning_rate`. Each group gets the same schedule shape, L2 weight
  decay added to the gradient (PyTorch's Adam/SGD) and Adam or SGD momentum.
  `train.module_optimizers` gives a module its own `b1`, `b2`,
  `weight_decay` and `every` (IAL-CMS's critic); a group is updated every
  `every` steps (default `train.update_every`), its other steps skipped.

  Returns:
    `(tx, schedules)`: the transform and each group's schedule (for logging).

  Raises:
    ValueError: a named module does not exist, or an unknown optimiser.
  """
  params = nnx.state(model, nnx.Param)
  names = sorted(params.keys())
  module_rates = dict(train.module_learning_rates)
  module_optimizers = {k: dict(v) for k, v in dict(train.get("module_optimizers", {})).items()}
  for what, named in (("module_learning_rates", module_rates),
                      ("module_optimizers", module_optimizers)):
    unknown = sorted(set(named) - set(names))
    if unknown:
      raise ValueError(f"train.{what} names {unknown}, which the model does not "
                       f"have; its top-level modules: {names}")
  for name, settings in module_optimizers.items():
    unknown = sorted(set(settings) - set(MODULE_OPTIMIZER_KEYS))
    if unknown:
      raise ValueError(f"train.module_optimizers.{name} has unknown keys {unknown}; "
                       f"valid: {list(MODULE_OPTIMIZER_KEYS)}")
  validate_stages(train)
  unknown = sorted(set(stage_groups(train)) - set(names))
  if unknown:
    raise ValueError(f"train.stages freeze {unknown}, which the model does not have; its "
                     f"top-level modules: {names}")
  if train.optimizer not in ("adam", "sgd"):
    raise ValueError(f"train.optimizer={train.optimizer!r}: expected 'adam' or 'sgd'")
  module_rates = {**{m: train.learning_rate for m in stage_groups(train)},
                  **{m: train.learning_rate for m in module_optimizers}, **module_rates}
  rates = {DEFAULT_GROUP: train.learning_rate, **module_rates}
  schedules = {group: stage_schedule(rate, train, group) for group, rate in rates.items()}
  update_every = int(train.get("update_every", 1))

  def group_tx(group, schedule):
    settings = module_optimizers.get(group, {})
    b1, b2 = settings.get("b1", train.b1), settings.get("b2", train.b2)
    weight_decay = settings.get("weight_decay", train.weight_decay)
    every = int(settings.get("every", update_every))
    if every < 1:
      raise ValueError(f"update interval {every} of {group!r} must be >= 1")
    parts = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
    if train.optimizer == "adam":
      parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8))
    elif b1:
      parts.append(optax.trace(decay=b1))
    parts.append(optax.scale_by_learning_rate(schedule))
    return every_k_steps(optax.chain(*parts), every)

  def labels(tree):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: (_top_level_name(path) if _top_level_name(path) in module_rates
                         else DEFAULT_GROUP), tree)

  tx = optax.partition({g: group_tx(g, s) for g, s in schedules.items()}, labels)
  return tx, schedules


def model_inputs(batch: dict, mix_mag, source_mag=None) -> dict:
  """The model's inputs: the mixture map plus the visual query arrays it reads.

  `source_mag` (training only) lets a model compute features of the true
  sources (CRN's alignment).
  """
  inputs = {"mix_mag": mix_mag, "source_mask": batch["source_mask"]}
  if source_mag is not None:
    inputs["source_mag"] = source_mag
  for key in ("crops", "frames"):
    if key in batch:
      inputs[key] = batch[key]
  return inputs


def mixture_features(config: ml_collections.ConfigDict, mixture, shares=None) -> dict:
  """`audio.separation_features` of mixtures `[B, L]` (and their shares) with `config.audio`."""
  a = config.audio
  return audio.separation_features(
      mixture, shares, n_fft=a.n_fft, hop_length=a.hop_length, warp_bins=a.warp_bins,
      align_corners=a.align_corners, mask=a.mask, mask_max=a.mask_max,
      binary_threshold=a.binary_threshold)


def front_end(config: ml_collections.ConfigDict, sources, source_mask, with_targets: bool = True,
              companions=None):
  """Each source's share of the mixture (SoP: sum / N), the mixture and its features.

  `companions` `[B, N, L]` (SeCo: another clip of each source's class), scaled
  as the shares, add their magnitude maps `companion_mag` to the features.
  """
  n = jnp.maximum(source_mask.sum(1), 1).astype(sources.dtype)[:, None, None]
  shares = sources * source_mask[..., None] / n                     # [B, N, L]
  mixture = shares.sum(1)                                          # [B, L]
  features = mixture_features(config, mixture, shares if with_targets else None)
  a = config.audio
  if companions is not None:
    features["companion_mag"] = audio.magnitude_map(
        companions / n, n_fft=a.n_fft, hop_length=a.hop_length, warp_bins=a.warp_bins,
        align_corners=a.align_corners)
  return shares, mixture, features


# Training losses (`train.loss.name`): `losses.mask_loss`, `ial_loss` and `seco_loss`.
LOSSES = ("mask", "ial", "seco")

# What evaluation scores (`evaluate`): centre segments or full clips by sliding window.
EVAL_WINDOWS = ("centre", "sliding")
FRAME_CONTROLS = ("rolled",)   # eval.frame_controls: see avsep_jax.evaluate.control_frames

# Batch arrays with one row per mixture and no source axis (`mixtures.finish`);
# every other array is `[B, N, ...]`.
PER_MIXTURE_KEYS = ("mixture",)


def source_count_groups(config: ml_collections.ConfigDict) -> tuple[tuple[int, np.ndarray], ...]:
  """`(count, global batch rows)` per source count with `dataset.fixed_composition`, else ().

  Each process's batch holds the counts of `data.batch_source_counts` at fixed
  positions, and the global batch is the processes' batches in order.
  """
  d = config.dataset
  if not d.fixed_composition:
    return ()
  local = config.train.batch_size // jax.process_count()
  counts = np.asarray(data.batch_source_counts(d.min_mix, d.num_mix, local))
  rows = np.arange(config.train.batch_size)
  per_row = counts[rows % local]
  return tuple((int(c), rows[per_row == c]) for c in np.unique(counts))


def _select_rows(batch: dict, rows: np.ndarray, count: int) -> dict:
  """The batch's `rows` (static indices), each with its first `count` sources."""
  lo, hi = int(rows[0]), int(rows[-1]) + 1
  if hi - lo == len(rows):
    pick = lambda x: x[lo:hi]
  else:
    pick = lambda x: jnp.take(x, rows, axis=0)
  return {k: pick(v) if k in PER_MIXTURE_KEYS else pick(v)[:, :count] for k, v in batch.items()}


def make_train_step(graphdef, config: ml_collections.ConfigDict, schedule: optax.Schedule):
  """The pure step `(state, batch, key) -> (state, metrics)` (not yet jitted).

  With `dataset.fixed_composition`, the rows of each source count run through
  the model separately with no padded sources, and the loss and metrics are
  their means weighted by valid sources: the value a padded batch would give,
  for fewer rows of work.
  """
  loss_cfg = config.train.loss
  volume_range = tuple(config.train.volume_range)
  eq_db = config.train.source_eq_db
  crop_dropout = config.train.crop_dropout
  groups = source_count_groups(config)

  def batch_loss(model, batch, rng, step):
    sources = batch["sources"]
    gain_key, loss_key, crop_key = jax.random.split(rng, 3)
    if eq_db:  # a random timbre per source (train.source_eq_db)
      # Its own key, so the other draws stay what they were before this option.
      sources = audio.random_equalizer(jax.random.fold_in(rng, _EQ_STREAM), sources, eq_db)
    if volume_range:  # SoP's training gain per source, then clipped as audio
      gain = jax.random.uniform(gain_key, sources.shape[:2] + (1,), sources.dtype,
                                *volume_range)
      sources = jnp.clip(sources * gain, -1.0, 1.0)
    if crop_dropout:  # blank crops (train.crop_dropout)
      blank = jax.random.bernoulli(crop_key, crop_dropout, sources.shape[:2])
      crops = batch["crops"]
      batch = dict(batch, crops=jnp.where(blank[..., None, None, None], 0.0, crops))
    shares, _, features = front_end(config, sources, batch["source_mask"],
                                    companions=batch.get("companions"))
    align = loss_cfg.alignment_weight
    inputs = model_inputs(batch, features["mix_mag"],
                          features["source_mag"] if align or loss_cfg.name == "seco" else None)
    if "companion_mag" in features:
      inputs["companion_mag"] = features["companion_mag"]
    outputs = models.layers.float32_outputs(model(inputs))
    if loss_cfg.name == "ial":
      a, ial = config.audio, loss_cfg.ial
      return losses.ial_loss(
          model, outputs, features, batch, shares, step=step, key=loss_key,
          length=sources.shape[-1], hop_length=a.hop_length, align_corners=a.align_corners,
          video_size=ial.video_size, si_snr_cap=ial.si_snr_cap, avc_weight=ial.avc_weight,
          avc_steps=tuple(ial.avc_steps), independence_weight=ial.independence_weight,
          independence_steps=tuple(ial.independence_steps), weight_factor=ial.weight_factor,
          temperature=ial.temperature, drop_hardest=ial.drop_hardest, hinge_c=ial.hinge_c)
    if loss_cfg.name == "seco":
      return losses.seco_loss(outputs, features, batch, step=step, mask=config.audio.mask,
                              weighted=loss_cfg.weighted, **loss_cfg.seco)
    return losses.mask_loss(outputs, features, batch, mask=config.audio.mask,
                            step_weights=tuple(loss_cfg.step_weights),
                            classification_weight=loss_cfg.classification_weight,
                            alignment_weight=align, weighted=loss_cfg.weighted)

  def train_step(state, batch, key):
    # A copy: merging shares `state`'s Variables, which the update below would
    # overwrite, and a non-finite step must return `state` as it came in.
    ts = nnx.merge(graphdef, state, copy=True)
    step = ts.optimizer.step[...]
    rng = jax.random.fold_in(key, step)

    def loss_fn(model):
      if not groups:
        return batch_loss(model, batch, rng, step)
      num_valid = jnp.maximum(batch["source_mask"].sum(), 1).astype(jnp.float32)
      loss, metrics = 0.0, {}
      for i, (count, rows) in enumerate(groups):
        part = _select_rows(batch, rows, count)
        part_loss, part_metrics = batch_loss(model, part, jax.random.fold_in(rng, i), step)
        share = part["source_mask"].sum() / num_valid
        loss = loss + share * part_loss
        metrics = {k: metrics.get(k, 0.0) + share * v for k, v in part_metrics.items()}
      return loss, metrics

    (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(ts.model)
    grad_norm = optax.tree.norm(grads)
    ts.optimizer.update(ts.model, grads)
    param_norm = optax.tree.norm(nnx.state(ts.model, nnx.Param))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    # A non-finite step changes nothing (the host stops on the flag), so neither
    # the state nor any checkpoint ever holds NaNs.
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), nnx.state(ts), state)
    metrics.update(grad_norm=grad_norm, param_norm=param_norm, learning_rate=schedule(step),
                   finite=finite)
    return new_state, metrics

  return train_step


class Mesh:
  """The device mesh (batch on `data`, state replicated) and host-to-device transfer."""

  def __init__(self, devices=None):
    devices = jax.devices() if devices is None else list(devices)
    # Auto axes: XLA propagates the batch sharding through the model (explicit
    # sharding would ask every reshape for its output sharding).
    self.mesh = jax.make_mesh((len(devices),), ("data",), devices=devices,
                              axis_types=(jax.sharding.AxisType.Auto,))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch = NamedSharding(self.mesh, P("data"))

  def replicate(self, tree):
    """Values every process holds alike (state, RNG keys) -> arrays replicated on the mesh."""
    if jax.process_count() == 1:
      return jax.device_put(tree, self.replicated)

    def put(x):
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # placed as its raw bits
        return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                        impl=jax.random.key_impl(x))
      host = np.asarray(x)
      return jax.make_array_from_callback(host.shape, self.replicated, lambda index: host[index])

    return jax.tree.map(put, tree)

  def put_batch(self, batch: dict) -> dict:
    """This process's numpy batch -> global arrays sharded over `data`."""
    return {k: jax.make_array_from_process_local_data(self.batch, np.asarray(v))
            for k, v in batch.items()}


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a config before any work starts; errors name the bad field."""
  models.model_class(config.model.name)
  t, d = config.train, config.dataset
  devices = jax.device_count()
  if t.batch_size % devices:
    raise ValueError(f"train.batch_size={t.batch_size} does not split over {devices} devices")
  if t.batch_size % jax.process_count():
    raise ValueError(f"train.batch_size={t.batch_size} does not split over "
                     f"{jax.process_count()} processes")
  validate_stages(t)
  if t.on_non_finite not in ("stop", "skip"):
    raise ValueError(f"train.on_non_finite={t.on_non_finite!r}: expected 'stop' or 'skip'")
  if t.max_skipped_steps < 0:
    raise ValueError(f"train.max_skipped_steps={t.max_skipped_steps} must be >= 0")
  if t.steps < 1 or t.log_every < 1 or t.checkpoint_every < 1:
    raise ValueError(f"train.steps={t.steps}, train.log_every={t.log_every} and "
                     f"train.checkpoint_every={t.checkpoint_every} must be >= 1")
  if d.num_mix < 1:
    raise ValueError(f"dataset.num_mix={d.num_mix} must be >= 1")
  if not 0 <= d.min_mix <= d.num_mix:
    raise ValueError(f"dataset.min_mix={d.min_mix} must be 0 (off) or in [1, dataset.num_mix="
                     f"{d.num_mix}]")
  if d.fixed_composition:
    if not d.min_mix:
      raise ValueError("dataset.fixed_composition needs dataset.min_mix (the smallest count)")
    try:
      source_count_groups(config)
    except ValueError as e:  # the per-process batch is too small for every count
      raise ValueError(f"dataset.fixed_composition with dataset.min_mix={d.min_mix}, "
                       f"dataset.num_mix={d.num_mix}: {e}") from e
  if d.cache_mb < 0:
    raise ValueError(f"dataset.cache_mb={d.cache_mb} must be >= 0 (0: no cache)")
  if not 1 <= config.eval.validation_num_mix <= d.num_classes:
    raise ValueError(f"eval.validation_num_mix={config.eval.validation_num_mix} must be in "
                     f"[1, dataset.num_classes={d.num_classes}]")
  if len(config.eval.per_combination) != len(config.eval.num_mix):
    raise ValueError(f"eval.per_combination={config.eval.per_combination} needs one entry per "
                     f"eval.num_mix={config.eval.num_mix}")
  if t.loss.name not in LOSSES:
    raise ValueError(f"train.loss.name={t.loss.name!r}: expected one of {LOSSES}")
  if t.loss.name == "seco" and "seco" not in t.loss:
    raise ValueError("train.loss.name='seco' needs the train.loss.seco section "
                     "(see configs/seco.py)")
  if t.loss.name == "ial":
    if "ial" not in t.loss:
      raise ValueError("train.loss.name='ial' needs the train.loss.ial section "
                       "(see configs/ial_cms.py)")
    if d.num_mix % t.loss.ial.video_size or d.min_mix:
      raise ValueError(f"train.loss.ial.video_size={t.loss.ial.video_size} must divide "
                       f"dataset.num_mix={d.num_mix} (and dataset.min_mix must be 0)")
  if t.loss.alignment_weight and not config.model.get("alignment"):
    raise ValueError(f"train.loss.alignment_weight={t.loss.alignment_weight} needs "
                     "model.alignment (CRN's alignment head)")
  if config.model.get("alignment") and config.model.alignment.input_rows != config.audio.warp_bins:
    raise ValueError(f"model.alignment.input_rows={config.model.alignment.input_rows} must be "
                     f"audio.warp_bins={config.audio.warp_bins} (the classifier's input rows)")
  if config.eval.mask not in ("as_trained", *audio.MASK_KINDS):
    raise ValueError(f"eval.mask={config.eval.mask!r}: expected 'as_trained' or one of "
                     f"{audio.MASK_KINDS}")
  if config.eval.window not in EVAL_WINDOWS:
    raise ValueError(f"eval.window={config.eval.window!r}: expected one of {EVAL_WINDOWS}")
  if config.eval.window_hop < 1:
    raise ValueError(f"eval.window_hop={config.eval.window_hop} must be >= 1")
  unknown = [c for c in config.eval.get("frame_controls", ()) if c not in FRAME_CONTROLS]
  if unknown:
    raise ValueError(f"eval.frame_controls names {unknown}: expected some of {FRAME_CONTROLS}")
  if config.eval.get("frame_controls") and not (d.num_frames or d.frame_rate):
    raise ValueError(f"eval.frame_controls={tuple(config.eval.frame_controls)}: the model reads "
                     "no frame clips (dataset.num_frames and dataset.frame_rate are 0)")
  if t.volume_range and len(t.volume_range) != 2:
    raise ValueError(f"train.volume_range={t.volume_range}: expected () or (lo, hi)")


def train_iterator(config: ml_collections.ConfigDict):
  """This process's share of the training stream (a checkpointable grain iterator)."""
  d = config.dataset
  data.prepare_dataset(d.name, d.data_dir, manual_dir=d.manual_dir)
  source, index = data.open_indexed_split(d.name, d.train_split, d.data_dir)
  if d.cache_mb:
    source = data.CachedSource(source, d.cache_mb << 20)
  num_classes = max(index.labels) + 1
  if num_classes > d.num_classes:
    raise ValueError(f"dataset {d.name!r} has class id {num_classes - 1}, but "
                     f"dataset.num_classes={d.num_classes}")
  if d.train_classes:
    missing = sorted(set(d.train_classes) - set(index.labels))
    if missing or len(set(d.train_classes)) < d.num_mix:
      raise ValueError(f"dataset.train_classes={tuple(d.train_classes)}: classes {missing} have "
                       f"no clip in {d.train_split!r}, or fewer than dataset.num_mix="
                       f"{d.num_mix} classes are left")
    index = dataclasses.replace(index, allowed=tuple(d.train_classes))
  local_batch = config.train.batch_size // jax.process_count()
  counts = (data.batch_source_counts(d.min_mix, d.num_mix, local_batch)
            if d.fixed_composition else None)
  options = data.MixOptions(num_mix=d.num_mix, min_mix=d.min_mix or None, batch_counts=counts,
                            segment_length=d.segment_length,
                            crop_size=d.crop_size, num_frames=d.num_frames,
                            frame_size=d.frame_size, frame_rate=d.frame_rate,
                            class_companions=d.class_companions,
                            same_class_fraction=d.same_class_fraction)
  ds = data.train_dataset(source, index, options,
                          batch_size=local_batch,
                          seed=config.seed, shard_index=jax.process_index(),
                          shard_count=jax.process_count(), num_workers=d.num_workers)
  return iter(ds)


def checkpoint_manager(workdir, config: ml_collections.ConfigDict):
  """Orbax's manager of `workdir/checkpoints` (local or `gs://`)."""
  path = epath.Path(workdir) / "checkpoints"
  return ocp.CheckpointManager(
      path if files.is_remote(path) else path.absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.max_checkpoints,
                                           create=True, enable_async_checkpointing=False),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data": grain.checkpoint.CheckpointHandler()})


def _array_shapes(tree) -> dict[str, tuple[int, ...]]:
  """`{'train.model.unet...': shape}` of a pytree of arrays or Orbax array metadata."""
  def name(path):
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
  return {name(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_checkpoint_fits(directory, step: int, template, model_name: str) -> None:
  """Raises ValueError naming what differs when checkpoint `step` in `directory` (a
  workdir's `checkpoints`) does not hold arrays of `template`'s names and shapes:
  another model, another size of it or another optimiser."""
  directory = epath.Path(directory)
  try:
    theirs = _array_shapes(ocp.StandardCheckpointer().metadata(
        directory / str(step) / "state").item_metadata)
  except Exception:  # pylint: disable=broad-except (no metadata: the restore says what it finds)
    return
  ours = _array_shapes(template)
  missing = sorted(set(ours) - set(theirs))
  extra = sorted(set(theirs) - set(ours))
  reshaped = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
  if not (missing or extra or reshaped):
    return
  parts = []
  if missing:
    parts.append(f"{len(missing)} arrays this config makes are not in it (e.g. {missing[0]})")
  if extra:
    parts.append(f"{len(extra)} arrays in it are not made by this config (e.g. {extra[0]})")
  if reshaped:
    k = reshaped[0]
    parts.append(f"{len(reshaped)} arrays differ in shape (e.g. {k}: {theirs[k]} in the "
                 f"checkpoint, {ours[k]} here)")
  hint = ""
  try:
    saved = json.loads((directory.parent / "config.json").read_text())["model"]["name"]
    hint = (f"; its workdir's config.json trained model.name={saved!r}" if saved != model_name
            else "; its workdir's config.json trained the same model with other settings")
  except (OSError, KeyError, TypeError, ValueError):
    pass
  raise ValueError(
      f"checkpoint {step} in {directory} does not fit this config (model.name="
      f"{model_name!r}): {'; '.join(parts)}{hint}. Pass the config it was trained with "
      "(and its overrides), or use another --workdir")


def restore_state(manager, step: int, state, key, iterator=None, model_name: str = "?"):
  """Restores `(state, key)` (and the iterator in place) from checkpoint `step`.

  Raises:
    ValueError: the checkpoint holds another model's or optimiser's arrays.
  """
  template = {"train": nnx.to_pure_dict(state), "rng": jax.random.key_data(key)}
  check_checkpoint_fits(manager.directory, step, template, model_name)
  args = {"state": ocp.args.StandardRestore(template)}
  if iterator is not None:
    args["data"] = grain.checkpoint.CheckpointRestore(iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  nnx.replace_by_pure_dict(state, restored["state"]["train"])
  return state, jax.random.wrap_key_data(restored["state"]["rng"])


def init_state(config: ml_collections.ConfigDict):
  """`(graphdef, state, schedules)` of a freshly initialised train state."""
  model = models.build_model(config.model, rngs=nnx.Rngs(config.seed))
  tx, schedules = make_optimizer(model, config.train)
  graphdef, state = nnx.split(TrainState(model, tx))
  return graphdef, state, schedules


def _host_mean(metrics: list[dict]) -> dict[str, float]:
  """Mean of each metric over the steps given (host floats), `finite` left out."""
  fetched = jax.device_get(metrics)
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k != "finite"}


def _check_finite(pending: list[dict], first_step: int, skipped: int, t, workdir,
                  last_checkpoint) -> tuple[list[dict], int]:
  """The finite steps' metrics of `pending` (steps first_step...) and the skip count.

  Raises:
    FloatingPointError: a step was not finite and `t.on_non_finite` is 'stop',
      or more than `t.max_skipped_steps` were skipped.
  """
  finite = jax.device_get([p["finite"] for p in pending])
  bad = [first_step + i for i, ok in enumerate(finite) if not ok]
  if not bad:
    return pending, skipped
  where = (f"the last checkpoint ({last_checkpoint}) in {workdir} is unaffected: lower "
           "train.learning_rate or check the data")
  if t.on_non_finite == "stop":
    raise FloatingPointError(
        f"non-finite loss, gradients or parameters at step {bad[0]} (its update was not "
        f"applied); {where}; train.on_non_finite='skip' skips such steps instead")
  skipped += len(bad)
  print(f"warning: non-finite loss, gradients or parameters at step(s) "
        f"{', '.join(map(str, bad))}: update(s) skipped ({skipped} in this run, at most "
        f"train.max_skipped_steps={t.max_skipped_steps})", flush=True)
  if skipped > t.max_skipped_steps:
    raise FloatingPointError(
        f"{skipped} steps with non-finite loss, gradients or parameters, the last at step "
        f"{bad[-1]}: more than train.max_skipped_steps={t.max_skipped_steps}; {where}")
  return [p for p, ok in zip(pending, finite) if ok], skipped


class Preempted(Exception):
  """Training stopped on SIGTERM (preemption) after saving a checkpoint; rerun to resume."""

  def __init__(self, step: int, directory):
    super().__init__(f"stopped by SIGTERM after step {step}; checkpoint saved in {directory}: "
                     "run the same command again to resume")
    self.step = step


@contextlib.contextmanager
def _sigterm_flag():
  """Yields a function telling whether SIGTERM arrived (the handler only sets a flag).

  With several processes, jax's own preemption service (`jax.distributed`)
  decides instead, so that every process stops at the same step.
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    def reached(step):
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # jax_enable_preemption_service turned off: no preemption saves
        return False
    yield reached
    return
  if threading.current_thread() is not threading.main_thread():
    yield lambda step: False  # only the main thread may set signal handlers
    return
  arrived = threading.Event()
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: arrived.set())
  try:
    yield lambda step: arrived.is_set()
  finally:
    signal.signal(signal.SIGTERM, previous)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       *, devices=None) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its checkpoints), then evaluates.

  Args:
    config: the experiment.
    workdir: checkpoints, metrics, config.json and the evaluation go here.
    devices: the mesh's devices (default: all).

  Returns:
    `{"train": [(step, metrics averaged since the last log)], "eval": the test
    evaluation's summaries when eval.after_training}`.

  Raises:
    FloatingPointError: a step's loss, gradients or updated parameters were not finite
      (`train.on_non_finite='stop'`), or more than `train.max_skipped_steps` were.
    files.StorageError: the workdir cannot be written (disk full, no permission).
  """
  validate_config(config)
  workdir = epath.Path(workdir)
  try:
    return _train_and_evaluate(config, workdir, devices)
  except (Preempted, FloatingPointError, KeyboardInterrupt):
    raise
  except Exception as e:  # pylint: disable=broad-except (only storage errors are reworded)
    if isinstance(e, files.StorageError):  # our own checks name the place already
      message = str(e)
    else:
      reason = files.storage_error(e)
      if reason is None:
        raise
      message = f"cannot write to the workdir {workdir}: {reason}"
    raise files.StorageError(f"{message}. {_last_checkpoint_note(workdir)}Free space or fix "
                             "the permissions, then run the same command again: it resumes "
                             "from there") from e


def _last_checkpoint_note(workdir) -> str:
  """Which checkpoint a rerun resumes from, for error messages ('' if unknown)."""
  try:
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  except OSError:
    return ""
  if not steps:
    return "No checkpoint was completed. "
  return f"The last complete checkpoint is step {max(steps)}. "


def _train_and_evaluate(config, workdir: epath.Path, devices) -> dict[str, Any]:
  """`train_and_evaluate` after the config check; storage errors propagate as raised."""
  # pylint: disable=g-import-not-at-top
  from avsep_jax import evaluate  # evaluate imports this module
  # clu's writers and hooks import TensorFlow (~13 s here): only the training
  # loop needs them, not the step, the state or evaluation (benchmarks,
  # accelerator images without TensorFlow).
  from clu import metric_writers
  from clu import periodic_actions
  # pylint: enable=g-import-not-at-top
  files.check_writable(workdir)
  t = config.train
  mesh = Mesh(devices)
  graphdef, state, schedules = init_state(config)
  state = mesh.replicate(state)
  key = mesh.replicate(jax.random.key(config.seed))
  iterator = train_iterator(config)
  manager = checkpoint_manager(workdir, config)
  start = manager.latest_step() or 0
  if start:
    state, key = restore_state(manager, start, state, key, iterator, config.model.name)
    logging.info("resumed from %s at step %d", manager.directory, start)
    print(f"resuming from step {start} ({manager.directory})", flush=True)
  writer = metric_writers.create_default_writer(os.fspath(workdir),
                                                just_logging=jax.process_index() > 0)
  if start == 0:
    writer.write_hparams({k: str(v) for k, v in _flatten(config.to_dict()).items()})
    if jax.process_index() == 0:
      files.write_text_atomic(workdir / "config.json", config.to_json_best_effort(indent=2))

  step_fn = jax.jit(make_train_step(graphdef, config, schedules[DEFAULT_GROUP]),
                    in_shardings=(mesh.replicated, mesh.batch, mesh.replicated),
                    out_shardings=(mesh.replicated, mesh.replicated), donate_argnums=0)
  hooks = [periodic_actions.ReportProgress(num_train_steps=t.steps, writer=writer,
                                           every_steps=t.log_every)]
  if t.profile_steps and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(num_profile_steps=t.profile_steps,
                                          first_profile=start + 10, logdir=str(workdir)))

  # A checkpoint holds the state, the RNG key and the iterator's state: room for
  # one more than that (old ones are deleted only after a new one is complete).
  checkpoint_bytes = int(1.1 * sum(x.nbytes for x in jax.tree.leaves(state))) + 2**16

  def save(step):
    files.check_free_space(workdir, checkpoint_bytes, f"checkpoint step {step}")
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave({"train": nnx.to_pure_dict(state),
                                     "rng": jax.random.key_data(key)}),
        data=grain.checkpoint.CheckpointSave(iterator)), force=True)

  pending: list[dict] = []  # metrics of the steps since the last log, from step first_pending
  first_pending, history, skipped = start + 1, [], 0
  begin = time.time()
  with _sigterm_flag() as preempted:
    for step in range(start + 1, t.steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = mesh.put_batch(next(iterator))
        state, metrics = step_fn(state, batch, key)
      pending.append(metrics)
      for hook in hooks:
        hook(step)
      last = step == t.steps
      stop = not last and preempted(step)
      if step % t.log_every == 0 or step % t.checkpoint_every == 0 or last or stop:
        good, skipped = _check_finite(pending, first_pending, skipped, t, workdir,
                                      manager.latest_step())
        first_pending, pending = step + 1, []
        if good:  # a log interval of skipped steps only has nothing to average
          summary = _host_mean(good)
          if t.on_non_finite == "skip":
            summary["skipped_steps"] = float(skipped)
          history.append((step, summary))
          writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})
          print(f"step {step}/{t.steps}  loss {summary['loss']:.4f}  "
                f"({time.time() - begin:.0f} s)", flush=True)
      if step % t.checkpoint_every == 0 or last or stop:
        save(step)
      if stop:  # preemption: the state of this step is saved; a rerun resumes from it
        manager.wait_until_finished()
        writer.flush()
        raise Preempted(step, manager.directory)
      if config.eval.every and step % config.eval.every == 0 and not last:
        with hooks[0].timed("validation"):
          val = evaluate.validation_sdr(config, nnx.merge(graphdef, state).model, mesh)
        writer.write_scalars(step, {f"validation/{k}": v for k, v in val.items()})
        print(f"step {step}: validation " + "  ".join(f"{k} {v:.2f}" for k, v in val.items()),
              flush=True)
  manager.wait_until_finished()
  writer.flush()
  result = {"train": history}
  if config.eval.after_training:
    result["eval"] = evaluate.evaluate_and_report(
        config, workdir, nnx.merge(graphdef, state).model, mesh, step=manager.latest_step())
  return result


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
