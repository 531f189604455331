"""Resizing, pooling and Sobel filtering with PyTorch's semantics, NHWC."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Cross-correlation taps (PyTorch conv semantics, not flipped).
SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear resize of `(B, H, W, C)` to `(B, *size, C)`.

  Same values as PyTorch's `F.interpolate(mode='bilinear', align_corners=False)` in both
  directions: half-pixel centres, edge clamping and no antialiasing (jax's default
  `antialias=True` blurs when downsampling, PyTorch does not).
  """
  height, width = int(size[0]), int(size[1])
  if x.shape[1:3] == (height, width):
    return x
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), 'bilinear',
                          antialias=False)


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) averaging matrix of PyTorch's adaptive pooling bins."""
  mat = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
    mat[i, start:end] = 1.0 / (end - start)
  return mat


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """PyTorch's `adaptive_avg_pool2d(x, size)` for `(B, H, W, C)` -> `(B, size, size, C)`."""
  rows = jnp.asarray(_pool_matrix(x.shape[1], size), x.dtype)
  cols = jnp.asarray(_pool_matrix(x.shape[2], size), x.dtype)
  return jnp.einsum('ih,bhwc,jw->bijc', rows, x, cols)


def _xcorr3x3(u: jax.Array, taps: np.ndarray) -> jax.Array:
  """3x3 cross-correlation of `(B, H, W)` with zero padding 1."""
  height, width = u.shape[1:]
  padded = jnp.pad(u, ((0, 0), (1, 1), (1, 1)))
  out = jnp.zeros_like(u)
  for dy in range(3):
    for dx in range(3):
      if taps[dy, dx]:
        out = out + float(taps[dy, dx]) * padded[:, dy:dy + height, dx:dx + width]
  return out


def sobel_magnitude(t: jax.Array) -> jax.Array:
  """Sobel gradient magnitude of the channel sum of `t` `(B, H, W, C)` -> `(B, H, W, 1)`.

  The reference applies a (C x C) 3x3 convolution whose every slice is the Sobel kernel;
  each output channel is then the Sobel response of the channel sum, computed here once.
  The square root uses a guarded form: the value equals `sqrt(gx^2 + gy^2)` and the
  gradient is 0 (instead of inf -> NaN) where gx = gy = 0, which happens on ReLU zeros.
  """
  u = jnp.sum(t, axis=-1)
  gx, gy = _xcorr3x3(u, SOBEL_X), _xcorr3x3(u, SOBEL_Y)
  sq = gx * gx + gy * gy
  positive = sq > 0
  mag = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return mag[..., None]
