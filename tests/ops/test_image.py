"""Tests of sgdc_jax.ops.image: PyTorch's adaptive pooling bins, bilinear resize, Sobel."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np

from sgdc_jax.ops import image
import numpy_reference as ref


def test_adaptive_avg_pool_uses_pytorchs_overlapping_bins():
  x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
  got = np.asarray(image.adaptive_avg_pool(jnp.asarray(x), 3))
  # PyTorch's bin i of n_in -> n_out: [floor(i n_in / n_out), ceil((i + 1) n_in / n_out)).
  def bins(n_in):
    return [(i * n_in // 3, -(-(i + 1) * n_in // 3)) for i in range(3)]
  for i, (r0, r1) in enumerate(bins(5)):
    for j, (c0, c1) in enumerate(bins(7)):
      np.testing.assert_allclose(got[:, i, j], x[:, r0:r1, c0:c1].mean(axis=(1, 2)), rtol=1e-5)


def test_resize_bilinear_keeps_same_size_and_constants():
  x = jnp.full((1, 4, 6, 2), 3.0)
  assert image.resize_bilinear(x, (4, 6)) is x
  out = image.resize_bilinear(x, (9, 5))
  assert out.shape == (1, 9, 5, 2)
  np.testing.assert_allclose(np.asarray(out), 3.0, rtol=1e-6)


def test_sobel_magnitude_of_a_ramp_and_its_gradient_at_zero():
  ramp = jnp.broadcast_to(jnp.arange(6.0)[None, None, :, None], (1, 5, 6, 2))  # d/dx = 1 each
  mag = np.asarray(image.sobel_magnitude(ramp))
  assert mag.shape == (1, 5, 6, 1)
  np.testing.assert_allclose(mag[0, 1:-1, 1:-1, 0], 2 * 8.0)  # 2 channels x Sobel gain 8
  grad = jax.grad(lambda t: image.sobel_magnitude(t).sum())(jnp.zeros((1, 4, 4, 1)))
  assert np.all(np.isfinite(np.asarray(grad)))  # guarded sqrt: no NaN where gx = gy = 0


def test_resize_matches_pytorch_formula_both_directions():
  x = np.random.default_rng(5).normal(size=(1, 6, 9, 3)).astype(np.float32)
  for out in [(12, 18), (13, 5), (3, 4), (6, 9)]:
    np.testing.assert_allclose(np.asarray(image.resize_bilinear(jnp.asarray(x), out)),
                               ref.resize_bilinear(x.astype(float), *out), rtol=1e-5, atol=1e-6)
