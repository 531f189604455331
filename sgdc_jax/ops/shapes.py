"""Argument checks shared by the aggregation implementations."""
from __future__ import annotations

import jax


def check_aggregate_args(x: jax.Array, weights: jax.Array, kernel_size: int,
                         name: str = 'weights') -> tuple[int, int]:
  """Checks `x` (B, H, W, C) against per-pixel kernels `weights` (B, H, W, heads, k*k).

  Args:
    x: the features.
    weights: kernel weights or logits; `name` is what error messages call them.
    kernel_size: k, a positive odd integer.
    name: the argument's name in error messages.

  Returns:
    (heads, channels per head).

  Raises:
    ValueError: naming the inconsistent argument and what was expected.
  """
  if x.ndim != 4:
    raise ValueError(f'x must be (B, H, W, C), got shape {x.shape}')
  if weights.ndim != 5 or weights.shape[:3] != x.shape[:3]:
    raise ValueError(f'{name} must be (B, H, W, heads, k*k) matching x (B, H, W, C); got '
                     f'x {x.shape}, {name} {weights.shape}')
  if kernel_size % 2 != 1 or kernel_size < 1:
    raise ValueError(f'kernel_size must be a positive odd integer, got {kernel_size}')
  heads, taps = weights.shape[3:]
  if taps != kernel_size * kernel_size:
    raise ValueError(f'{name} have {taps} taps, expected kernel_size**2 = {kernel_size**2}')
  if x.shape[3] % heads:
    raise ValueError(f'channels ({x.shape[3]}) must be divisible by heads ({heads})')
  return heads, x.shape[3] // heads
