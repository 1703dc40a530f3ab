"""IAL-CMS: its losses, the spectrally-normalised critic and the adversarial step (tiny)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avsep_jax import losses
from avsep_jax import models
from avsep_jax import train
from avsep_jax.models import ial_cms as ial_lib
from configs import ial_cms
from test_train import module_changed
from test_train import synthetic_batch


def test_si_snr_matches_its_definition_and_is_capped(rng):
  reference = rng.normal(size=(3, 4000))
  estimate = 0.5 * reference + 0.1 * rng.normal(size=(3, 4000))
  r = reference - reference.mean(-1, keepdims=True)
  e = estimate - estimate.mean(-1, keepdims=True)
  proj = (e * r).sum(-1, keepdims=True) / (r * r).sum(-1, keepdims=True) * r
  want = 10 * np.log10((proj**2).sum(-1) / ((e - proj)**2).sum(-1))
  got = np.asarray(losses.si_snr(jnp.asarray(estimate), jnp.asarray(reference), cap_db=300.0))
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # Scale-invariant, and a perfect estimate gives the cap, not infinity.
  np.testing.assert_allclose(losses.si_snr(3 * estimate, reference, cap_db=300.0), got, rtol=1e-4)
  np.testing.assert_allclose(losses.si_snr(reference, reference, cap_db=30.0), 30.0, atol=1e-3)
  # Silence is the worst estimate, not a 0 dB refuge from a poor separation.
  silent = np.asarray(losses.si_snr(jnp.zeros_like(reference), jnp.asarray(reference)))
  assert (silent < -60).all() and (silent < got).all()


def test_contrastive_loss_prefers_matching_pictures_and_drops_hardest_negatives():
  rng = np.random.default_rng(0)
  b, n, d = 4, 2, 16
  maps = rng.normal(size=(b, n, 2, 2, d))
  maps /= np.linalg.norm(maps, axis=-1, keepdims=True)
  audio = maps[:, :, 0, 0]                                 # each source matches its own picture
  valid = np.ones((b, n), bool)
  kwargs = dict(temperature=0.3, drop_hardest=0)
  matched = losses.contrastive_av_loss(audio, maps, valid, **kwargs)
  shuffled = losses.contrastive_av_loss(audio[::-1], maps, valid, **kwargs)
  assert matched < shuffled
  # Dropping every negative but one: each row is a 2-way softmax against its
  # least similar other picture, lower than against all of them.
  fewer = losses.contrastive_av_loss(audio, maps, valid, temperature=0.3, drop_hardest=6)
  assert 0 < fewer < matched
  # Invalid sources take no part: the loss of the first two mixtures alone.
  valid[2:] = False
  part = losses.contrastive_av_loss(audio, maps, valid, **kwargs)
  np.testing.assert_allclose(part, losses.contrastive_av_loss(
      audio[:2], maps[:2], np.ones((2, n), bool), **kwargs), rtol=1e-5)


def test_step_weights_grow_tenfold_at_each_boundary():
  weights = [float(losses.step_weight(0.05, (4, 8), 10.0, jnp.asarray(s))) for s in (0, 3, 4, 8)]
  np.testing.assert_allclose(weights, [0.05, 0.05, 0.5, 5.0], rtol=1e-6)


def test_spectral_normalisation_brings_the_largest_singular_value_to_one():
  layer = ial_lib.SpectralNormalised(
      nnx.Conv(3, 8, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), rngs=nnx.Rngs(0)),
      rngs=nnx.Rngs(1))
  x = jnp.ones((1, 8, 8, 3))
  for _ in range(30):  # power iteration, one step per call
    layer(x)
  kernel = layer.layer.kernel[...]
  matrix = kernel.reshape(-1, kernel.shape[-1])
  sigma = float(layer.u[...] @ matrix.T @ matrix @ layer.u[...]) ** 0.5
  np.testing.assert_allclose(sigma, np.linalg.svd(np.asarray(matrix), compute_uv=False)[0],
                             rtol=1e-3)
  # The layer computes with kernel / sigma.
  plain = jax.lax.conv_general_dilated(x, kernel / sigma, (2, 2), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(layer(x, update=False), plain + layer.layer.bias[...],
                             rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("setting, num_mix", [("unsupervised", 4), ("supervised", 2)])
def test_model_shapes_and_masks_start_near_half(setting, num_mix):
  config = ial_cms.get_config(f"tiny,{setting}")
  assert config.dataset.num_mix == num_mix
  model = models.build_model(config.model, rngs=nnx.Rngs(0))
  assert (model.critic is not None) == (setting == "unsupervised")
  frames = config.dataset.segment_length // config.audio.hop_length + 1
  inputs = {"mix_mag": jnp.abs(jax.random.normal(jax.random.key(0),
                                                 (2, config.audio.warp_bins, frames))),
            "crops": jax.random.normal(jax.random.key(1), (2, num_mix, 32, 32, 3))}
  out = model(inputs)
  assert out["masks"].shape == (1, 2, num_mix, config.audio.warp_bins, frames)
  assert float(out["masks"].min()) >= 0.0
  np.testing.assert_allclose(out["masks"], 0.5, atol=0.01)  # AdaIN layers start as identity
  np.testing.assert_allclose(jnp.linalg.norm(out["audio_embedding"], axis=-1), 1.0, rtol=1e-4)
  np.testing.assert_allclose(jnp.linalg.norm(out["visual_maps"], axis=-1), 1.0, rtol=1e-4)


def test_adversarial_step_updates_critic_and_separator_and_fills_the_bank():
  config = ial_cms.get_config("tiny")
  batch = synthetic_batch(config, 2)
  graphdef, state, schedules = train.init_state(config)
  step = jax.jit(train.make_train_step(graphdef, config, schedules["default"]))
  key = jax.random.key(0)
  separator = ("unet", "visual", "av", "film")
  for i in range(3):
    new, metrics = step(state, batch, key)
    assert bool(metrics["finite"]), metrics
    for name in separator + ("critic",):
      assert module_changed(state, new, name), (i, name)
    state = new
  assert int(state["model"]["bank_count"][...]) == 3 * 2 * 4
  assert np.abs(np.asarray(state["model"]["bank"][...][:24])).sum() > 0
  for name in ("critic_loss", "independence_term", "avc_loss", "si_snr"):
    assert np.isfinite(float(metrics[name])), name


def test_separator_every_third_step_critic_every_step():
  """`:full`'s schedule on tiny shapes: the separator moves on steps 0 and 3 only."""
  config = ial_cms.get_config("tiny")
  config.train.update_every = 3
  batch = synthetic_batch(config, 2)
  graphdef, state, schedules = train.init_state(config)
  step = jax.jit(train.make_train_step(graphdef, config, schedules["default"]))
  unet_moved, critic_moved = [], []
  for _ in range(4):
    new, _ = step(state, batch, jax.random.key(0))
    unet_moved.append(module_changed(state, new, "unet"))
    critic_moved.append(module_changed(state, new, "critic"))
    state = new
  assert unet_moved == [True, False, False, True]
  assert critic_moved == [True] * 4


