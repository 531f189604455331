"""Sums over pixels and over channels that XLA's CPU backend runs as matrix products.

Autodiff turns every per-channel parameter broadcast over `(B, H, W)` (biases, layer-norm
and layer scales, depthwise taps) into a `reduce_sum` over the pixels, and a layer norm
reduces over the channels. XLA's CPU compiler rewrites such reductions into `reduce-window`
trees (TreeReductionRewriter) that its emitter runs ~8x slower than a matrix-vector product
with a vector of ones: at (4, 64, 64, 256) one pixel sum took 42 ms as a reduction and
5 ms as a product, and the twenty of them were ~1 s of the SGDC block's 2 s backward
(`benchmarks/bench_sgdc.py`). On CPU these helpers therefore sum through `jnp.dot` (float32
accumulation, `Precision.HIGHEST`); on other backends they are the plain reductions.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _use_dot() -> bool:
  # Read at trace time, like the aggregation's 'auto' (sgdc_jax.ops.aggregate.resolve_impl).
  return jax.default_backend() == 'cpu'


def _dot_f32(a: jax.Array, b: jax.Array) -> jax.Array:
  """`jnp.dot(a, b)` at full precision, accumulated and returned in float32."""
  return jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


def pixel_sum(a: jax.Array) -> jax.Array:
  """Sum over every axis but the last: `(..., C)` -> `(C,)`, float32."""
  if not _use_dot():
    return jnp.sum(a.astype(jnp.float32), axis=tuple(range(a.ndim - 1)))
  a = a.reshape(-1, a.shape[-1])
  return _dot_f32(jnp.ones((a.shape[0],), a.dtype), a)


def channel_mean(a: jax.Array) -> jax.Array:
  """Mean over the last axis: `(..., C)` -> `(..., 1)`, float32; differentiable (its
  transpose is a broadcast, so its gradient adds no reduction)."""
  if not _use_dot():
    return jnp.mean(a.astype(jnp.float32), axis=-1, keepdims=True)
  c = a.shape[-1]
  return channel_dot(a, jnp.ones((c,), a.dtype)) / c


def channel_dot(a: jax.Array, v: jax.Array) -> jax.Array:
  """sum_c a[..., c] * v[c]: `(..., C)`, `(C,)` -> `(..., 1)`, float32."""
  if not _use_dot():
    return jnp.sum(a.astype(jnp.float32) * v.astype(jnp.float32), axis=-1, keepdims=True)
  c = a.shape[-1]
  return _dot_f32(a.reshape(-1, c), v.astype(a.dtype)).reshape(*a.shape[:-1], 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def broadcast_channels(p: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """`p` `(C,)` broadcast to `shape` `(..., C)`; its gradient is the `pixel_sum` of the
  cotangent (a plain broadcast's gradient is a `reduce_sum`)."""
  return jnp.broadcast_to(p, shape)


def _broadcast_fwd(p, shape):
  return jnp.broadcast_to(p, shape), None


def _broadcast_bwd(shape, _, g):
  del shape
  return (pixel_sum(g).astype(g.dtype),)  # g has p's dtype


broadcast_channels.defvjp(_broadcast_fwd, _broadcast_bwd)
