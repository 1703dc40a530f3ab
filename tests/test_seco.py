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


def test_one_step_trains_every_module_and_the_remix_pass():
  config = seco.get_config("tiny")
  batch = synthetic_batch(config, 2)
  graphdef, state, schedules = train.init_state(config)
  step = jax.jit(train.make_train_step(graphdef, config, schedules["default"]))
  new, metrics = step(state, batch, jax.random.key(0))
  for name in ("unet", "visual", "audio_embed", "visual_embed"):
    assert module_changed(state, new, name), name
  for name in ("inter_loss", "sum_loss", "remix_loss", "mask_loss/step_0"):
    assert np.isfinite(float(metrics[name])) and float(metrics[name]) > 0, name


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
