"""Structural Guidance Extractor (SGE), docs/design.md section 2."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgdc_jax.modules.layers import ConvBN, check_rank4
from sgdc_jax.ops.image import resize_bilinear, sobel_magnitude


class BottleneckRefiner(nn.Module):
  """`relu(t + BN(conv1x1(relu(BN(conv3x3(relu(BN(conv1x1(t -> C/r)))))) -> C)))`."""
  reduction_ratio: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t: jax.Array, train: bool = False) -> jax.Array:
    channels = t.shape[-1]
    reduced = channels // self.reduction_ratio
    y = ConvBN(reduced, 1, dtype=self.dtype, name='reduce')(t, train)
    y = ConvBN(reduced, 3, dtype=self.dtype, name='spatial')(y, train)
    y = ConvBN(channels, 1, relu=False, dtype=self.dtype, name='expand')(y, train)
    return nn.relu(t + y)


def sobel_gate(t: jax.Array) -> jax.Array:
  """`sigmoid(|Sobel(sum_c t)|) * t`: emphasises high-frequency structure, `(B, H, W, C)`."""
  return jax.nn.sigmoid(sobel_magnitude(t)).astype(t.dtype) * t


class SGE(nn.Module):
  """Structural Guidance Extractor: an explicitly supervised boundary branch.

  Call as `edge_logits, guidance = SGE().apply(variables, deep, shallow, train=False)`;
  with `train=True` pass `mutable=['batch_stats']` to update BatchNorm statistics.

  Attributes:
    bottleneck: channels of both projected branches.
    mid: channels of the fused map.
    guide_channels: channels G of the guidance output.
    reduction_ratio: bottleneck ratio of the refiners.
    dtype: compute dtype (parameters stay float32).

  Inputs:
    deep: `(B, Hd, Wd, Cd)`, e.g. ResNet stage 4 (stride 32).
    shallow: `(B, Hs, Ws, Cs)`, e.g. ResNet stage 1 (stride 4).

  Returns:
    `edge_logits (B, Hs, Ws, 1)` and `guidance (B, Hs, Ws, G)`, in `dtype`.
  """
  bottleneck: int = 256
  mid: int = 256
  guide_channels: int = 16
  reduction_ratio: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, deep: jax.Array, shallow: jax.Array, train: bool = False):
    check_rank4('deep', deep)
    check_rank4('shallow', shallow)
    if deep.shape[0] != shallow.shape[0]:
      raise ValueError(f'deep and shallow batch sizes differ: {deep.shape} vs {shallow.shape}')
    if self.bottleneck % self.reduction_ratio:
      raise ValueError(f'bottleneck ({self.bottleneck}) must be divisible by reduction_ratio '
                       f'({self.reduction_ratio})')
    d = ConvBN(self.bottleneck, 1, dtype=self.dtype, name='deep_proj')(deep, train)
    s = ConvBN(self.bottleneck, 1, dtype=self.dtype, name='shallow_proj')(shallow, train)
    d = BottleneckRefiner(self.reduction_ratio, self.dtype, name='deep_refiner')(
        sobel_gate(d), train)
    s = BottleneckRefiner(self.reduction_ratio, self.dtype, name='shallow_refiner')(
        sobel_gate(s), train)
    d = resize_bilinear(d, s.shape[1:3])
    f = ConvBN(self.mid, 3, dtype=self.dtype, name='fuse')(jnp.concatenate([d, s], -1), train)
    edge_logits = nn.Conv(1, (1, 1), use_bias=False, dtype=self.dtype, name='edge_head')(f)
    guidance = nn.Conv(self.guide_channels, (1, 1), use_bias=False, dtype=self.dtype,
                       name='guidance_head')(f)
    return edge_logits, guidance
