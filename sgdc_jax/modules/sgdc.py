"""Structurally-Guided Dynamic Convolution block (SGDC), docs/design.md sections 3 and 4."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgdc_jax.modules.channel_layers import LayerNorm, PointwiseConv, gelu
from sgdc_jax.modules.layers import DepthwiseConv, DropPath, check_rank4
from sgdc_jax.ops.aggregate import IMPLEMENTATIONS, softmax_aggregate
from sgdc_jax.ops.channel_sums import broadcast_channels
from sgdc_jax.ops.image import adaptive_avg_pool, resize_bilinear

KERNEL_SOURCES = ('structure', 'pooled', 'none')

# Whether SGDC blocks sow their branch norms (read while a block is traced, not when a jitted
# function runs): off by default, so that `mutable=True` (or `nnx.bridge.ToNNX`) never gains a
# 'diagnostics' collection that grows on every call.
_RECORDING = contextvars.ContextVar('sgdc_recording_diagnostics', default=False)


@contextlib.contextmanager
def recording_diagnostics(enabled: bool = True) -> Iterator[None]:
  """Within this context the SGDC blocks sow per-image squared norms `(B,)` of their input,
  residual branches and mid-point ('input_sq', 'branch1_sq', 'mid_sq', 'branch2_sq') into the
  'diagnostics' collection, when the caller makes it mutable:

      def fn(variables, images):
        with recording_diagnostics():  # inside the traced function: jit caches traces
          _, state = model.apply(variables, images, mutable=['diagnostics'])
        return state['diagnostics']

  The flag is read at trace time, so enter it inside the function that `jax.jit` traces (a
  trace cached without it would not record). Outside it nothing is recorded.
  """
  token = _RECORDING.set(enabled)
  try:
    yield
  finally:
    _RECORDING.reset(token)


class SGDC(nn.Module):
  """Pixel-adaptive dynamic convolution whose gates and kernels come from structure guidance.

  Call as `y = SGDC(dim).apply(variables, x, guidance, deterministic=True)`; with
  `deterministic=False` and `drop_path > 0`, pass `rngs={'dropout': key}`.
  Within `recording_diagnostics()` and with `mutable=['diagnostics']` it also sows its
  branch norms; otherwise it records nothing (even with `mutable=True`).

  Attributes:
    dim: channels C of `x` (checked against the input).
    guide_channels: channels G of `guidance` ('structure' only).
    num_heads: kernel heads; head j owns channels `[j*C/heads, (j+1)*C/heads)`.
    kernel_size: k of the per-pixel k x k kernels (odd).
    mlp_ratio: hidden width of the MLP, `int(C * mlp_ratio)`.
    drop_path: stochastic-depth rate of both residual branches.
    layer_scale_init: initial value of the per-channel layer scales.
    kernel_source: what drives gates and kernels: 'structure' (the SGE guidance),
      'pooled' (the pooling baseline: `upsample(avg_pool(x -> pool_size^2 regions))`) or
      'none' (x alone).
    pool_size: S of the 'pooled' baseline.
    impl: aggregation implementation ('auto', 'shift', 'unfold' or 'pallas', see
      `sgdc_jax.ops.aggregate.softmax_aggregate`; 'pallas' fuses the kernel softmax).
    dtype: compute dtype; parameters stay float32, softmax and accumulation run in float32.

  Inputs:
    x: `(B, H, W, dim)`.
    guidance: `(B, h, w, guide_channels)` at any resolution, or None for 'pooled'/'none'.

  Returns:
    `(B, H, W, dim)` in `dtype`.
  """
  dim: int
  guide_channels: int = 16
  num_heads: int = 4
  kernel_size: int = 7
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  layer_scale_init: float = 1e-6
  kernel_source: str = 'structure'
  pool_size: int = 7
  impl: str = 'auto'
  dtype: Any = jnp.float32

  def _validate(self, x: jax.Array, guidance: Optional[jax.Array]) -> None:
    if self.kernel_source not in KERNEL_SOURCES:
      raise ValueError(f'kernel_source must be one of {KERNEL_SOURCES}, got '
                       f'{self.kernel_source!r}')
    if self.impl not in IMPLEMENTATIONS + ('auto',):
      raise ValueError(f"impl must be one of {IMPLEMENTATIONS + ('auto',)}, got {self.impl!r}")
    if self.dim % self.num_heads:
      raise ValueError(f'dim ({self.dim}) must be divisible by num_heads ({self.num_heads})')
    if self.kernel_size % 2 != 1:
      raise ValueError(f'kernel_size must be odd, got {self.kernel_size}')
    check_rank4('x', x)
    if x.shape[-1] != self.dim:
      raise ValueError(f'x has {x.shape[-1]} channels but the block was built with '
                       f'dim={self.dim}')
    if self.kernel_source == 'structure':
      if guidance is None:
        raise ValueError("kernel_source='structure' needs a guidance map, got None")
      check_rank4('guidance', guidance)
      if guidance.shape[-1] != self.guide_channels:
        raise ValueError(f'guidance has {guidance.shape[-1]} channels, expected '
                         f'guide_channels={self.guide_channels}')
      if guidance.shape[0] != x.shape[0]:
        raise ValueError(f'guidance batch {guidance.shape[0]} != x batch {x.shape[0]}')

  def _context(self, x: jax.Array, guidance: Optional[jax.Array]) -> jax.Array:
    """What is added to x before the kernel-generating projection, `(B, H, W, C)`."""
    size = x.shape[1:3]
    if self.kernel_source == 'structure':
      g = resize_bilinear(guidance.astype(self.dtype), size)
    elif self.kernel_source == 'pooled':
      g = resize_bilinear(adaptive_avg_pool(x, self.pool_size), size)
    else:
      return jnp.zeros((), self.dtype)
    return PointwiseConv(self.dim, self.dtype, name='guidance_proj')(g)

  @nn.compact
  def __call__(self, x: jax.Array, guidance: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    self._validate(x, guidance)
    c, k, heads = self.dim, self.kernel_size, self.num_heads
    x = x.astype(self.dtype)
    gate1, gate2, kernel = PointwiseConv(2 * c + heads * k * k, self.dtype, (c, 2 * c),
                                         name='attn')(x + self._context(x, guidance))

    x1 = DepthwiseConv(3, self.dtype, name='dwconv')(x * jax.nn.sigmoid(gate1))
    xn = LayerNorm(1e-6, self.dtype, name='norm1')(x)
    logits = kernel.reshape(*kernel.shape[:3], heads, k * k)
    x2 = softmax_aggregate(xn, logits, k, self.impl)
    x2 = x2 * jax.nn.sigmoid(gate2)

    scale1 = self.param('layer_scale1', nn.initializers.constant(self.layer_scale_init), (c,))
    scale2 = self.param('layer_scale2', nn.initializers.constant(self.layer_scale_init), (c,))
    drop = DropPath(self.drop_path)
    branch1 = broadcast_channels(scale1.astype(self.dtype), x.shape) * (x1 + x2)
    _sow_sq_norm(self, 'input_sq', x)
    _sow_sq_norm(self, 'branch1_sq', branch1)
    x = x + drop(branch1, deterministic)
    y = LayerNorm(1e-6, self.dtype, name='norm2')(x)
    y = PointwiseConv(int(c * self.mlp_ratio), self.dtype, name='mlp_fc1')(y)
    y = PointwiseConv(c, self.dtype, name='mlp_fc2')(gelu(y))
    branch2 = broadcast_channels(scale2.astype(self.dtype), y.shape) * y
    _sow_sq_norm(self, 'mid_sq', x)
    _sow_sq_norm(self, 'branch2_sq', branch2)
    return x + drop(branch2, deterministic)


def _sow_sq_norm(module: nn.Module, name: str, value: jax.Array) -> None:
  """Records the per-image squared norm `(B,)` of `value` in the 'diagnostics' collection:
  only within `recording_diagnostics()`, when the caller makes that collection mutable, and
  not at `init`, whose variables would otherwise carry it (see `sgdc_jax.analysis.diagnose`)."""
  if (_RECORDING.get() and module.is_mutable_collection('diagnostics')
      and not module.is_initializing()):
    module.sow('diagnostics', name,
               jnp.sum(jnp.square(value.astype(jnp.float32)), axis=(1, 2, 3)))
