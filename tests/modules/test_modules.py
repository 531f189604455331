"""SGE and SGDC against the independent NumPy reference (tests/numpy_reference.py)."""
import sgdc_jax  # noqa: F401  (first: sets the XLA CPU flag before JAX starts)

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax import SGDC, SGE
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


SGE_SIZES = [
    # (batch, deep H, W, C, shallow H, W, C, bottleneck, mid, guide)
    (2, 3, 4, 24, 12, 16, 8, 16, 12, 6),
    (1, 2, 3, 10, 9, 7, 6, 8, 8, 4),  # odd, non-integer resize ratios
]


@pytest.mark.parametrize('size', SGE_SIZES)
def test_sge_matches_numpy(size):
  b, dh, dw, dc, sh, sw, sc, bottleneck, mid, guide = size
  rng = np.random.default_rng(2)
  sd = ref.sge_state_dict(rng, dc, sc, bottleneck, mid, guide)
  deep = rng.normal(size=(b, dh, dw, dc)).astype(np.float32)
  shallow = rng.normal(size=(b, sh, sw, sc)).astype(np.float32)
  module = SGE(bottleneck=bottleneck, mid=mid, guide_channels=guide)
  target = module.init(jax.random.key(0), deep, shallow)
  variables = torch_state_dict_to_flax(sd, 'sge', target=target)
  edge, guidance = module.apply(variables, deep, shallow, train=False)
  edge_ref, guidance_ref = ref.sge(sd, deep.astype(float), shallow.astype(float))
  assert edge.shape == (b, sh, sw, 1) and guidance.shape == (b, sh, sw, guide)
  np.testing.assert_allclose(np.asarray(edge), edge_ref, **TOL)
  np.testing.assert_allclose(np.asarray(guidance), guidance_ref, **TOL)


def test_sge_batch_stats_update_only_in_train():
  rng = np.random.default_rng(3)
  deep = rng.normal(size=(2, 2, 2, 8)).astype(np.float32)
  shallow = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  module = SGE(bottleneck=8, mid=8, guide_channels=4)
  variables = module.init(jax.random.key(0), deep, shallow)
  _, updated = module.apply(variables, deep, shallow, train=True, mutable=['batch_stats'])
  before = jax.tree.leaves(variables['batch_stats'])
  after = jax.tree.leaves(updated['batch_stats'])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))
  with pytest.raises(Exception):  # eval mode must not try to write statistics
    module.apply(variables, deep, shallow, train=True)  # not mutable -> flax error


def _zero_structure_sge():
  """SGE weights whose projections are exactly 0 everywhere: the Sobel magnitude is 0."""
  rng = np.random.default_rng(4)
  sd = ref.sge_state_dict(rng, 6, 4, 8, 8, 4)
  for name in ('s4_proj', 's1_proj'):
    sd[f'{name}.bn.running_mean'][:] = 0
    sd[f'{name}.bn.bias'][:] = -1.0  # relu(-1) = 0: exact zeros after the projection
  return sd


def test_sge_gradients_finite_where_sobel_magnitude_is_zero():
  sd = _zero_structure_sge()
  module = SGE(bottleneck=8, mid=8, guide_channels=4)
  variables = torch_state_dict_to_flax(sd, 'sge')
  deep = jnp.zeros((1, 2, 2, 6))
  shallow = jnp.zeros((1, 8, 8, 4)).at[:, 4:, 4:].set(1.0)  # a zero region and a flat region

  def loss(params, deep, shallow):
    edge, guidance = module.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                  deep, shallow)
    return jnp.sum(edge ** 2) + jnp.sum(guidance ** 2)

  grads = jax.grad(loss, argnums=(0, 1, 2))(variables['params'], deep, shallow)
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert any(float(jnp.abs(g).max()) > 0 for g in leaves)
  # The plain sqrt of the reference gives NaN here: the test would catch a regression.
  naive = jax.grad(lambda t: jnp.sum(jnp.sqrt(t * t)))(jnp.zeros(3))
  assert bool(jnp.any(jnp.isnan(naive)))


def test_sobel_forward_matches_unguarded_sqrt():
  x = jax.random.normal(jax.random.key(0), (2, 7, 9, 5))
  from sgdc_jax.ops.image import sobel_magnitude
  c = x.shape[-1]
  full_x = np.broadcast_to(ref.KX, (c, c, 3, 3))
  full_y = np.broadcast_to(ref.KY, (c, c, 3, 3))
  xs = np.asarray(x, float)
  expected = np.sqrt(ref.conv2d(xs, full_x) ** 2 + ref.conv2d(xs, full_y) ** 2)[..., :1]
  np.testing.assert_allclose(np.asarray(sobel_magnitude(x)), expected, rtol=1e-5, atol=1e-5)


def test_resize_matches_pytorch_formula_both_directions():
  from sgdc_jax.ops.image import resize_bilinear
  x = np.random.default_rng(5).normal(size=(1, 6, 9, 3)).astype(np.float32)
  for out in [(12, 18), (13, 5), (3, 4), (6, 9)]:
    np.testing.assert_allclose(np.asarray(resize_bilinear(jnp.asarray(x), out)),
                               ref.resize_bilinear(x.astype(float), *out), rtol=1e-5, atol=1e-6)


def test_drop_path_drops_whole_samples_and_rescales():
  from sgdc_jax.modules.layers import DropPath
  x = jnp.ones((64, 2, 2, 3))
  y = DropPath(0.5).apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(0)})
  per_sample = np.asarray(y).reshape(64, -1)
  assert np.all(per_sample == per_sample[:, :1])  # whole samples, not single values
  values = set(per_sample[:, 0].tolist())
  assert values == {0.0, 2.0}  # dropped, or kept and scaled by 1 / keep_prob
  np.testing.assert_array_equal(np.asarray(DropPath(0.5).apply({}, x)), np.asarray(x))


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


def test_sge_bad_rank():
  with pytest.raises(ValueError, match='shallow must be a 4-D'):
    SGE(bottleneck=8, mid=8).init(jax.random.key(0), jnp.zeros((1, 2, 2, 4)), jnp.zeros((8, 8, 4)))


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
