"""Tests of sgdc_jax.models.resnet: feature strides and channels (weights: test_resnet_convert)."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax.models import resnet


def test_stage_channels():
  assert resnet.stage_channels(18) == (64, 128, 256, 512)
  assert resnet.stage_channels(50) == (256, 512, 1024, 2048)
  with pytest.raises(ValueError, match='depth'):
    resnet.stage_channels(20)


def test_features_at_strides_4_to_32_with_ceil_division():
  model = resnet.ResNet(depth=18)
  x = jnp.zeros((1, 70, 64, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  feats = jax.eval_shape(model.apply, variables, x)
  assert [f.shape for f in feats] == [(1, 18, 16, 64), (1, 9, 8, 128), (1, 5, 4, 256),
                                      (1, 3, 2, 512)]



def test_with_stem_adds_the_stride_2_stem_and_keeps_the_rest():
  model = resnet.ResNet(depth=18)
  x = jax.random.normal(jax.random.key(1), (1, 70, 64, 3))
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  with_stem = jax.eval_shape(lambda: model.init(jax.random.key(0), x, with_stem=True))
  assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, with_stem)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.0, a.shape), a.dtype) * 0.1,
                           shapes)

  @jax.jit
  def run(v):
    feats = model.apply(v, x)
    out, state = model.apply(v, x, with_stem=True, capture_intermediates=True)
    return feats, out, state['intermediates']['bn1']['__call__'][0]

  feats, (stem, *rest), bn1 = run(variables)
  assert stem.shape == (1, 35, 32, 64)
  assert len(rest) == 4
  for a, b in zip(feats, rest):
    np.testing.assert_array_equal(a, b)
  # c0 is the stem's conv-BN-ReLU, before the 3x3/2 max-pool.
  np.testing.assert_array_equal(stem, jax.nn.relu(bn1))
  assert float(jnp.max(stem)) > 0.0
