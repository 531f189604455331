"""The SGDC block's per-pixel layers (sgdc_jax/modules/channel_layers.py) and the sums behind
them (sgdc_jax/ops/channel_sums.py): values and gradients against flax's modules and
autodiff, float32 and bfloat16, and the same parameters as the flax modules they replace."""
import sgdc_jax  # noqa: F401  (first: sets the XLA CPU flag before JAX starts)

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax.modules.channel_layers import LayerNorm, PointwiseConv, gelu
from sgdc_jax.modules.layers import DepthwiseConv
from sgdc_jax.ops.channel_sums import (broadcast_channels, channel_dot, channel_mean,
                                       pixel_sum)

TOL = dict(rtol=1e-5, atol=1e-5)


def _x(shape=(2, 5, 7, 12), seed=0, scale=1.0, offset=0.0):
  return scale * jax.random.normal(jax.random.key(seed), shape) + offset


def _perturbed(variables, seed):
  # Parameters away from their initial ones (zeros, ones) so every gradient term matters.
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [l + 0.5 * jax.random.normal(k, l.shape)
                                   for l, k in zip(leaves, keys)])


def _value_and_grads(module, variables, x, cot):
  f = lambda v, a: jnp.sum((module.apply(v, a) * cot).astype(jnp.float32))
  return module.apply(variables, x), jax.grad(f, argnums=(0, 1))(variables, x)


def _assert_close(a, b, **tol):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(u, np.float32), np.asarray(v, np.float32), **tol)


@pytest.mark.parametrize('ours, theirs', [
    (PointwiseConv(9), nn.Conv(9, (1, 1))),
    (LayerNorm(1e-6), nn.LayerNorm(epsilon=1e-6)),
])
def test_layers_match_flax_in_parameters_values_and_gradients(ours, theirs):
  x = _x(scale=3.0, offset=1.0)
  ours_vars = ours.init(jax.random.key(1), x)
  # Same names, shapes and initial values (checkpoints and converted weights still load).
  _assert_close(ours_vars, theirs.init(jax.random.key(1), x), rtol=0, atol=0)
  assert jax.tree.structure(ours_vars) == jax.tree.structure(theirs.init(jax.random.key(1), x))
  variables = _perturbed(ours_vars, 2)
  cot = _x((2, 5, 7, ours.apply(variables, x).shape[-1]), seed=3)
  (y, grads), (y_ref, grads_ref) = (_value_and_grads(m, variables, x, cot)
                                    for m in (ours, theirs))
  _assert_close(y, y_ref, **TOL)
  _assert_close(grads, grads_ref, **TOL)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_pointwise_conv_splits_are_slices_of_one_convolution():
  x = _x()
  whole = PointwiseConv(10)
  split = PointwiseConv(10, splits=(3, 7))
  variables = _perturbed(whole.init(jax.random.key(0), x), 1)
  pieces = split.apply(variables, x)
  y = whole.apply(variables, x)
  assert [p.shape[-1] for p in pieces] == [3, 4, 3]
  _assert_close(jnp.concatenate(pieces, -1), y, **TOL)
  cots = [_x(p.shape, seed=5 + i) for i, p in enumerate(pieces)]
  g_split = jax.grad(lambda v: sum(jnp.sum(p * c) for p, c in zip(split.apply(v, x), cots)))
  g_whole = jax.grad(lambda v: jnp.sum(whole.apply(v, x) * jnp.concatenate(cots, -1)))
  _assert_close(g_split(variables), g_whole(variables), **TOL)


@pytest.mark.parametrize('c_in, c_out', [(12, 5), (5, 12)])
def test_pointwise_conv_kernel_gradient_both_operand_orders(c_in, c_out):
  # The kernel gradient puts the narrower of x and g on the left: both branches.
  x = _x((1, 4, 3, c_in), seed=7)
  conv, ref = PointwiseConv(c_out), nn.Conv(c_out, (1, 1))
  variables = _perturbed(conv.init(jax.random.key(0), x), 8)
  cot = _x((1, 4, 3, c_out), seed=9)
  _assert_close(_value_and_grads(conv, variables, x, cot),
                _value_and_grads(ref, variables, x, cot), **TOL)


