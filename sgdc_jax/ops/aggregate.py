"""Pixel-adaptive aggregation: a k x k convolution whose kernel changes at every pixel.

    out[b, y, x, c] = sum_{dy, dx} w[b, y, x, c // (C / heads), dy * k + dx]
                                    * x_pad[b, y + dy, x + dx, c]

with `x_pad` zero-padded by k // 2 on each side (step 4 of the SGDC block, docs/design.md
section 3). Three implementations give the same values and gradients:

- `'unfold'`: gathers every pixel's k x k neighbourhood into a `(B, H, W, k*k, C)` patch
  tensor and contracts it with the weights: the readable reference (im2col), memory
  k*k times the input.
- `'shift'`: accumulates the k*k shifted copies of the input one tap at a time and has a
  hand-written VJP built the same way, so neither pass materialises the patches. Reached
  through `softmax_aggregate` it is `softmax_aggregate_shift`, one VJP for the softmax and
  the aggregation (the softmax backward folded into the tap gradients).
- `'pallas'`: one fused kernel that also does the softmax over taps
  (`sgdc_jax.ops.pallas_aggregate`); it takes logits, so it is reached through
  `softmax_aggregate` only.

`softmax_aggregate(x, logits, ...)` is what the SGDC block calls; its `'auto'` picks
`'pallas'` on a GPU backend (where the kernel's Triton lowering is tested) and `'shift'`
elsewhere (CPU; TPU, for which there is no Mosaic TPU variant).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from sgdc_jax.ops.pallas_aggregate import softmax_aggregate_pallas
from sgdc_jax.ops.shapes import check_aggregate_args

IMPLEMENTATIONS = ('unfold', 'shift', 'pallas')
# `jax.default_backend()` names where 'auto' picks 'pallas'. Empty until the kernel has been
# compiled and timed on a real GPU (`benchmarks/bench_sgdc.py`): its Triton lowering is checked
# on CPU by a cross-platform export, but neither PTX compilation nor its speed against 'shift'
# has been measured yet, and 'auto' must never pick a slower or unproven kernel. Add 'gpu' once
# the benchmark shows it faster at every size; until then select it with impl='pallas'.
PALLAS_BACKENDS: tuple[str, ...] = ()


def _pad_hw(a: jax.Array, r: int) -> jax.Array:
  """Zero-pads the two spatial axes (1, 2) of `a` by r on each side."""
  pad = [(0, 0)] * a.ndim
  pad[1] = pad[2] = (r, r)
  return jnp.pad(a, pad)


def _window(a: jax.Array, dy: int, dx: int, height: int, width: int) -> jax.Array:
  return a[:, dy:dy + height, dx:dx + width]


def aggregate_unfold(x: jax.Array, weights: jax.Array, kernel_size: int) -> jax.Array:
  """Reference implementation through explicit `(B, H, W, k*k, C)` patches."""
  heads, group = check_aggregate_args(x, weights, kernel_size)
  b, h, w, c = x.shape
  x_pad = _pad_hw(x, kernel_size // 2)
  patches = jnp.stack([_window(x_pad, dy, dx, h, w)
                       for dy in range(kernel_size) for dx in range(kernel_size)], axis=3)
  patches = patches.reshape(b, h, w, kernel_size * kernel_size, heads, group)
  out = jnp.einsum('bhwtgc,bhwgt->bhwgc', patches, weights.astype(x.dtype),
                   preferred_element_type=jnp.float32)
  return out.reshape(b, h, w, c).astype(x.dtype)


def _weighted_taps(x, weights, kernel_size):
  """sum_t weights[..., t] * (x window of tap t), `(B, H, W, heads, group)` float32, as one
  fused chain of multiply-adds."""
  heads, group = check_aggregate_args(x, weights, kernel_size)
  b, h, w, _ = x.shape
  x_pad = _pad_hw(x, kernel_size // 2).reshape(b, h + kernel_size - 1, w + kernel_size - 1,
                                               heads, group)
  out = jnp.zeros((b, h, w, heads, group), jnp.float32)
  for t in range(kernel_size * kernel_size):
    # weights[..., t] is read in place: each pixel's k*k weights are contiguous, and a
    # tap-major copy of them cost more than it saved.
    out = out + (_window(x_pad, t // kernel_size, t % kernel_size, h, w).astype(jnp.float32)
                 * weights[..., t, None].astype(jnp.float32))
  return out


def _shift_forward(x, weights, kernel_size):
  """`(B, H, W, C)`, `(B, H, W, heads, k*k)` -> `(B, H, W, C)` in x.dtype."""
  return _weighted_taps(x, weights, kernel_size).reshape(x.shape).astype(x.dtype)


def _tap_grads(g, x, kernel_size):
  """d out / d weights: `(k*k, B, H, W, heads)` float32, tap t = sum over each head's
  channels of g * (x window of tap t).

  One channel reduction per tap. XLA's CPU reduce over a short minor axis is slow and 49
  unrolled ones fuse badly, so loop over taps and reduce with a mat-vec product
  (measured 0.21 s vs 0.68 s CPU time at (4, 64, 64, 256), k = 7).
  """
  b, h, w, heads, group = g.shape
  r = kernel_size // 2
  x_pad = _pad_hw(x.astype(jnp.float32), r).reshape(b, h + 2 * r, w + 2 * r, heads, group)
  ones = jnp.ones((group,), jnp.float32)

  def tap_grad(t, grad_w):
    window = jax.lax.dynamic_slice(x_pad, (0, t // kernel_size, t % kernel_size, 0, 0),
                                   (b, h, w, heads, group))
    dot = jnp.dot((g * window).reshape(-1, group), ones).reshape(b, h, w, heads)
    return jax.lax.dynamic_update_index_in_dim(grad_w, dot, t, 0)

  taps = kernel_size * kernel_size
  return jax.lax.fori_loop(0, taps, tap_grad, jnp.zeros((taps, b, h, w, heads), jnp.float32))


def _input_grad(g, weights, kernel_size):
  """d out / d x, `(B, H, W, heads, group)` float32: the aggregation transposed,

  d x[y', x'] = sum_t w_t[y' + 2r - dy, x' + 2r - dx] * g[y' + 2r - dy, x' + 2r - dx]

  with g and w zero-padded by r. The weights are padded in their own layout (spatial axes
  only, no tap-major copy) and the k*k multiply-adds fuse into one pass, like the forward.
  """
  b, h, w, heads, group = g.shape
  r = kernel_size // 2
  g_pad = _pad_hw(g, r)
  w_pad = _pad_hw(weights, r)
  grad_x = jnp.zeros((b, h, w, heads, group), jnp.float32)
  for t in range(kernel_size * kernel_size):
    sy, sx = 2 * r - t // kernel_size, 2 * r - t % kernel_size
    grad_x = grad_x + (_window(g_pad, sy, sx, h, w)
                       * _window(w_pad, sy, sx, h, w)[..., t, None].astype(jnp.float32))
  return grad_x


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def aggregate_shift(x: jax.Array, weights: jax.Array, kernel_size: int) -> jax.Array:
  """Memory-lean implementation: shift-and-accumulate forward and backward."""
  return _shift_forward(x, weights, kernel_size)


def _shift_fwd(x, weights, kernel_size):
  return _shift_forward(x, weights, kernel_size), (x, weights)


def _aggregate_vjp(grad_out, x, weights, kernel_size):
  """The aggregation's VJP by tap loops (no patches, no scatter): d x `(B, H, W, C)` in
  x.dtype and d weights `(B, H, W, heads, k*k)` float32."""
  b, h, w, c = x.shape
  heads = weights.shape[3]
  g = grad_out.astype(jnp.float32).reshape(b, h, w, heads, c // heads)
  grad_x = _input_grad(g, weights, kernel_size)
  grad_w = jnp.moveaxis(_tap_grads(g, x, kernel_size), 0, -1)
  return grad_x.reshape(b, h, w, c).astype(x.dtype), grad_w


def _shift_bwd(kernel_size, residuals, grad_out):
  x, weights = residuals
  grad_x, grad_w = _aggregate_vjp(grad_out, x, weights, kernel_size)
  return grad_x, grad_w.astype(weights.dtype)


aggregate_shift.defvjp(_shift_fwd, _shift_bwd)


def _tap_exp(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """exp(logits - max) and its sum over the taps (keepdims), float32: the softmax's parts."""
  logits = logits.astype(jnp.float32)
  e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  return e, jnp.sum(e, axis=-1, keepdims=True)


