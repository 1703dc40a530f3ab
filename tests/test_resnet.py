"""avsep_jax.models.resnet: shapes, parameter counts, SoP dilation, BN modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avsep_jax.models.resnet import ResNet18

# torchvision resnet18: 11,689,512 parameters, of which fc has 512 * 1000 + 1000.
TRUNK_PARAMS = 11_689_512 - (512 * 1000 + 1000)


@pytest.fixture(scope="module")
def models():
  """One model per (in_channels, dilated); read-only tests share them."""
  return {(c, d): ResNet18(in_channels=c, dilated=d, rngs=nnx.Rngs(c + 10 * d))
          for c in (3, 1) for d in (False, True)}


@nnx.jit
def forward(model, x):
  return model(x)


def count(model, kind):
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, kind)))


def test_param_counts(models):
  for dilated in (False, True):
    assert count(models[3, dilated], nnx.Param) == TRUNK_PARAMS
    assert count(models[1, dilated], nnx.Param) == TRUNK_PARAMS - 64 * 7 * 7 * 2
    # Running mean and var of the 20 BatchNorms, outside the Params.
    assert count(models[3, dilated], nnx.BatchStat) == 2 * (
        64 + 4 * 64 + 4 * 128 + 4 * 256 + 4 * 512 + 128 + 256 + 512)


@pytest.mark.parametrize("in_channels", [3, 1])
@pytest.mark.parametrize("dilated,side", [(False, 2), (True, 4)])
def test_output_shape_64(models, rng, in_channels, dilated, side):
  model = nnx.view(models[in_channels, dilated], use_running_average=True)
  x = rng.standard_normal((2, 64, 64, in_channels)).astype(np.float32)
  y = forward(model, x)
  assert y.shape == (2, side, side, 512)
  assert y.dtype == jnp.float32
  assert np.all(np.isfinite(y))


@pytest.mark.parametrize("dilated,side", [(False, 7), (True, 14)])
def test_output_shape_224(models, dilated, side):
  # PyTorch's sizes: 224 -> 112 -> 56 -> 56, 28, 14, 7 (dilated: 56, 28, 14, 14).
  out = nnx.eval_shape(lambda m, x: m(x), models[3, dilated],
                       jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert out.shape == (1, side, side, 512)


def test_odd_sizes_round_like_pytorch(models):
  # floor((n + 2p - d(k-1) - 1) / s) + 1 per layer: 97 -> 49 -> 25 -> 25, 13, 7, 4.
  out = nnx.eval_shape(lambda m, x: m(x), models[3, False],
                       jax.ShapeDtypeStruct((1, 97, 65, 3), jnp.float32))
  assert out.shape == (1, 4, 3, 512)


def test_rejects_wrong_channels(models):
  with pytest.raises(ValueError, match="NHWC"):
    models[1, False](jnp.zeros((1, 32, 32, 3)))


def test_sop_dilation_rule(models):
  """layer4 after `_nostride_dilate(dilate=2)`; layers 1-3 untouched."""
  def layout(conv):
    return tuple(np.atleast_1d(conv.strides)), tuple(
        np.atleast_1d(conv.kernel_dilation)), tuple(conv.padding)

  plain, dil = models[3, False], models[3, True]
  l4 = dil.layer4
  assert layout(l4[0].conv1) == ((1,), (1,), ((1, 1), (1, 1)))
  assert layout(l4[0].downsample.conv) == ((1,), (1,), ((0, 0), (0, 0)))
  for conv in (l4[0].conv2, l4[1].conv1, l4[1].conv2):
    assert layout(conv) == ((1,), (2,), ((2, 2), (2, 2)))
  assert layout(plain.layer4[0].conv1) == ((2,), (1,), ((1, 1), (1, 1)))
  assert layout(plain.layer4[0].downsample.conv) == ((2,), (1,), ((0, 0), (0, 0)))
  for name in ("layer1", "layer2", "layer3"):
    for a, b in zip(getattr(plain, name), getattr(dil, name)):
      assert layout(a.conv1) == layout(b.conv1)
      assert layout(a.conv2) == layout(b.conv2)
  assert plain.layer1[0].downsample is None and plain.layer1[1].downsample is None


def _torch_style_reference(model, x_nhwc, dilated):
  """Eval-mode forward in NCHW/OIHW with the PyTorch modules' own arithmetic.

  Strides, paddings and dilations are derived here, independently of the
  module, from torchvision's resnet18 and SoP's `_nostride_dilate(dilate=2)`.
  """
  def conv(x, c, stride, pad, dil):
    w = jnp.transpose(c.kernel[...], (3, 2, 0, 1))  # [kh, kw, I, O] -> OIHW
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), [(pad, pad)] * 2, rhs_dilation=(dil, dil),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=jax.lax.Precision.HIGHEST)

  def bn(x, b):
    shape = (1, -1, 1, 1)
    inv = b.scale[...].reshape(shape) / jnp.sqrt(b.var[...].reshape(shape) + 1e-5)
    return (x - b.mean[...].reshape(shape)) * inv + b.bias[...].reshape(shape)

  def sop(stride, kernel, dilate):
    """`_nostride_dilate` on a torch conv: returns (stride, padding, dilation)."""
    if stride == 2:
      return (1, 1, 1) if kernel == 3 else (1, 0, 1)  # dilate // 2 == 1
    return (1, dilate, dilate) if kernel == 3 else (1, 0, 1)

  x = jnp.transpose(x_nhwc, (0, 3, 1, 2))
  x = jax.nn.relu(bn(conv(x, model.conv1, 2, 3, 1), model.bn1))
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 2, 2),
                            [(0, 0), (0, 0), (1, 1), (1, 1)])
  for li, layer in enumerate((model.layer1, model.layer2, model.layer3, model.layer4)):
    for bi, block in enumerate(layer):
      s = 2 if (li > 0 and bi == 0) else 1
      c1, c2, ds = (s, 1, 1), (1, 1, 1), (s, 0, 1)  # (stride, padding, dilation)
      if dilated and li == 3:
        c1, c2, ds = sop(s, 3, 2), sop(1, 3, 2), sop(s, 1, 2)
      y = jax.nn.relu(bn(conv(x, block.conv1, *c1), block.bn1))
      y = bn(conv(y, block.conv2, *c2), block.bn2)
      if block.downsample is not None:
        x = bn(conv(x, block.downsample.conv, *ds), block.downsample.bn)
      x = jax.nn.relu(y + x)
  return jnp.transpose(x, (0, 2, 3, 1))


@pytest.mark.parametrize("dilated", [False, True])
def test_matches_torch_style_reference(rng, dilated):
  model = ResNet18(dilated=dilated, rngs=nnx.Rngs(3))
  # Non-trivial running statistics and affine parameters, so BN is exercised.
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Variable) and path[-1] in ("mean", "bias"):
      var[...] = jnp.asarray(rng.normal(0.0, 0.1, var.shape), jnp.float32)
    elif isinstance(var, nnx.Variable) and path[-1] in ("var", "scale"):
      var[...] = jnp.asarray(rng.uniform(0.5, 1.5, var.shape), jnp.float32)
  model.eval()
  x = rng.standard_normal((1, 45, 38, 3)).astype(np.float32)
  with jax.default_matmul_precision("highest"):
    ours = forward(model, x)
  ref = _torch_style_reference(model, jnp.asarray(x), dilated)
  assert ours.shape == ref.shape == ((1, 3, 3, 512) if dilated else (1, 2, 2, 512))
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * float(jnp.abs(ref).max()))


def test_train_updates_batch_stats_eval_does_not(rng):
  model = ResNet18(in_channels=1, dilated=True, rngs=nnx.Rngs(0))
  x = jnp.asarray(rng.standard_normal((2, 32, 32, 1)), jnp.float32)
  stats0 = jax.tree.map(np.array, nnx.state(model, nnx.BatchStat))

  # Fresh modules are in training mode, like PyTorch's.
  assert model.bn1.use_running_average is False
  forward(model, x)
  stats1 = jax.tree.map(np.array, nnx.state(model, nnx.BatchStat))
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b),
                                         stats0, stats1))
  assert all(changed)  # every BatchNorm's mean and var moved
  # PyTorch momentum 0.1: running = 0.9 * old + 0.1 * batch (zeros -> 0.1 * mean).
  pre_bn = model.conv1(x)
  np.testing.assert_allclose(stats1["bn1"]["mean"][...],
                             0.1 * np.asarray(pre_bn).mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)

  # A view in eval mode leaves the model in training mode and its stats alone.
  view = nnx.view(model, use_running_average=True)
  assert view.layer4[1].bn2.use_running_average is True
  assert model.layer4[1].bn2.use_running_average is False
  ya, yb = forward(view, x), forward(view, x)
  np.testing.assert_array_equal(ya, yb)

  model.eval()
  assert all(m.use_running_average for _, m in nnx.iter_modules(model)
             if isinstance(m, nnx.BatchNorm))
  y1 = forward(model, x)
  y2 = forward(model, x[:1])  # batch-independent in eval mode
  np.testing.assert_array_equal(y1, ya)
  np.testing.assert_allclose(y2, y1[:1], rtol=1e-5, atol=1e-5)
  stats2 = jax.tree.map(np.array, nnx.state(model, nnx.BatchStat))
  jax.tree.map(np.testing.assert_array_equal, stats1, stats2)

  model.train()
  assert model.layer2[0].downsample.bn.use_running_average is False


def test_gradients_finite(rng):
  model = ResNet18(rngs=nnx.Rngs(1))
  x = jnp.asarray(rng.standard_normal((2, 32, 32, 3)), jnp.float32)
  grads = nnx.jit(nnx.grad(lambda m, x: jnp.sum(m(x))))(model, x)
  leaves = jax.tree.leaves(grads)
  assert len(leaves) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert np.any(np.asarray(grads["conv1"]["kernel"][...]) != 0)
