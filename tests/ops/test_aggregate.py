"""The pixel-adaptive aggregation: both implementations, values and gradients."""
import sgdc_jax  # noqa: F401  (XLA CPU flag first)

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax.modules.sgdc import SGDC
from sgdc_jax.ops.aggregate import pixel_adaptive_aggregate, softmax_aggregate
import numpy_reference as ref


def _inputs(b=2, h=7, w=10, c=12, heads=3, k=5, seed=0):
  kx, kw = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (b, h, w, c))
  weights = jax.nn.softmax(jax.random.normal(kw, (b, h, w, heads, k * k)) * 2, -1)
  return x, weights


@pytest.mark.parametrize('impl', ['unfold', 'shift', 'auto'])
@pytest.mark.parametrize('k', [1, 3, 7])
def test_matches_numpy(impl, k):
  x, w = _inputs(k=k)
  out = pixel_adaptive_aggregate(x, w, k, impl)
  np.testing.assert_allclose(np.asarray(out), ref.aggregate(np.asarray(x, float),
                                                            np.asarray(w, float), k),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('impl', ['unfold', 'shift', 'auto'])
def test_softmax_aggregate_matches_numpy(impl):
  # The entry the SGDC block uses: logits in, the softmax over taps in float32 first.
  x, _ = _inputs(k=3, seed=5)
  logits = 3 * jax.random.normal(jax.random.key(6), (*x.shape[:3], 3, 9))
  out = softmax_aggregate(x, logits, 3, impl)
  expected = ref.aggregate(np.asarray(x, float), ref.softmax(np.asarray(logits, float)), 3)
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)


def test_unnormalised_weights_and_padding_taps():
  # Weights that are not a softmax and a kernel wider than the image: padded taps give 0.
  x = jnp.ones((1, 2, 3, 4))
  w = jnp.ones((1, 2, 3, 2, 25))
  out = pixel_adaptive_aggregate(x, w, 5, 'shift')
  np.testing.assert_allclose(np.asarray(out[0, :, :, 0]), [[6, 6, 6], [6, 6, 6]])


def test_gradients_agree_between_implementations():
  x, w = _inputs(b=1, h=9, w=6, c=8, heads=2, k=7, seed=1)
  cot = jax.random.normal(jax.random.key(9), x.shape)

  def grads(impl):
    return jax.grad(lambda a, b: jnp.sum(pixel_adaptive_aggregate(a, b, 7, impl) * cot),
                    argnums=(0, 1))(x, w)

  (gx_u, gw_u), (gx_s, gw_s) = grads('unfold'), grads('shift')
  np.testing.assert_allclose(np.asarray(gx_s), np.asarray(gx_u), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gw_s), np.asarray(gw_u), rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(gw_s).max()) > 0


def test_shift_vjp_matches_numerical_gradient():
  # The hand-written VJP against finite differences of the NumPy reference (float64).
  x, w = _inputs(b=1, h=4, w=5, c=4, heads=2, k=3, seed=2)
  xs, ws = np.asarray(x, float), np.asarray(w, float)
  cot = np.random.default_rng(0).normal(size=x.shape)
  f = lambda a, b: np.sum(ref.aggregate(a, b, 3) * cot)
  gx, gw = jax.grad(lambda a, b: jnp.sum(pixel_adaptive_aggregate(a, b, 3, 'shift') * cot),
                    argnums=(0, 1))(x, w)
  eps = 1e-6
  for idx in [(0, 0, 0, 0), (0, 3, 4, 3), (0, 2, 1, 2)]:
    d = np.zeros_like(xs)
    d[idx] = eps
    assert abs((f(xs + d, ws) - f(xs - d, ws)) / (2 * eps) - float(gx[idx])) < 1e-4
  for idx in [(0, 0, 0, 0, 0), (0, 1, 2, 1, 4), (0, 3, 4, 0, 8)]:
    d = np.zeros_like(ws)
    d[idx] = eps
    assert abs((f(xs, ws + d) - f(xs, ws - d)) / (2 * eps) - float(gw[idx])) < 1e-4


@pytest.mark.parametrize('impl', ['unfold', 'shift'])
def test_jit_and_bf16(impl):
  x, w = _inputs(seed=3)
  f = jax.jit(lambda a, b: pixel_adaptive_aggregate(a, b, 5, impl))
  y32 = f(x, w)
  y16 = f(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
  assert y16.dtype == jnp.bfloat16 and y32.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), atol=0.05)
  g = jax.jit(jax.grad(lambda a, b: jnp.sum(pixel_adaptive_aggregate(a, b, 5, impl)
                                            .astype(jnp.float32)), argnums=(0, 1)))
  gx, gw = g(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
  assert gx.dtype == jnp.bfloat16 and gw.dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(gx.astype(jnp.float32))))