def _softmax_shift_forward(x, logits, kernel_size):
  """The aggregation with softmax(logits) weights, `(out, probabilities)`: the exponentials
  are aggregated and divided by their sum once per output, (sum_t e_t x_t) / sum_t e_t,
  rather than once per tap weight; the float32 probabilities are for the backward."""
  e, total = _tap_exp(logits)
  out = _weighted_taps(x, e, kernel_size) / total
  return out.reshape(x.shape).astype(x.dtype), e / total


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def softmax_aggregate_shift(x: jax.Array, logits: jax.Array, kernel_size: int) -> jax.Array:
  """The aggregation of x with softmax(float32 logits) weights, forward and VJP by tap loops.

  The softmax backward is folded into the tap gradients: with p the probabilities and
  dp_t = sum_c g * x_t, d logits_t = p_t * (dp_t - sum_t' p_t' dp_t'); only x and the
  float32 probabilities are kept for the backward.
  """
  return _softmax_shift_forward(x, logits, kernel_size)[0]


def _softmax_shift_fwd(x, logits, kernel_size):
  out, probs = _softmax_shift_forward(x, logits, kernel_size)
  return out, (x, probs)


def _softmax_shift_bwd(kernel_size, residuals, grad_out):
  x, probs = residuals
  grad_x, dp = _aggregate_vjp(grad_out, x, probs.astype(x.dtype), kernel_size)
  return grad_x, probs * (dp - jnp.sum(probs * dp, axis=-1, keepdims=True))


