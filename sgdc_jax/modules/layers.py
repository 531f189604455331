"""Small building blocks shared by the modules, with PyTorch's numerics."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgdc_jax.ops.channel_sums import broadcast_channels

# PyTorch BatchNorm2d: eps 1e-5, momentum 0.1 (running = 0.9 * running + 0.1 * batch),
# which is flax's momentum 0.9.
BN_MOMENTUM = 0.9
BN_EPS = 1e-5


def check_rank4(name: str, value: jax.Array) -> None:
  """Raises a ValueError naming `name` unless `value` is 4-D (NHWC)."""
  if value.ndim != 4:
    raise ValueError(f'{name} must be a 4-D NHWC array (B, H, W, C), got shape {value.shape}')


def batch_norm(train: bool, name: str, dtype: Any = jnp.float32) -> nn.BatchNorm:
  """PyTorch-equivalent BatchNorm2d (statistics and scale/bias kept in float32): the one
  BatchNorm factory of the package (SGE, the ResNet encoder, SGDCNet's decoder and head)."""
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                      dtype=dtype, param_dtype=jnp.float32, name=name)


class ConvBN(nn.Module):
  """Conv (no bias, 'same' zero padding) -> BatchNorm -> optional ReLU, `(B, H, W, C)`."""
  features: int
  kernel_size: int = 1
  relu: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    k = self.kernel_size
    x = nn.Conv(self.features, (k, k), padding=[(k // 2, k // 2)] * 2, use_bias=False,
                dtype=self.dtype, name='conv')(x)
    x = batch_norm(train, 'bn', self.dtype)(x)
    return nn.relu(x) if self.relu else x


class DropPath(nn.Module):
  """Stochastic depth per sample (timm's DropPath): drops whole residual branches.

  Kept samples are scaled by 1 / keep_prob. Uses the 'dropout' rng stream.
  """
  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class DepthwiseConv(nn.Module):
  """Depthwise k x k convolution with bias, zero padding k // 2, `(B, H, W, C)`.

  Same parameters (kernel `(k, k, 1, C)`, bias `(C,)`) and initialisers as
  `nn.Conv(C, (k, k), feature_group_count=C)`, computed as k*k shifted multiply-adds:
  XLA's grouped convolution on CPU was 20x slower forward and 3x slower forward+backward
  at (4, 64, 64, 256) (benchmarks/bench_sgdc.py); on accelerators both forms are cheap.
  """
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, (height, width, channels) = self.kernel_size, x.shape[1:]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, 1, channels))
    bias = self.param('bias', nn.initializers.zeros_init(), (channels,))
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    r = k // 2
    padded = jnp.pad(x.astype(self.dtype), ((0, 0), (r, r), (r, r), (0, 0)))
    # Parameters broadcast through broadcast_channels: their gradients are pixel sums, run
    # as products on CPU (sgdc_jax/ops/channel_sums.py).
    out = broadcast_channels(bias, x.shape)
    for dy in range(k):
      for dx in range(k):
        tap = broadcast_channels(kernel[dy, dx, 0], x.shape)
        out = out + padded[:, dy:dy + height, dx:dx + width] * tap
    return out