def test_config_arguments_and_errors():
  assert ial_cms.get_config("supervised").train.loss.ial.video_size == 1
  assert ial_cms.get_config(None).train.loss.ial.video_size == 2
  assert ial_cms.get_config("full,supervised").model.critic is None
  with pytest.raises(ValueError, match="expected \\[size\\]\\[,setting\\]"):
    ial_cms.get_config("full,tiny")
  config = ial_cms.get_config("tiny")
  config.train.loss.ial.video_size = 3
  with pytest.raises(ValueError, match="video_size=3 must divide dataset.num_mix=4"):
    train.validate_config(config)


@pytest.mark.parametrize("arg", ["cpu", "full", "full,supervised"])
def test_config_sized_models_trace(arg):
  """The CPU default and paper-sized models, shapes traced without running them."""
  config = ial_cms.get_config(arg)
  d = config.dataset
  frames = d.segment_length // config.audio.hop_length + 1
  assert tuple(config.model.bank_shape) == (config.audio.warp_bins, frames)
  model = nnx.eval_shape(lambda: models.build_model(config.model, rngs=nnx.Rngs(0)))
  query = ({"frames": jax.ShapeDtypeStruct((2, d.num_mix, 1, d.crop_size, d.crop_size, 3),
                                           jnp.float32)}
           if config.model.visual_input == "frames" else
           {"crops": jax.ShapeDtypeStruct((2, d.num_mix, d.crop_size, d.crop_size, 3),
                                          jnp.float32)})
  inputs = {"mix_mag": jax.ShapeDtypeStruct((2, config.audio.warp_bins, frames), jnp.float32),
            **query}
  out = nnx.eval_shape(lambda m, x: m(x), model, inputs)
  assert out["masks"].shape == (1, 2, d.num_mix, config.audio.warp_bins, frames)


def test_critic_pairs_scored_from_one_encoding_each():
  """A partner's encoding is its row of the batch's encodings: the loss encodes each spectrum once."""
  critic = ial_lib.IndependenceCritic(widths=(4, 8), hidden=8, rngs=nnx.Rngs(0))
  fresh = lambda: nnx.clone(critic)  # each call from the same power-iteration state
  mags = jnp.abs(jax.random.normal(jax.random.key(0), (3, 2, 16, 8)))    # [B, N, F, T]
  flat = mags.reshape(6, 16, 8)
  partner = jnp.roll(mags, -1, axis=1).reshape(6, 16, 8)
  encoded = fresh().encode(flat)
  rolled = jnp.roll(encoded.reshape(3, 2, -1), -1, axis=1).reshape(encoded.shape)
  np.testing.assert_allclose(fresh().score_pairs(encoded, rolled),
                             fresh().score_pairs(fresh().encode(flat), fresh().encode(partner)),
                             rtol=1e-5, atol=1e-6)


def test_deeplab_head_shapes_and_size():
  from avsep_jax.models import deeplab
  head = deeplab.DeepLabV3PlusHead(8, 16, rates=(1, 3), aspp_channels=6, reduced_channels=4,
                                   out_channels=10, norm="batch", rngs=nnx.Rngs(0))
  shallow = jax.random.normal(jax.random.key(0), (2, 8, 8, 8))
  deep = jax.random.normal(jax.random.key(1), (2, 2, 2, 16))
  assert head(shallow, deep).shape == (2, 8, 8, 10)
  # 1x1 and dilated 3x3 ASPP branches, image pooling, projection, reduction,
  # fusion; no conv biases; BatchNorm scale and bias after each conv.
  convs = 16 * 6 + 9 * 16 * 6 + 16 * 6 + 3 * 6 * 6 + 8 * 4 + 9 * (6 + 4) * 10
  norms = 2 * (6 + 6 + 6 + 6 + 4 + 10)
  params = sum(x.size for x in jax.tree.leaves(nnx.state(head, nnx.Param)))
  assert params == convs + norms
