"""The SGDC block (sgdc_jax/modules/sgdc.py) against the independent NumPy reference
(tests/numpy_reference.py), its drop path, input errors, jit and bfloat16."""
import sgdc_jax  # noqa: F401  (first: sets the XLA CPU flag before JAX starts)

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax import SGDC
from sgdc_jax.models.convert import torch_state_dict_to_flax
import numpy_reference as ref

TOL = dict(rtol=1e-5, atol=1e-5)


def _sgdc_case(seed, b, h, w, dim, guide, heads, k, gh, gw):
  rng = np.random.default_rng(seed)
  sd = ref.sgdc_state_dict(rng, dim, guide, heads, k)
  x = rng.normal(size=(b, h, w, dim)).astype(np.float32)
  g = rng.normal(size=(b, gh, gw, guide)).astype(np.float32)
  return sd, x, g


SGDC_SIZES = [
    # (batch, H, W, dim, guide, heads, k, guidance H, W): H != W, odd sizes, up- and downsampling
    (2, 9, 13, 16, 6, 4, 7, 5, 7),
    (1, 12, 8, 12, 4, 2, 5, 24, 16),
    (1, 5, 5, 8, 3, 4, 7, 5, 5),  # kernel wider than half the image: padded taps matter
]


@pytest.mark.parametrize('size', SGDC_SIZES)
@pytest.mark.parametrize('impl', ['unfold', 'shift'])
def test_sgdc_matches_numpy(size, impl):
  b, h, w, dim, guide, heads, k, gh, gw = size
  sd, x, g = _sgdc_case(0, *size)
  variables = torch_state_dict_to_flax(sd, 'sgdc')
  block = SGDC(dim, guide_channels=guide, num_heads=heads, kernel_size=k, impl=impl)
  target = block.init(jax.random.key(0), x, g)
  from sgdc_jax.models.convert import check_against_target
  check_against_target(variables, target)
  y = block.apply(variables, x, g)
  expected = ref.sgdc(sd, x.astype(float), g.astype(float), heads, k)
  assert y.shape == x.shape and y.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y), expected, **TOL)
  # The branches matter: with layer scales ~0.75 the block is far from identity.
  assert np.abs(expected - x).mean() > 0.1


@pytest.mark.parametrize('source', ['pooled', 'none'])
def test_baseline_kernel_sources_match_numpy(source):
  rng = np.random.default_rng(1)
  dim, heads, k = 16, 4, 5
  x = rng.normal(size=(2, 11, 9, dim)).astype(np.float32)
  sd = ref.sgdc_state_dict(rng, dim, dim if source == 'pooled' else 4, heads, k)
  variables = torch_state_dict_to_flax(sd, 'sgdc')
  if source == 'none':
    del variables['params']['guidance_proj']
  block = SGDC(dim, num_heads=heads, kernel_size=k, kernel_source=source, pool_size=3)
  y = block.apply(variables, x, None)
  expected = ref.sgdc(sd, x.astype(float), None, heads, k, kernel_source=source, pool_size=3)
  np.testing.assert_allclose(np.asarray(y), expected, **TOL)
  assert set(block.init(jax.random.key(0), x)['params']) == set(variables['params'])


def test_sgdc_drop_path_uses_dropout_rng():
  dim = 8
  x = jax.random.normal(jax.random.key(0), (16, 4, 4, dim))
  block = SGDC(dim, num_heads=2, kernel_size=3, kernel_source='none', drop_path=0.5,
               layer_scale_init=1.0)
  variables = block.init(jax.random.key(1), x)
  det = block.apply(variables, x, None)
  run = lambda seed: block.apply(variables, x, None, deterministic=False,
                                 rngs={'dropout': jax.random.key(seed)})
  assert not np.allclose(np.asarray(det), np.asarray(run(2)))
  np.testing.assert_array_equal(np.asarray(run(2)), np.asarray(run(2)))
  assert not np.allclose(np.asarray(run(2)), np.asarray(run(3)))


@pytest.mark.parametrize('kwargs, args, match', [
    (dict(dim=8), ((1, 4, 4, 6), (1, 2, 2, 16)), 'channels but the block was built with dim=8'),
    (dict(dim=10, num_heads=4), ((1, 4, 4, 10), (1, 2, 2, 16)), 'divisible by num_heads'),
    (dict(dim=8), ((4, 4, 8), (1, 2, 2, 16)), '4-D NHWC'),
    (dict(dim=8), ((1, 4, 4, 8), (1, 2, 2, 5)), 'guide_channels=16'),
    (dict(dim=8, kernel_source='avg'), ((1, 4, 4, 8), (1, 2, 2, 16)), 'kernel_source'),
    (dict(dim=8, impl='fast'), ((1, 4, 4, 8), (1, 2, 2, 16)), 'impl'),
])
def test_sgdc_bad_input_errors(kwargs, args, match):
  x, g = (jnp.zeros(s) for s in args)
  with pytest.raises(ValueError, match=match):
    SGDC(**kwargs).init(jax.random.key(0), x, g)


def test_sgdc_structure_needs_guidance():
  with pytest.raises(ValueError, match='needs a guidance map'):
    SGDC(8).init(jax.random.key(0), jnp.zeros((1, 4, 4, 8)), None)


def test_jit_and_bf16():
  rng = np.random.default_rng(6)
  sd, x, g = _sgdc_case(6, 1, 8, 8, 16, 4, 4, 5, 4, 4)
  variables = torch_state_dict_to_flax(sd, 'sgdc')
  f32 = SGDC(16, guide_channels=4, num_heads=4, kernel_size=5)
  bf16 = SGDC(16, guide_channels=4, num_heads=4, kernel_size=5, dtype=jnp.bfloat16)
  y32 = jax.jit(f32.apply)(variables, x, g)
  y16 = jax.jit(bf16.apply)(variables, x, g)
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), rtol=0.05, atol=0.1)
  grads = jax.grad(lambda v: jnp.sum(bf16.apply(v, x, g).astype(jnp.float32) ** 2))(variables)
  assert all(bool(jnp.all(jnp.isfinite(l))) and l.dtype == jnp.float32
             for l in jax.tree.leaves(grads))
  del rng
