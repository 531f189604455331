"""`SGDCNet`: ResNet encoder -> FPN decoder -> SGE -> SGDC blocks -> head (docs/design.md section 5).

  images (B,H,W,3) -> ResNet -> c1..c4 (strides 4..32)
  FPN: lateral conv1x1 (bias) to D on every c_i, top-down bilinear x2 + add, then one
       conv3x3-BN-ReLU smoothing of the stride-4 sum -> x (B,H/4,W/4,D)
  SGE(c4, c1) -> edge_logits (B,H/4,W/4,1), guidance (B,H/4,W/4,G)   [not for 'none']
  n_blocks x SGDC(x, guidance)  (guidance=None for 'pooled'/'none': SGDC builds its own context;
       drop-path rates rise linearly from 0 to `drop_path` over the blocks)
  head: conv3x3-BN-ReLU (D) at stride 4
  output_stride 2 / 1 only (UpsamplePath, C = max(16, D/4) channels, S = 16):
       conv1x1 D -> C, bilinear x2 (upsample_bilinear), + conv1x1 of the ResNet stem c0 (stride 2, before the
       max-pool), conv3x3-BN-ReLU (C)                                     -> stride 2
       [1] conv1x1 C -> S, bilinear x2, + conv3x3-BN-ReLU(images) (S), conv3x3-BN-ReLU (S)
  conv1x1 (bias) -> num_classes; bilinear resize to (H, W) (none for output_stride 1).

Every choice is a field of `default_model_config()`; `build_model` validates the fields.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sgdc_jax.checks import is_int, is_number
from sgdc_jax.models.resnet import ResNet
from sgdc_jax.modules import KERNEL_SOURCES, SGDC, SGE
from sgdc_jax.modules.layers import batch_norm
from sgdc_jax.ops import IMPLEMENTATIONS
from sgdc_jax.ops.image import resize_bilinear

ENCODERS = {'resnet18': 18, 'resnet34': 34, 'resnet50': 50, 'resnet101': 101}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
STRIDE = 32
OUTPUT_STRIDES = (4, 2, 1)
IMAGE_STEM_CHANNELS = 16  # S, channels of the output-stride-1 image stem and merge


def default_model_config() -> ml_collections.ConfigDict:
  """The default network: ResNet-50, D=256, two structure-guided SGDC blocks, binary output."""
  return ml_collections.ConfigDict(dict(
      encoder='resnet50',          # resnet18 | resnet34 | resnet50 | resnet101
      pretrained='',               # local torchvision/timm ResNet file; '' = random init
      decoder_channels=256,        # D, channels of the FPN output and of the SGDC blocks
      n_blocks=2,                  # SGDC blocks on the stride-4 map
      kernel_source='structure',   # structure | pooled | none (docs/design.md section 4)
      num_classes=1,               # 1 = binary (sigmoid), >1 = softmax
      guide_channels=16,
      num_heads=4,
      kernel_size=7,
      mlp_ratio=4.0,
      drop_path=0.0,               # max stochastic-depth rate, linear over the blocks
      layer_scale_init=1e-6,
      sge_bottleneck=256,
      sge_mid=256,
      pool_size=7,                 # S of the 'pooled' baseline (S x S average-pooled regions)
      impl='auto',                 # pixel-adaptive aggregation: auto | shift | unfold | pallas
      dtype='float32',             # compute dtype: float32 | bfloat16 (params stay float32)
      output_stride=4,             # stride of the logits before the resize to (H, W): 4 | 2 | 1
  ))


def _conv(features: int, kernel: int, name: str, dtype: Any, use_bias: bool) -> nn.Conv:
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                 use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32, name=name)


class FPNDecoder(nn.Module):
  """Top-down feature pyramid merged down to the finest input level.

  Attributes:
    channels: D, output channels.
    dtype: compute dtype.
  """
  channels: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool) -> jax.Array:
    """features: (c1, ..., cn) finest first, each (B, Hi, Wi, Ci) -> (B, H1, W1, D)."""
    laterals = [_conv(self.channels, 1, f'lateral{i + 1}', self.dtype, True)(c)
                for i, c in enumerate(features)]
    x = laterals[-1]
    for lateral in reversed(laterals[:-1]):
      x = lateral + resize_bilinear(x, lateral.shape[1:3]).astype(lateral.dtype)
    x = _conv(self.channels, 3, 'smooth_conv', self.dtype, False)(x)
    return nn.relu(batch_norm(train, 'smooth_bn', self.dtype)(x))


def upsample_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """`resize_bilinear(x, size)` for `(B, h, w, C)`; an exact x2 upsampling is done as a 2-tap
  stencil per axis (same values: half-pixel centres, edge clamping), O(output) work instead of
  `jax.image.resize`'s dense (out x in) interpolation matrices, which at 576x576 cost more than
  the convolutions of the upsampling path."""
  if tuple(size) != (2 * x.shape[1], 2 * x.shape[2]):
    return resize_bilinear(x, size)
  for axis in (1, 2):
    n = x.shape[axis]
    prev = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis),
                            jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
    nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis),
                           jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis=axis)
    even, odd = 0.25 * prev + 0.75 * x, 0.75 * x + 0.25 * nxt  # output rows 2i, 2i + 1
    shape = list(x.shape)
    shape[axis] = 2 * n
    x = jnp.stack([even, odd], axis=axis + 1).reshape(shape)
  return x


def upsample_channels(decoder_channels: int) -> int:
  """C, the channels of the stride-2 stage of `UpsamplePath`: max(16, D // 4)."""
  return max(16, decoder_channels // 4)


class UpsamplePath(nn.Module):
  """Light path from the stride-4 head features to stride 2 or 1 (docs/design.md section 5).

  The SGDC blocks stay at stride 4; this path only brings back the detail of the encoder's
  stride-2 stem and, for stride 1, of the image itself. Channels stay few (C, S) because the
  maps are 4x / 16x larger than the stride-4 one. Convs before a BN have no bias.

  Attributes:
    channels: C, channels of the stride-2 stage.
    output_stride: 2 or 1.
    dtype: compute dtype.
  """
  channels: int
  output_stride: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, stem: jax.Array, images: jax.Array,
               train: bool) -> jax.Array:
    """x `(B, H/4, W/4, D)`, stem `(B, H/2, W/2, 64)`, images `(B, H, W, 3)` ->
    `(B, H/2, W/2, C)` (output_stride 2) or `(B, H, W, S)` (output_stride 1)."""
    y = _conv(self.channels, 1, 'reduce2', self.dtype, False)(x)
    lateral = _conv(self.channels, 1, 'lateral2', self.dtype, False)(stem)
    y = lateral + upsample_bilinear(y, lateral.shape[1:3]).astype(lateral.dtype)
    y = _conv(self.channels, 3, 'conv2', self.dtype, False)(y)
    y = nn.relu(batch_norm(train, 'bn2', self.dtype)(y))
    if self.output_stride == 1:
      y = _conv(IMAGE_STEM_CHANNELS, 1, 'reduce1', self.dtype, False)(y)
      s = _conv(IMAGE_STEM_CHANNELS, 3, 'image_conv', self.dtype, False)(images)
      s = nn.relu(batch_norm(train, 'image_bn', self.dtype)(s))
      y = s + upsample_bilinear(y, s.shape[1:3]).astype(s.dtype)
      y = _conv(IMAGE_STEM_CHANNELS, 3, 'conv1', self.dtype, False)(y)
      y = nn.relu(batch_norm(train, 'bn1', self.dtype)(y))
    return y


class SGDCNet(nn.Module):
  """Segmentation network of docs/design.md section 5; see `default_model_config` for the fields.

  `dtype` may be 'float32'/'bfloat16' or a jnp dtype; it is the compute dtype, parameters and
  BatchNorm statistics are float32. Prefer `build_model(config)`, which validates the fields.

  kernel_source: 'structure' feeds SGE's guidance to the SGDC blocks; 'pooled' keeps SGE and
  its edge output (so the edge loss still trains the encoder) but the blocks build their
  context by `pool_size` x `pool_size` average pooling of their input (SGE's guidance head
  then gets no gradient); 'none' drops SGE and 'edge_logits' entirely. Variables:
  'params'/'batch_stats' subtrees 'encoder', 'decoder', 'sge', 'sgdc{i}', 'head_*', and
  'upsample' for output_stride 2 / 1 (whose 'head_out' then reads C / S channels, not D).
  """
  encoder: str = 'resnet50'
  decoder_channels: int = 256
  n_blocks: int = 2
  kernel_source: str = 'structure'
  num_classes: int = 1
  guide_channels: int = 16
  num_heads: int = 4
  kernel_size: int = 7
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  layer_scale_init: float = 1e-6
  sge_bottleneck: int = 256
  sge_mid: int = 256
  pool_size: int = 7
  impl: str = 'auto'
  dtype: Any = 'float32'
  output_stride: int = 4

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Segments a batch.

    Args:
      images: `(B, H, W, 3)` float (normalised); H and W divisible by 32.
      train: BatchNorm batch statistics + 'batch_stats' update, and drop path (needs rng
        'dropout' when `drop_path > 0`).

    Returns:
      `{'logits': (B, H, W, num_classes) float32, 'edge_logits': (B, H, W, 1) float32}`;
      'edge_logits' is absent when `kernel_source == 'none'`.

    Raises:
      ValueError: input not `(B, H, W, 3)`, H or W not divisible by 32, unknown encoder,
        kernel_source, dtype or output_stride.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'SGDCNet: images must have shape (B, H, W, 3), got {images.shape}')
    height, width = images.shape[1:3]
    if height % STRIDE or width % STRIDE:
      raise ValueError(f'SGDCNet: image height and width must be divisible by {STRIDE}, got '
                       f'{height}x{width} (resize or pad the input)')
    if self.encoder not in ENCODERS:
      raise ValueError(f'SGDCNet: encoder must be one of {sorted(ENCODERS)}, got {self.encoder!r}')
    if self.kernel_source not in KERNEL_SOURCES:
      raise ValueError(f'SGDCNet: kernel_source must be one of {KERNEL_SOURCES}, '
                       f'got {self.kernel_source!r}')
    if not is_int(self.output_stride) or self.output_stride not in OUTPUT_STRIDES:
      raise ValueError(f'SGDCNet: output_stride must be one of {OUTPUT_STRIDES}, '
                       f'got {self.output_stride!r}')
    dtype = _resolve_dtype(self.dtype)

    fine = self.output_stride < 4
    feats = ResNet(ENCODERS[self.encoder], dtype, name='encoder')(
        images.astype(dtype), train, with_stem=fine)
    if fine:
      stem, feats = feats[0], feats[1:]
    x = FPNDecoder(self.decoder_channels, dtype, name='decoder')(feats, train)

    outputs = {}
    guidance = None
    if self.kernel_source != 'none':
      sge = SGE(bottleneck=self.sge_bottleneck, mid=self.sge_mid,
                guide_channels=self.guide_channels, dtype=dtype, name='sge')
      edge_logits, sge_guidance = sge(feats[3], feats[0], train=train)
      outputs['edge_logits'] = resize_bilinear(
          edge_logits.astype(jnp.float32), (height, width))
      if self.kernel_source == 'structure':
        guidance = sge_guidance

    rates = np.linspace(0.0, self.drop_path, self.n_blocks) if self.n_blocks > 1 else [
        self.drop_path] * self.n_blocks
    for i in range(self.n_blocks):
      block = SGDC(dim=self.decoder_channels, guide_channels=self.guide_channels,
                   num_heads=self.num_heads, kernel_size=self.kernel_size,
                   mlp_ratio=self.mlp_ratio, drop_path=float(rates[i]),
                   layer_scale_init=self.layer_scale_init, kernel_source=self.kernel_source,
                   pool_size=self.pool_size, impl=self.impl, dtype=dtype, name=f'sgdc{i}')
      x = block(x, guidance, deterministic=not train)

    x = _conv(self.decoder_channels, 3, 'head_conv', dtype, False)(x)
    x = nn.relu(batch_norm(train, 'head_bn', dtype)(x))
    if fine:
      x = UpsamplePath(upsample_channels(self.decoder_channels), self.output_stride, dtype,
                       name='upsample')(x, stem, images.astype(dtype), train)
    logits = _conv(self.num_classes, 1, 'head_out', dtype, True)(x)
    resize = upsample_bilinear if fine else resize_bilinear  # stride 4: as before
    outputs['logits'] = resize(logits.astype(jnp.float32), (height, width))
    return outputs