softmax_aggregate_shift.defvjp(_softmax_shift_fwd, _softmax_shift_bwd)


def pixel_adaptive_aggregate(x: jax.Array, weights: jax.Array, kernel_size: int,
                             impl: str = 'auto') -> jax.Array:
  """Applies a per-pixel, per-head k x k kernel to `x`.

  Args:
    x: `(B, H, W, C)` features.
    weights: `(B, H, W, heads, k*k)` kernel of every pixel and head; tap `t = dy*k + dx`
      (row-major); head j acts on channels `[j*C/heads, (j+1)*C/heads)`. The SGDC block
      passes softmax-normalised weights; any weights work.
    kernel_size: k, odd.
    impl: `'unfold'`, `'shift'`, or `'auto'` (= `'shift'`). `'pallas'` fuses the softmax
      and takes logits: use `softmax_aggregate`.

  Returns:
    `(B, H, W, C)` in `x.dtype`; accumulation is float32.

  Raises:
    ValueError: on inconsistent shapes, an even kernel size or an unknown `impl`.
  """
  if impl == 'auto':
    impl = 'shift'
  if impl == 'unfold':
    return aggregate_unfold(x, weights, kernel_size)
  if impl == 'shift':
    check_aggregate_args(x, weights, kernel_size)
    return aggregate_shift(x, weights, kernel_size)
  if impl == 'pallas':
    raise ValueError("impl='pallas' applies the softmax inside the kernel: call "
                     'softmax_aggregate(x, logits, ...) with logits, not weights')
  raise ValueError(f"impl must be one of {IMPLEMENTATIONS + ('auto',)}, got {impl!r}")


def resolve_impl(impl: str) -> str:
  """The implementation `'auto'` stands for on the default backend; others unchanged."""
  if impl != 'auto':
    return impl
  return 'pallas' if jax.default_backend() in PALLAS_BACKENDS else 'shift'


def softmax_aggregate(x: jax.Array, logits: jax.Array, kernel_size: int,
                      impl: str = 'auto') -> jax.Array:
  """Softmax over the k*k taps, then the pixel-adaptive aggregation.

  Args:
    x: `(B, H, W, C)` features.
    logits: `(B, H, W, heads, k*k)` kernel logits; the softmax over the last axis is float32.
    kernel_size: k, odd.
    impl: `'pallas'` (fused kernel; interpret mode on CPU, slow, for tests), `'unfold'` (XLA
      softmax, then `pixel_adaptive_aggregate` on the probabilities cast to `x.dtype`),
      `'shift'` (`softmax_aggregate_shift`: the same values up to rounding, float32
      probabilities, one VJP for both steps), or `'auto'` (see `resolve_impl`).

  Returns:
    `(B, H, W, C)` in `x.dtype`.

  Raises:
    ValueError: on inconsistent shapes, an even kernel size, an unknown `impl`, or
      `'pallas'` on a TPU backend (no Mosaic TPU variant; use `'shift'`).
  """
  impl = resolve_impl(impl)
  if impl == 'pallas':
    if jax.default_backend() == 'tpu':
      raise ValueError("impl='pallas' has no TPU kernel (its Pallas kernel is Triton); use "
                       "impl='shift' or 'auto' on TPU")
    return softmax_aggregate_pallas(x, logits, kernel_size)
  if impl == 'shift':
    check_aggregate_args(x, logits, kernel_size, 'logits')
    return softmax_aggregate_shift(x, logits.astype(jnp.float32), kernel_size)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return pixel_adaptive_aggregate(x, probs.astype(x.dtype), kernel_size, impl)
