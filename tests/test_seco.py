"""SeCo: class folds, training on a fold's classes, consistency losses, held-out evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avsep_jax import data
from avsep_jax import evaluate
from avsep_jax import losses
from avsep_jax import train
from configs import seco
from test_train import module_changed
from test_train import synthetic_batch
from test_train import tiny_config


def test_folds_split_the_classes_disjointly_and_reproducibly():
  for fold in (1, 2, 3):
    train_classes, held_out = seco.fold_classes(21, 5, fold)
    assert len(held_out) == 5 and len(train_classes) == 16
    assert sorted(train_classes + held_out) == list(range(21))
    assert seco.fold_classes(21, 5, fold) == (train_classes, held_out)
  assert seco.fold_classes(21, 5, 1) != seco.fold_classes(21, 5, 2)
  config = seco.get_config("full,fold2")
  assert (tuple(config.dataset.train_classes), tuple(config.eval.class_subset)) == \
      seco.fold_classes(21, 5, 2)
  with pytest.raises(ValueError, match="expected \\[size\\]\\[,foldK\\]"):
    seco.get_config("foldx")
  plain, motion = seco.get_config("cpu"), seco.get_config("fold2,motion")
  assert "motion" not in plain.model and plain.dataset.frame_rate == 0
  assert motion.model.motion.out_dim == 32 and motion.dataset.frame_rate == 8
  assert tuple(motion.eval.class_subset) == seco.fold_classes(13, 3, 2)[1]


def test_training_mixtures_use_only_the_fold_s_classes(tiny_data_dir):
  config = tiny_config(tiny_data_dir, seco)
  config.train.batch_size = 8
  iterator = train.train_iterator(config)
  labels = np.concatenate([next(iterator)["labels"].ravel() for _ in range(3)])
  assert set(labels) <= set(config.dataset.train_classes)
  assert len(set(labels)) > 3
  config.dataset.train_classes = (0, 99)
  with pytest.raises(ValueError, match=r"classes \[99\] have no clip"):
    train.train_iterator(config)


def test_evaluation_scores_only_held_out_classes(tiny_data_dir):
  config = tiny_config(tiny_data_dir, seco, steps=1)
  graphdef, state, _ = train.init_state(config)
  model = nnx.merge(graphdef, state).model
  result = evaluate.score_split(config, model, train.Mesh(), split="test", num_mix=2,
                                per_combination=1)
  names = evaluate.class_names(config)
  assert set(result["per_class"]) == {names[c] for c in config.eval.class_subset}
  assert result["count"] + result["skipped"] == 3  # C(3, 2) pairs x 1


def test_consistency_terms():
  b, n, f, t, d = 2, 2, 8, 4, 6
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(b, f, t)))
  # Masks that add up to one: sigmoid(l) + sigmoid(-l) = 1.
  outputs = {"mask_logits": jnp.stack([logits, -logits], 1)[None]}
  features = {"target": jnp.full((b, n, f, t), 0.5), "weight": jnp.ones((b, f, t)),
              "mix_mag": jnp.ones((b, f, t))}
  batch = {"labels": jnp.zeros((b, n), jnp.int32), "source_mask": jnp.ones((b, n), bool),
           "crops": jnp.zeros((b, n, 4, 4, 3))}
  kwargs = dict(mask="ratio", weighted=True, temperature=0.1, remix_weight=0.0)
  _, metrics = losses.seco_loss(None, outputs, features, batch, inter_weight=0.0,
                                sum_weight=1.0, **kwargs)
  np.testing.assert_allclose(metrics["sum_loss"], 0.0, atol=1e-6)
  emb = rng.normal(size=(b, n, d))
  emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
  matched = dict(outputs, audio_embedding=emb, visual_embedding=emb)
  swapped = dict(outputs, audio_embedding=emb, visual_embedding=emb[:, ::-1])
  inter = lambda o: losses.seco_loss(None, o, features, batch, inter_weight=1.0,
                                     sum_weight=0.0, **kwargs)[1]["inter_loss"]
  assert inter(matched) < inter(swapped)


def test_steps_train_every_module_and_the_remix_pass():
  config = seco.get_config("tiny,motion")
  batch = synthetic_batch(config, 2)
  assert batch["frames"].shape[2] == 6            # 16383 samples at 4 frames per second
  graphdef, state, schedules = train.init_state(config)
  step = jax.jit(train.make_train_step(graphdef, config, schedules["default"]))
  new, metrics = step(state, batch, jax.random.key(0))
  for name in ("unet", "visual", "audio_embed", "visual_embed", "motion_film"):
    assert module_changed(state, new, name), name
  for name in ("inter_loss", "sum_loss", "remix_loss", "mask_loss/step_0"):
    assert np.isfinite(float(metrics[name])) and float(metrics[name]) > 0, name
  # The motion track's FiLM layers start at zero (the crop-only separator), so
  # the track itself gets a gradient from the second step on.
  assert not module_changed(state, new, "motion")
  newer, _ = step(new, batch, jax.random.key(1))
  assert module_changed(new, newer, "motion")


def _motion_model():
  from avsep_jax import models
  config = seco.get_config("tiny,motion")
  model = models.build_model(config.model, rngs=nnx.Rngs(0))
  keys = iter(jax.random.split(jax.random.key(1), 16))
  for linear in model.motion_film:        # as after training: FiLM that depends on motion
    linear.kernel[...] = 0.3 * jax.random.normal(next(keys), linear.kernel.shape)
  return model


def test_motion_film_follows_the_frames_in_time():
  """Changing the last frames changes the conditioning only at the segment's end."""
  model = _motion_model()
  frames = jax.random.normal(jax.random.key(0), (1, 2, 8, 32, 32, 3))
  changed = frames.at[:, :, 7].add(1.0)
  time_frames = 32
  before = model.motion_film_params(model.motion_track(frames), time_frames)
  after = model.motion_film_params(model.motion_track(changed), time_frames)
  for level, ((g0, b0), (g1, b1)) in enumerate(zip(before, after)):
    length = time_frames // 2**level
    assert g0.shape == (2, length, model.unet.up_channels()[level])
    moved = np.abs(np.asarray(g1 - g0)).max(axis=(0, 2)) + np.abs(np.asarray(b1 - b0)).max(
        axis=(0, 2))
    assert moved[-1] > 1e-3, level
    if level == 0:
      # Frame 7 reaches frames 5-7 through two 3-frame convs: times >= 5/8 of T,
      # and linear resampling reaches half a frame (2 of 32 columns) further.
      assert moved[:18].max() < 1e-6 and moved[20:].min() > 1e-4


