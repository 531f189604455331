"""Per-pixel layers of the SGDC block with backward passes shaped for XLA's CPU backend.

`PointwiseConv`, `LayerNorm` and `gelu` give the values of `nn.Conv(features, (1, 1))`,
`nn.LayerNorm` (float32 statistics, fast variance) and `nn.gelu(approximate=False)` up to
float rounding, with the same parameters (names, shapes, initialisers), so checkpoints and
converted weights are unchanged. What differs is the backward XLA compiles on CPU:
- bias and scale gradients are `pixel_sum`s and layer-norm statistics `channel_mean`s
  (`sgdc_jax.ops.channel_sums`): products, not reduce-window trees;
- the 1x1 convolution is a `dot` whose kernel gradient transposes the narrower operand
  (a 1x1 `conv` transposed both, with their producers fused into the strided copy);
- the layer norm's and GELU's VJPs are written out, each reading its cotangent in few
  places (autodiff made XLA recompute a long producer chain in each one) and GELU through
  `erf` (XLA's `erfc` materialises `exp` and division intermediates).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sgdc_jax.ops.channel_sums import broadcast_channels, channel_dot, channel_mean, pixel_sum


@jax.custom_vjp
def _dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`(..., C_in) @ (C_in, C_out)`."""
  return jnp.dot(x, kernel)


def _dense_fwd(x, kernel):
  return jnp.dot(x, kernel), (x, kernel)


def _dense_bwd(residuals, g):
  """The kernel gradient contracts the pixels of x and g; XLA's CPU dot wants the left
  operand's contracted axis minor and copies it transposed (fusing its producers into that
  strided copy): the narrower of x and g goes left, so the copy is the smaller one."""
  x, kernel = residuals
  c_in, c_out = kernel.shape
  x2, g2 = x.reshape(-1, c_in), g.reshape(-1, c_out)
  contract = functools.partial(jax.lax.dot_general, dimension_numbers=(((0,), (0,)), ((), ())))
  if c_in <= c_out:
    d_kernel = contract(x2, g2)
  else:
    d_kernel = contract(g2, x2).T
  return jnp.dot(g, kernel.T), d_kernel


_dense.defvjp(_dense_fwd, _dense_bwd)


class PointwiseConv(nn.Module):
  """1x1 convolution with bias, `(B, H, W, C_in)` -> `(B, H, W, features)`, in `dtype`.

  With `splits` (increasing output-channel indices) it returns the pieces
  `y[..., :s0], y[..., s0:s1], ..., y[..., s_last:]`, each from its own product: slicing
  one output would make the backward assemble the pieces' gradients into one
  `(B, H, W, features)` array, a padded sum that XLA's CPU backend fuses slowly.
  """
  features: int
  dtype: Any = jnp.float32
  splits: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array | tuple[jax.Array, ...]:
    c_in = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (1, 1, c_in, self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype).reshape(c_in, self.features)
    bias = bias.astype(self.dtype)
    bounds = (0, *self.splits, self.features)
    pieces = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
      y = _dense(x, kernel[:, start:stop])
      pieces.append(y + broadcast_channels(bias[start:stop], y.shape))
    return tuple(pieces) if self.splits else pieces[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
  """`(x - mean) / sqrt(var + epsilon) * scale + bias` over the last axis; x, scale and
  bias float32."""
  return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
  mean = channel_mean(x)
  var = jnp.maximum(0.0, channel_mean(x * x) - mean * mean)  # flax's fast variance
  rstd = jax.lax.rsqrt(var + epsilon)
  return (x - mean) * (rstd * scale) + bias, (x, scale, mean, rstd)


def _layer_norm_bwd(epsilon, residuals, g):
  """dx = rstd * (g*scale - mean_c(g*scale) - xhat * mean_c(g*scale*xhat)).

  Written by hand so that g has few consumers: g often comes out of a long elementwise
  chain (the aggregation's input gradient) that XLA's CPU backend fuses into, and
  recomputes in, every elementwise consumer; autodiff of the forward had five."""
  del epsilon
  x, scale, mean, rstd = residuals
  g = g.astype(jnp.float32)
  xhat = (x - mean) * rstd
  gx = g * xhat
  c = x.shape[-1]
  d_x = rstd * (g * scale - (channel_dot(g, scale) + xhat * channel_dot(gx, scale)) / c)
  return d_x, pixel_sum(gx), pixel_sum(g)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
  """Layer norm over the channels `(..., C)`, statistics in float32, output in `dtype`."""
  epsilon: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones_init(), (c,))
    bias = self.param('bias', nn.initializers.zeros_init(), (c,))
    return layer_norm(x.astype(jnp.float32), scale, bias, self.epsilon).astype(self.dtype)


_SQRT_HALF = np.float32(np.sqrt(0.5))
_INV_SQRT_2PI = np.float32(1 / np.sqrt(2 * np.pi))


def _gelu_cdf(x: jax.Array) -> jax.Array:
  # erf, as PyTorch's exact GELU: XLA's CPU lowering of erfc (nn.gelu's form) goes through
  # exp and divisions, which it materialises as separate full-size arrays.
  return 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF))


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU, `x * Phi(x)` (`nn.gelu(x, approximate=False)` up to rounding), float32
  inside, `x.dtype` out; its VJP computes `Phi(x) + x * phi(x)` in one pass from x."""
  xf = x.astype(jnp.float32)
  return (xf * _gelu_cdf(xf)).astype(x.dtype)


def _gelu_fwd(x):
  return gelu(x), x


def _gelu_bwd(x, g):
  xf = x.astype(jnp.float32)
  slope = _gelu_cdf(xf) + xf * jnp.exp(-0.5 * xf * xf) * _INV_SQRT_2PI
  return ((g.astype(jnp.float32) * slope).astype(g.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)