def _resolve_dtype(dtype: Any) -> Any:
  if isinstance(dtype, str):
    if dtype not in DTYPES:
      raise ValueError(f'SGDCNet: dtype must be one of {sorted(DTYPES)}, got {dtype!r}')
    return DTYPES[dtype]
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(f'SGDCNet: dtype must be float32 or bfloat16, got {dtype!r}')
  return dtype


def _check(ok: bool, field: str, value: Any, expected: str) -> None:
  if not ok:
    raise ValueError(f'model config field {field!r}: expected {expected}, got {value!r}')


def validate_model_config(cfg: ml_collections.ConfigDict) -> None:
  """Checks every field of a complete model config (see `default_model_config`).

  Raises:
    ValueError: naming the first offending field, or listing unknown/missing fields.
  """
  known = set(default_model_config().keys())
  given = set(cfg.keys())
  if given - known:
    raise ValueError(f'model config: unknown fields {sorted(given - known)} '
                     f'(known: {sorted(known)})')
  if known - given:
    raise ValueError(f'model config: missing fields {sorted(known - given)}')
  _check(cfg.encoder in ENCODERS, 'encoder', cfg.encoder, f'one of {sorted(ENCODERS)}')
  _check(isinstance(cfg.pretrained, str), 'pretrained', cfg.pretrained, 'a path string')
  _check(cfg.kernel_source in KERNEL_SOURCES, 'kernel_source', cfg.kernel_source,
         f'one of {KERNEL_SOURCES}')
  _check(cfg.dtype in DTYPES, 'dtype', cfg.dtype, f'one of {sorted(DTYPES)}')
  _check(cfg.impl in IMPLEMENTATIONS + ('auto',), 'impl', cfg.impl,
         f"one of {IMPLEMENTATIONS + ('auto',)}")
  for field in ('decoder_channels', 'num_classes', 'guide_channels', 'num_heads',
                'sge_bottleneck', 'sge_mid', 'pool_size'):
    value = cfg[field]
    _check(is_int(value) and value >= 1, field, value, 'a positive integer')
  _check(is_int(cfg.n_blocks) and cfg.n_blocks >= 0, 'n_blocks', cfg.n_blocks,
         'an integer >= 0')
  _check(is_int(cfg.output_stride) and cfg.output_stride in OUTPUT_STRIDES, 'output_stride',
         cfg.output_stride, f'one of {OUTPUT_STRIDES}')
  _check(cfg.decoder_channels % cfg.num_heads == 0, 'decoder_channels', cfg.decoder_channels,
         f'a multiple of num_heads={cfg.num_heads}')
  _check(is_int(cfg.kernel_size) and cfg.kernel_size >= 1 and cfg.kernel_size % 2 == 1,
         'kernel_size', cfg.kernel_size, 'an odd positive integer')
  _check(is_number(cfg.mlp_ratio) and cfg.mlp_ratio > 0, 'mlp_ratio', cfg.mlp_ratio,
         'a number > 0')
  _check(is_number(cfg.drop_path) and 0.0 <= cfg.drop_path < 1.0, 'drop_path', cfg.drop_path,
         'a number in [0, 1)')
  _check(is_number(cfg.layer_scale_init) and cfg.layer_scale_init >= 0, 'layer_scale_init',
         cfg.layer_scale_init, 'a number >= 0')


def build_model(model_config: ml_collections.ConfigDict) -> SGDCNet:
  """Validates `model_config` and returns the `SGDCNet` it describes.

  Fields absent from `model_config` take their `default_model_config()` values; unknown
  fields are an error. `pretrained` is not read here: load it into the initialised variables
  with `sgdc_jax.models.load_pretrained_encoder(variables, model_config.pretrained)`.

  Raises:
    ValueError: see `validate_model_config`.
  """
  cfg = ml_collections.ConfigDict({**default_model_config().to_dict(),
                                   **dict(model_config.items())})
  validate_model_config(cfg)
  fields = {k: cfg[k] for k in cfg.keys() if k != 'pretrained'}
  return SGDCNet(**fields)
