"""ResNet-18/34/50/101 encoders (torchvision v1.5 architecture) in flax.linen, NHWC.

The module and parameter names mirror torchvision's state_dict so that conversion is a rename
plus a transpose (see `resnet_convert.py`):

  torchvision                      flax (params / batch_stats)
  conv1.weight                     conv1/kernel
  bn1.{weight,bias}                bn1/{scale,bias}
  bn1.{running_mean,running_var}   bn1/{mean,var}            (batch_stats)
  layerX.Y.convZ.weight            layerX_Y/convZ/kernel
  layerX.Y.bnZ.*                   layerX_Y/bnZ/*
  layerX.Y.downsample.0.weight     layerX_Y/downsample_0/kernel
  layerX.Y.downsample.1.*          layerX_Y/downsample_1/*

Architecture: stem conv7x7/2 (pad 3) + BN + ReLU + maxpool 3x3/2 (pad 1), then four stages of
BasicBlocks (18/34) or Bottlenecks (50/101); the stride of a stage's first block sits on the 3x3
conv (torchvision "v1.5"). BatchNorm: momentum 0.9 (torch's 0.1), eps 1e-5. No conv has a bias.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgdc_jax.modules.layers import batch_norm

# depth -> (block kind, blocks per stage)
RESNET_SPECS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = {'basic': 1, 'bottleneck': 4}

# torchvision initialises convs with kaiming_normal_(mode='fan_out', nonlinearity='relu').
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def stage_channels(depth: int) -> tuple[int, int, int, int]:
  """Channels of the features c1..c4 of a ResNet of this depth (e.g. 50 -> (256, ..., 2048)).

  Raises:
    ValueError: unsupported depth.
  """
  if depth not in RESNET_SPECS:
    raise ValueError(f'ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth!r}')
  kind, _ = RESNET_SPECS[depth]
  return tuple(w * EXPANSION[kind] for w in STAGE_WIDTHS)


def _conv(features: int, kernel: int, stride: int, name: str, dtype: Any) -> nn.Conv:
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=_conv_init, name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convs with an identity (or 1x1-conv + BN) shortcut; output `features` channels.

  Attributes:
    features: output channels.
    stride: stride of the first 3x3 conv (and of the shortcut).
    downsample: whether the shortcut is conv1x1 + BN (torchvision `downsample`).
    dtype: compute dtype.
  """
  features: int
  stride: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """(B, H, W, Cin) -> (B, H/stride, W/stride, features)."""
    y = _conv(self.features, 3, self.stride, 'conv1', self.dtype)(x)
    y = nn.relu(batch_norm(train, 'bn1', self.dtype)(y))
    y = _conv(self.features, 3, 1, 'conv2', self.dtype)(y)
    y = batch_norm(train, 'bn2', self.dtype)(y)
    if self.downsample:
      x = _conv(self.features, 1, self.stride, 'downsample_0', self.dtype)(x)
      x = batch_norm(train, 'downsample_1', self.dtype)(x)
    return nn.relu(y + x)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided) -> 1x1 (x4 channels) with an identity or conv1x1 + BN shortcut.

  Attributes:
    width: channels of the inner 1x1/3x3 convs; the output has `4 * width` channels.
    stride: stride of the 3x3 conv (torchvision v1.5) and of the shortcut.
    downsample: whether the shortcut is conv1x1 + BN.
    dtype: compute dtype.
  """
  width: int
  stride: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """(B, H, W, Cin) -> (B, H/stride, W/stride, 4 * width)."""
    out = self.width * EXPANSION['bottleneck']
    y = _conv(self.width, 1, 1, 'conv1', self.dtype)(x)
    y = nn.relu(batch_norm(train, 'bn1', self.dtype)(y))
    y = _conv(self.width, 3, self.stride, 'conv2', self.dtype)(y)
    y = nn.relu(batch_norm(train, 'bn2', self.dtype)(y))
    y = _conv(out, 1, 1, 'conv3', self.dtype)(y)
    y = batch_norm(train, 'bn3', self.dtype)(y)
    if self.downsample:
      x = _conv(out, 1, self.stride, 'downsample_0', self.dtype)(x)
      x = batch_norm(train, 'downsample_1', self.dtype)(x)
    return nn.relu(y + x)


class ResNet(nn.Module):
  """torchvision-compatible ResNet encoder without the classifier.

  Attributes:
    depth: 18, 34, 50 or 101.
    dtype: compute dtype (parameters and BatchNorm statistics stay float32).
  """
  depth: int = 50
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, with_stem: bool = False
               ) -> tuple[jax.Array, ...]:
    """Runs the stem and the four stages.

    Args:
      x: images `(B, H, W, 3)`; any float dtype (cast to `dtype`).
      train: BatchNorm uses batch statistics and updates 'batch_stats' when True.
      with_stem: also return `c0`, the stem's conv-BN-ReLU output before the max-pool
        `(B, ceil(H/2), ceil(W/2), 64)` (SGDCNet's output strides 2 and 1 merge it). The
        variables are the same either way.

    Returns:
      `(c1, c2, c3, c4)` in `dtype`, at strides 4, 8, 16, 32 (ceil division for sizes not
      divisible by 32), with `stage_channels(depth)` channels; `(c0, c1, c2, c3, c4)` when
      `with_stem`.

    Raises:
      ValueError: unsupported depth or input not of rank 4.
    """
    if self.depth not in RESNET_SPECS:
      raise ValueError(f'ResNet depth must be one of {sorted(RESNET_SPECS)}, got {self.depth!r}')
    if x.ndim != 4:
      raise ValueError(f'ResNet expects images of shape (B, H, W, C), got {x.shape}')
    kind, blocks = RESNET_SPECS[self.depth]
    x = x.astype(self.dtype)
    x = _conv(64, 7, 2, 'conv1', self.dtype)(x)
    x = nn.relu(batch_norm(train, 'bn1', self.dtype)(x))
    stem = x
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    in_channels = 64
    features = []
    for stage, (n_blocks, width) in enumerate(zip(blocks, STAGE_WIDTHS)):
      out_channels = width * EXPANSION[kind]
      for j in range(n_blocks):
        stride = 2 if (j == 0 and stage > 0) else 1
        downsample = j == 0 and (stride != 1 or in_channels != out_channels)
        name = f'layer{stage + 1}_{j}'
        if kind == 'basic':
          block = BasicBlock(width, stride, downsample, self.dtype, name=name)
        else:
          block = Bottleneck(width, stride, downsample, self.dtype, name=name)
        x = block(x, train)
        in_channels = out_channels
      features.append(x)
    return (stem, *features) if with_stem else tuple(features)