def test_vmap_over_an_extra_axis():
  x, w = _inputs(b=1, seed=4)
  stacked = jax.vmap(lambda a, b: pixel_adaptive_aggregate(a, b, 5))(x[None], w[None])
  np.testing.assert_allclose(np.asarray(stacked[0]),
                             np.asarray(pixel_adaptive_aggregate(x, w, 5)), rtol=1e-6)


@pytest.mark.parametrize('args, match', [
    (((1, 4, 4, 6), (1, 4, 4, 4, 9), 3), 'divisible by heads'),
    (((1, 4, 4, 8), (1, 4, 4, 2, 9), 5), 'expected kernel_size'),
    (((1, 4, 4, 8), (1, 4, 4, 2, 16), 4), 'odd'),
    (((1, 4, 4, 8), (1, 4, 5, 2, 9), 3), 'matching x'),
])
def test_bad_shapes(args, match):
  xs, ws, k = args
  with pytest.raises(ValueError, match=match):
    pixel_adaptive_aggregate(jnp.zeros(xs), jnp.zeros(ws), k)


def test_unknown_impl():
  x, w = _inputs()
  with pytest.raises(ValueError, match='impl'):
    pixel_adaptive_aggregate(x, w, 5, 'fft')


@pytest.mark.parametrize('dtype, tol', [(jnp.float32, 1e-5), (jnp.bfloat16, 0.05)])
def test_fused_softmax_shift_matches_softmax_then_unfold(dtype, tol):
  # softmax_aggregate's 'shift' path has its own VJP (softmax backward folded into the tap
  # gradients, the sum of exponentials divided once per output): values, dtypes and both
  # gradients against the XLA softmax followed by the unfold reference.
  x, _ = _inputs(b=2, h=6, w=9, c=8, heads=2, k=5, seed=7)
  logits = 3 * jax.random.normal(jax.random.key(8), (*x.shape[:3], 2, 25))
  x, logits = x.astype(dtype), logits.astype(dtype)
  cot = jax.random.normal(jax.random.key(10), x.shape).astype(dtype)

  def value_and_grads(impl):
    out, vjp = jax.vjp(lambda a, b: softmax_aggregate(a, b, 5, impl), x, logits)
    return (out, *vjp(cot))

  fused, ref = value_and_grads('shift'), value_and_grads('unfold')
  for got, want in zip(fused, ref):
    assert got.dtype == want.dtype == dtype and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=tol, atol=tol)
  assert float(jnp.abs(fused[2].astype(jnp.float32)).max()) > 0.01  # d logits not trivial


def assert_sgdc_block_matches_unfold(impl, batch, kernel_size):
  """The SGDC block on `impl` against the same block on 'unfold' (XLA softmax, autodiff
  through explicit patches): output and every parameter gradient, each side in one jit.
  Shared with test_pallas_aggregate.py."""
  x = jax.random.normal(jax.random.key(0), (batch, 7, 5, 16))
  guidance = jax.random.normal(jax.random.key(1), (batch, 4, 3, 8))
  cot = jax.random.normal(jax.random.key(2), x.shape)
  # A layer scale of 0.5 (not 1e-6) so that the aggregation branch moves the output.
  blocks = {name: SGDC(16, guide_channels=8, num_heads=4, kernel_size=kernel_size,
                       layer_scale_init=0.5, impl=name) for name in ('unfold', impl)}
  variables = jax.jit(blocks['unfold'].init)(jax.random.key(3), x, guidance)
  results = {}
  for name, block in blocks.items():
    def value_and_grad(v, block=block):
      y, vjp = jax.vjp(lambda v: block.apply(v, x, guidance), v)
      return y, vjp(cot)[0]

    results[name] = jax.jit(value_and_grad)(variables)
  (y_u, g_u), (y_i, g_i) = results['unfold'], results[impl]
  np.testing.assert_allclose(np.asarray(y_i), np.asarray(y_u), rtol=1e-5, atol=1e-5)
  flat_u, flat_i = jax.tree.leaves_with_path(g_u), jax.tree.leaves(g_i)
  assert len(flat_u) == len(flat_i)
  for (path, gu), gi in zip(flat_u, flat_i):
    scale = float(jnp.abs(gu).max()) + 1e-6
    np.testing.assert_allclose(np.asarray(gi) / scale, np.asarray(gu) / scale, atol=1e-5,
                               err_msg=jax.tree_util.keystr(path))
  assert float(jnp.abs(g_i['params']['attn']['kernel']).max()) > 0


def test_sgdc_block_shift_gradients_equal_unfold():
  # The fused softmax + 'shift' VJP inside the block.
  assert_sgdc_block_matches_unfold('shift', batch=2, kernel_size=5)
