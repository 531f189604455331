"""The Structural Guidance Extractor (sgdc_jax/modules/sge.py) against the independent NumPy
reference (tests/numpy_reference.py): values, BatchNorm statistics, Sobel gradients."""
import sgdc_jax  # noqa: F401  (first: sets the XLA CPU flag before JAX starts)

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax import SGE
from sgdc_jax.models.convert import torch_state_dict_to_flax
import numpy_reference as ref

TOL = dict(rtol=1e-5, atol=1e-5)


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


def test_sge_bad_rank():
  with pytest.raises(ValueError, match='shallow must be a 4-D'):
    SGE(bottleneck=8, mid=8).init(jax.random.key(0), jnp.zeros((1, 2, 2, 4)), jnp.zeros((8, 8, 4)))
