"""Models: output shapes per system and size, the U-Net, the registry's errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avsep_jax import data
from avsep_jax import models
from avsep_jax.audio import masks as masks_lib
from configs import coseparation
from configs import crn
from configs import mtsc
from configs import sop
from configs import seco
from configs import sop_binary

CONFIGS = {"sop": sop, "coseparation": coseparation, "crn": crn, "mtsc": mtsc,
           "sop_binary": sop_binary, "seco": seco}


def _inputs(b, n, bins, frames, crop, num_frames=0):
  keys = jax.random.split(jax.random.key(0), 3)
  inputs = {"mix_mag": jnp.abs(jax.random.normal(keys[0], (b, bins, frames))),
            "crops": jax.random.normal(keys[1], (b, n, crop, crop, 3)),
            "source_mask": jnp.ones((b, n), bool)}
  if num_frames:
    inputs["frames"] = jax.random.normal(keys[2], (b, n, num_frames, crop, crop, 3))
  return inputs


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("num_mix", [2, 3])
def test_tiny_models_output_shapes(name, num_mix):
  config = CONFIGS[name].get_config("tiny")
  model = models.build_model(config.model, rngs=nnx.Rngs(0))
  d = config.dataset
  num_frames = data.frame_count(d.segment_length, d.num_frames, d.frame_rate)
  out = model(_inputs(2, num_mix, config.audio.warp_bins, 32, d.crop_size, num_frames))
  steps = 1 + config.model.get("refine_steps", 0)
  assert out["mask_logits"].shape == (steps, 2, num_mix, config.audio.warp_bins, 32)
  assert np.isfinite(np.asarray(out["mask_logits"])).all()
  if name in ("coseparation", "crn", "sop_binary"):
    assert out["class_logits"].shape == (2, num_mix, config.dataset.num_classes)
  assert len(config.train.loss.step_weights) == steps


@pytest.mark.parametrize("name", sorted(CONFIGS) + ["ial_cms"])
def test_tiny_models_run_with_bfloat16_compute(name):
  """Every system's nets take model.compute_dtype='bfloat16' (no layer mixes a
  bfloat16 input with float32 weights) and give finite outputs."""
  from configs import ial_cms
  config = (ial_cms if name == "ial_cms" else CONFIGS[name]).get_config("tiny")
  d = config.dataset
  num_frames = data.frame_count(d.segment_length, d.num_frames, d.frame_rate)
  inputs = _inputs(2, 2, config.audio.warp_bins, 32, d.crop_size, num_frames)
  def masks(model):
    out = models.layers.float32_outputs(model(inputs))
    return np.asarray(out["masks"] if name == "ial_cms" else jax.nn.sigmoid(out["mask_logits"]))
  full = masks(models.build_model(config.model, rngs=nnx.Rngs(0)))
  config.model.compute_dtype = "bfloat16"
  low = masks(models.build_model(config.model, rngs=nnx.Rngs(0)))
  assert np.isfinite(low).all()
  assert not np.array_equal(low, full)                                  # bfloat16 was used
  assert np.linalg.norm(low - full) < 0.05 * np.linalg.norm(full)      # ... rounding only


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("size", ["cpu", "full"])
def test_config_sized_models_shapes_and_sizes(name, size):
  """The CPU default and the paper-sized model, shapes traced without running them."""
  config = CONFIGS[name].get_config(None if size == "cpu" else size)
  d = config.dataset
  frames = 1 + d.segment_length // config.audio.hop_length
  model = nnx.eval_shape(lambda: models.build_model(config.model, rngs=nnx.Rngs(0)))
  inputs = _inputs(2, 2, config.audio.warp_bins, frames, d.crop_size,
                   data.frame_count(d.segment_length, d.num_frames, d.frame_rate))
  out = nnx.eval_shape(lambda m, x: m(x), model, inputs)
  steps = 1 + config.model.get("refine_steps", 0)
  assert out["mask_logits"].shape == (steps, 2, 2, config.audio.warp_bins, frames)
  params = sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  if size == "full":
    assert params > 11e6  # a ResNet-18 plus the 7-level U-Net(s)
  else:
    assert params < 3e6   # the CPU recipe's size


def test_full_unet_matches_sop_unet7_size():
  """SoP's unet7 (ngf 64, 1 -> 32 channels, BatchNorm, bilinear) parameter count.

  Counted from the original's `UnetBlock` list: 7 down convs 4x4 and 7 up convs
  3x3, no biases but the output conv's; BatchNorms (scale + bias) on the input,
  5 inner downs and 6 inner ups.
  """
  ch = [64, 128, 256, 512, 512, 512, 512]
  down = sum(16 * a * b for a, b in zip([1] + ch[:-1], ch))
  up_in = [2 * c for c in ch[:-1]] + [ch[-1]]
  up_out = [32] + ch[:-1]
  up = sum(9 * a * b for a, b in zip(up_in, up_out)) + 32
  norms = 2 * (1 + sum(ch[1:-1]) + sum(ch[:-1]))
  net = nnx.eval_shape(lambda: models.AudioUNet(1, 32, rngs=nnx.Rngs(0)))
  params = sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(net, nnx.Param)))
  assert params == down + up + norms


def test_unet_rejects_sizes_it_cannot_halve():
  net = models.AudioUNet(1, 1, ngf=4, num_levels=3, max_channels=8, norm="group",
                         norm_groups=4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="multiples of 2\\*\\*num_levels = 8"):
    net(jnp.zeros((1, 12, 16, 1)))


def test_crn_refinement_shares_one_net_across_steps():
  config = crn.get_config("tiny")
  two = models.build_model({**config.model.to_dict(), "refine_steps": 2}, rngs=nnx.Rngs(0))
  four = models.build_model({**config.model.to_dict(), "refine_steps": 4}, rngs=nnx.Rngs(0))
  count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert count(two) == count(four)
  # Same weights, more steps: the first steps' masks are the same.
  out2 = two(_inputs(1, 2, 64, 16, 32))["mask_logits"]
  out4 = four(_inputs(1, 2, 64, 16, 32))["mask_logits"]
  np.testing.assert_allclose(out4[:3], out2, rtol=1e-5, atol=1e-6)


def test_registry_errors_list_valid_names_and_keys():
  with pytest.raises(ValueError, match=r"valid: \['class_masks', 'coseparation', 'crn', "
                                       r"'ial_cms', 'mtsc', 'seco', 'sop'\]"):
    models.build_model({"name": "sop2"}, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"unknown config keys \['width'\].*num_channels"):
    models.build_model({"name": "sop", "width": 3}, rngs=nnx.Rngs(0))


def assert_same_values_and_gradients(ours, plain, x, kernel):
  """`ours(x, kernel)` equals `plain(x, kernel)`, and so do the gradients of a loss on it."""
  np.testing.assert_allclose(ours(x, kernel), plain(x, kernel), rtol=1e-5, atol=1e-5)
  loss = lambda f: (lambda x, k: jnp.sin(f(x, k)).sum())
  grads = jax.grad(loss(ours), argnums=(0, 1))(x, kernel)
  ref = jax.grad(loss(plain), argnums=(0, 1))(x, kernel)
  for a, b in zip(grads, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# Both routes of the strided convs: XLA:CPU's rewrites and, as on GPUs and
# TPUs, the plain strided / input-dilated convolution.
ROUTES = pytest.mark.parametrize("cpu_route", [True, False], ids=["cpu_route", "plain_route"])


@ROUTES
@pytest.mark.parametrize("shape", [(2, 8, 12, 3), (1, 7, 6, 2)])
def test_conv_down_and_its_gradient_match_the_plain_convolution(shape, cpu_route, monkeypatch):
  from avsep_jax.models import layers
  monkeypatch.setattr(layers, "_on_cpu", lambda: cpu_route)
  x = jax.random.normal(jax.random.key(0), shape)
  kernel = jax.random.normal(jax.random.key(1), (4, 4, shape[-1], 5))
  plain = lambda x, k: jax.lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)),
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert_same_values_and_gradients(layers.conv_down, plain, x, kernel)


@ROUTES
@pytest.mark.parametrize("shape", [(2, 8, 12, 3), (1, 5, 3, 2)])
def test_conv_up_and_its_gradient_match_the_transposed_convolution(shape, cpu_route, monkeypatch):
  """Both forms equal Flax's ConvTranspose (= PyTorch's ConvTranspose2d(4, 2, 1))."""
  from avsep_jax.models import layers
  monkeypatch.setattr(layers, "_on_cpu", lambda: cpu_route)
  x = jax.random.normal(jax.random.key(0), shape)
  kernel = jax.random.normal(jax.random.key(1), (4, 4, shape[-1], 5))
  plain = lambda x, k: jax.lax.conv_transpose(x, k, (2, 2), ((2, 2), (2, 2)),
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert layers.conv_up(x, kernel).shape == (shape[0], 2 * shape[1], 2 * shape[2], 5)
  assert_same_values_and_gradients(layers.conv_up, plain, x, kernel)
  # The module keeps nnx.ConvTranspose's parameters (names and shapes).
  up = layers.UpConv(shape[-1], 5, rngs=nnx.Rngs(0))
  ref_module = nnx.ConvTranspose(shape[-1], 5, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                                 rngs=nnx.Rngs(0))
  assert {k: v.shape for k, v in nnx.to_flat_state(nnx.state(up, nnx.Param))} == {
      k: v.shape for k, v in nnx.to_flat_state(nnx.state(ref_module, nnx.Param))}


@ROUTES
@pytest.mark.parametrize("shape", [(2, 8, 12, 3), (1, 5, 3, 2)])
def test_upsample_conv3x3_and_its_gradient_match_upsample_then_conv(shape, cpu_route,
                                                                     monkeypatch):
  """Both forms equal a nearest 2x upsample then a padded 3x3 conv."""
  from avsep_jax.models import layers
  monkeypatch.setattr(layers, "_on_cpu", lambda: cpu_route)
  x = jax.random.normal(jax.random.key(0), shape)
  kernel = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], 5))
  plain = lambda x, k: jax.lax.conv_general_dilated(
      layers.upsample2x(x, "nearest"), k, (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert layers.upsample_conv3x3(x, kernel).shape == (shape[0], 2 * shape[1], 2 * shape[2], 5)
  assert_same_values_and_gradients(layers.upsample_conv3x3, plain, x, kernel)
  # The module keeps the 3x3 nnx.Conv's parameters (names and shapes): older
  # checkpoints of U-Nets with nearest upsampling restore unchanged.
  up = layers.NearestUpConv(shape[-1], 5, rngs=nnx.Rngs(0))
  assert {k: v.shape for k, v in nnx.to_flat_state(nnx.state(up, nnx.Param))} == {
      k: v.shape for k, v in nnx.to_flat_state(nnx.state(layers.conv(shape[-1], 5, 3,
                                                                      rngs=nnx.Rngs(0)),
                                                          nnx.Param))}


@ROUTES
@pytest.mark.parametrize("shape,window,strides,padding", [
    ((2, 9, 7, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),       # ResNet-18's, odd sizes
    ((2, 8, 8, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),
    ((2, 8, 6, 2), (2, 2), (2, 2), ((0, 0), (0, 0))),
    ((1, 7, 7, 1), (3, 3), (1, 1), ((1, 1), (1, 1))),
    ((2, 5, 9, 7, 2), (3, 3, 3), (2, 2, 2), ((1, 1),) * 3),  # the 3-D ResNet's stem
    ((2, 4, 9, 8, 2), (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),  # SlowFast's
    ((1, 10, 2), (2,), (3,), ((0, 0),)),                     # a window shorter than its step
])
def test_max_pool_and_its_gradient_match_xla_s(shape, window, strides, padding, cpu_route,
                                               monkeypatch):
  """The same maxima as `nnx.max_pool` and, with ties, the gradient sent to the same
  input (integer values and cotangents, so the sums are exact)."""
  from avsep_jax.models import layers
  monkeypatch.setattr(layers, "_on_cpu", lambda: cpu_route)
  rng = np.random.default_rng(0)
  x = jnp.asarray(np.round(np.maximum(rng.normal(size=shape), 0) * 2), jnp.float32)  # ties
  plain = lambda x: nnx.max_pool(x, window, strides=strides, padding=padding)
  pool = lambda x: layers.max_pool(x, window, strides, padding)
  y, pool_vjp = jax.vjp(pool, x)
  ref, ref_vjp = jax.vjp(plain, x)
  np.testing.assert_array_equal(y, ref)
  dy = jnp.asarray(rng.integers(-3, 4, size=y.shape), jnp.float32)
  np.testing.assert_array_equal(pool_vjp(dy)[0], ref_vjp(dy)[0])
  np.testing.assert_array_equal(jax.jit(jax.grad(lambda x: (pool(x) * dy).sum()))(x),
                                ref_vjp(dy)[0])
  with pytest.raises(ValueError, match="one entry per spatial axis"):
    layers.max_pool(x, window + (1,), strides, padding)


def test_bilinear_upsample_is_align_corners_true():
  from avsep_jax.models import layers
  x = jnp.arange(3.0).reshape(1, 3, 1, 1) * jnp.ones((1, 3, 2, 1))
  up = layers.upsample2x(x, "bilinear")[0, :, 0, 0]
  np.testing.assert_allclose(up, np.linspace(0, 2, 6), atol=1e-6)  # corners kept
  near = layers.upsample2x(x, "nearest")[0, :, 0, 0]
  np.testing.assert_allclose(near, [0, 0, 1, 1, 2, 2])


def _crn(**overrides):
  config = crn.get_config("tiny")
  return models.build_model({**config.model.to_dict(), **overrides}, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("detach", [False, True])
def test_crn_detach_steps_stops_gradients_between_steps(detach):
  """The last step's masks reach the base U-Net's weights only without `detach_steps`."""
  model = _crn(detach_steps=detach)
  inputs = _inputs(1, 2, 64, 16, 32)

  def last_step(m):
    return jnp.sum(jax.nn.sigmoid(m(inputs)["mask_logits"][-1]))

  grads = nnx.grad(last_step)(model)
  norm = lambda tree: float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))
  assert norm(grads["refine"]) > 0 and norm(grads["visual"]) > 0
  assert (norm(grads["unet"]) == 0) == detach
  # Detaching changes gradients, not values.
  np.testing.assert_allclose(model(inputs)["mask_logits"],
                             _crn(detach_steps=not detach)(inputs)["mask_logits"], rtol=1e-6)


def test_crn_residual_refinement_adds_the_refiner_output_to_its_input():
  """'residual': step 1 = base + the refiner's output, which is 'replace''s step 1."""
  inputs = _inputs(1, 2, 64, 16, 32)
  replaced = _crn(refine_update="replace")(inputs)["mask_logits"]
  added = _crn(refine_update="residual")(inputs)["mask_logits"]
  np.testing.assert_allclose(added[0], replaced[0], rtol=1e-6)
  np.testing.assert_allclose(added[1], replaced[0] + replaced[1], rtol=1e-5, atol=1e-5)
  assert not np.allclose(added[2], replaced[1] + replaced[2], atol=1e-3)  # step 2's input differs
  with pytest.raises(ValueError, match="refine_update='skip': expected one of"):
    _crn(refine_update="skip")


def test_crn_refiner_sees_the_mixture_only_when_asked():
  inputs = _inputs(1, 2, 64, 16, 32)
  assert _crn().refine.down[0].kernel.shape[2] == 2
  model = _crn(refine_sees_mixture=True)
  assert model.refine.down[0].kernel.shape[2] == 3

  grads = nnx.grad(lambda m: jnp.sum(jax.nn.sigmoid(m(inputs)["mask_logits"][1:])))(model)
  grad = grads.refine.down[0].kernel[...]
  assert np.all(np.isfinite(grad)) and np.abs(grad[:, :, 2]).max() > 0  # the log|mix| channel


def test_crn_alignment_features_of_true_sources_and_last_step():
  config = crn.get_config("tiny")
  model = _crn()
  inputs = _inputs(2, 3, config.audio.warp_bins, 16, 32)
  assert "alignment_features" not in model(inputs)  # inference: no source magnitudes
  source_mag = jnp.abs(jax.random.normal(jax.random.key(5), (2, 3, config.audio.warp_bins, 16)))
  out = model({**inputs, "source_mag": source_mag})
  real, fake = out["alignment_features"]
  assert real.shape == fake.shape == (2, 3, config.model.alignment.dim)
  # The true-source features do not depend on the masks; the last step's do.
  again = model({**inputs, "source_mag": source_mag, "mix_mag": 2 * inputs["mix_mag"]})
  np.testing.assert_allclose(again["alignment_features"][0], real, rtol=1e-5)
  assert not np.allclose(again["alignment_features"][1], fake, rtol=1e-3)
  # Separated spectrogram equal to the source's: equal features.
  last = jax.nn.sigmoid(out["mask_logits"][-1]) * inputs["mix_mag"][:, None]
  same = model({**inputs, "source_mag": last})["alignment_features"]
  np.testing.assert_allclose(same[0], same[1], rtol=1e-4, atol=1e-5)


def test_crn_alignment_head_checks_its_rows():
  with pytest.raises(ValueError,
                     match="map has 32 rows, the head was built for 16 .*audio.warp_bins"):
    _crn()({**_inputs(1, 2, 128, 16, 32), "source_mag": jnp.ones((1, 2, 128, 16))})


@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2), (2, 2, 2)])
def test_folded_3d_conv_equals_the_plain_one(stride):
  from avsep_jax.models import motion  # pylint: disable=g-import-not-at-top
  conv = motion.Conv3D(3, 5, (3, 3, 3), stride=stride, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 5, 12, 10, 3))
  folded = conv(x)
  conv.fold_time = False
  plain = conv(x)
  assert folded.shape == plain.shape == (2, -(-5 // stride[0]), -(-12 // stride[1]),
                                         -(-10 // stride[2]), 5)
  np.testing.assert_allclose(folded, plain, rtol=1e-4, atol=1e-5)


def test_mtsc_appearance_from_crops_or_frames():
  config = mtsc.get_config("tiny")
  inputs = _inputs(2, 2, config.audio.warp_bins, 32, config.dataset.crop_size,
                   config.dataset.num_frames)
  outs = {}
  for source in ("frames", "crops"):
    model = models.build_model({**config.model.to_dict(), "appearance_input": source},
                               rngs=nnx.Rngs(0))
    outs[source] = model(inputs)["mask_logits"]
    assert outs[source].shape == (1, 2, 2, config.audio.warp_bins, 32)
  assert not np.allclose(outs["frames"], outs["crops"])
  with pytest.raises(ValueError, match="appearance_input='boxes'"):
    models.build_model({**config.model.to_dict(), "appearance_input": "boxes"}, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="MTSC needs frames"):
    model({k: v for k, v in inputs.items() if k != "frames"})


def test_class_masks_mix_class_channels_by_the_classifier_s_probabilities():
  config = sop_binary.get_config("tiny")
  model = models.build_model(config.model, rngs=nnx.Rngs(0))
  inputs = _inputs(2, 2, config.audio.warp_bins, 16, config.dataset.crop_size)
  out = model(inputs)
  log_mix = masks_lib.log_magnitude(inputs["mix_mag"])[..., None]
  class_masks = jax.nn.sigmoid(model.unet(log_mix))                       # [B, F, T, C]
  probs = jax.nn.softmax(out["class_logits"], axis=-1)
  want = jnp.einsum("bnc,bftc->bnft", probs, class_masks)
  np.testing.assert_allclose(jax.nn.sigmoid(out["mask_logits"][0]), want, rtol=1e-4, atol=1e-6)
  # A classifier sure of class c gives that class's mask.
  model.visual.out.bias.value = jnp.zeros_like(model.visual.out.bias.value).at[3].set(1e4)
  out = model(inputs)
  np.testing.assert_allclose(jax.nn.sigmoid(out["mask_logits"][0, :, 0]), class_masks[..., 3],
                             rtol=1e-4, atol=1e-5)