def test_gelu_matches_flax_exact_gelu():
  x = jnp.linspace(-9.0, 9.0, 2001)
  np.testing.assert_allclose(np.asarray(gelu(x)), np.asarray(nn.gelu(x, approximate=False)),
                             rtol=1e-6, atol=1e-6)
  g, g_ref = (jax.grad(lambda v, f=f: jnp.sum(f(v) * jnp.cos(v)))(x)
              for f in (gelu, lambda v: nn.gelu(v, approximate=False)))
  np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-5, atol=1e-6)
  assert gelu(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
  assert jax.grad(lambda v: jnp.sum(gelu(v).astype(jnp.float32)))(
      x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_depthwise_conv_gradients_match_grouped_convolution():
  # DepthwiseConv's taps go through broadcast_channels; its parameter gradients are the
  # pixel sums of a grouped convolution's.
  x = _x((2, 6, 5, 8), seed=11)
  dw = DepthwiseConv(3)
  variables = _perturbed(dw.init(jax.random.key(0), x), 12)
  ref = nn.Conv(8, (3, 3), padding=[(1, 1), (1, 1)], feature_group_count=8)
  cot = _x(x.shape, seed=13)
  _assert_close(_value_and_grads(dw, variables, x, cot),
                _value_and_grads(ref, variables, x, cot), **TOL)


def test_bfloat16_dtypes_follow_flax():
  x = _x().astype(jnp.bfloat16)
  for ours, theirs in [(PointwiseConv(6, jnp.bfloat16), nn.Conv(6, (1, 1), dtype=jnp.bfloat16)),
                       (LayerNorm(1e-6, jnp.bfloat16), nn.LayerNorm(1e-6, dtype=jnp.bfloat16))]:
    variables = _perturbed(ours.init(jax.random.key(0), x), 1)
    cot = _x((2, 5, 7, ours.apply(variables, x).shape[-1])).astype(jnp.bfloat16)
    (y, (gv, gx)), (y_ref, (gv_ref, gx_ref)) = (_value_and_grads(m, variables, x, cot)
                                                for m in (ours, theirs))
    assert y.dtype == y_ref.dtype == jnp.bfloat16 and gx.dtype == gx_ref.dtype
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(gv))
    _assert_close(y, y_ref, rtol=0.02, atol=0.05)
    _assert_close(gv, gv_ref, rtol=0.02, atol=0.3)


def test_channel_sums_and_broadcast_gradient():
  a = _x((3, 4, 5, 6), seed=20)
  v = _x((6,), seed=21)
  np.testing.assert_allclose(np.asarray(pixel_sum(a)), np.asarray(a).sum((0, 1, 2)), **TOL)
  np.testing.assert_allclose(np.asarray(channel_mean(a)),
                             np.asarray(a).mean(-1, keepdims=True), **TOL)
  np.testing.assert_allclose(np.asarray(channel_dot(a, v)),
                             (np.asarray(a) * np.asarray(v)).sum(-1, keepdims=True), **TOL)
  # broadcast_channels: a broadcast whose gradient is the pixel sum; channel_mean's
  # gradient is autodiff's.
  f = lambda p, b: jnp.sum(jnp.sin(broadcast_channels(p, a.shape) * a) + channel_mean(b) ** 2)
  f_ref = lambda p, b: jnp.sum(jnp.sin(p * a) + jnp.mean(b, -1, keepdims=True) ** 2)
  _assert_close(jax.grad(f, argnums=(0, 1))(v, a), jax.grad(f_ref, argnums=(0, 1))(v, a),
                **TOL)