def test_motion_track_changes_the_masks_and_needs_frames():
  model = _motion_model()
  rng = np.random.default_rng(0)
  inputs = {"mix_mag": jnp.asarray(np.abs(rng.normal(size=(1, 64, 16)))),
            "crops": jnp.asarray(rng.normal(size=(1, 2, 32, 32, 3))),
            "frames": jnp.asarray(rng.normal(size=(1, 2, 4, 32, 32, 3)))}
  masks = model(inputs)["mask_logits"]
  swapped = model(dict(inputs, frames=inputs["frames"][:, ::-1]))["mask_logits"]
  assert float(jnp.abs(masks - swapped).max()) > 1e-3
  with pytest.raises(ValueError, match="needs each source's frames: set dataset.frame_rate"):
    model({k: v for k, v in inputs.items() if k != "frames"})


def test_softmax_masks_add_up_to_one_over_valid_sources():
  from avsep_jax import models
  config = seco.get_config("tiny")
  config.model.mask_activation = "softmax"
  model = models.build_model(config.model, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  inputs = {"mix_mag": jnp.asarray(np.abs(rng.normal(size=(2, 64, 16)))),
            "crops": jnp.asarray(rng.normal(size=(2, 3, 32, 32, 3))),
            "source_mask": jnp.asarray([[True, True, True], [True, True, False]])}
  masks = jax.nn.sigmoid(model(inputs)["mask_logits"][0])
  np.testing.assert_allclose(masks[0].sum(0), 1.0, atol=1e-4)
  np.testing.assert_allclose(masks[1, :2].sum(0), 1.0, atol=1e-4)
  assert float(masks[1, 2].max()) < 1e-5
