"""The data section of the configuration: its defaults, the network input size and the
training-patch settings (`train_mode`, `crop_size`, `scale_jitter`) with their checks."""
from __future__ import annotations

import ml_collections
import numpy as np

from sgdc_jax.checks import is_int, is_number
from sgdc_jax.data import transforms as T
from sgdc_jax.data.sources import SYNTHETIC

# How training examples become network inputs (`data.train_mode`).
TRAIN_MODES = ('resize', 'patch')
STRIDE = 32  # the encoder's output stride: crop sides must be multiples of it


def default_data_config() -> ml_collections.ConfigDict:
  """Default data configuration (synthetic lesions at 256x256, standard augmentation).

  Fields:
    name: 'synthetic_lesions' or a TFDS name registered by `sgdc_jax.data.builders`
      ('isic2016', 'isic2018', 'ph2', 'conic/binary', 'conic/semantic').
    data_dir: TFDS data directory ('' = the TFDS default, ~/tensorflow_datasets).
    image_size: side S of the square network input.
    train_mode: 'resize' (random resized crop of each example to `image_size`) or 'patch'
      (random `crop_size` windows at the stored resolution; `augment.scale_*`/`ratio_*`
      unused; see `preprocess.TrainTransform`).
    crop_size: patch side, an int or `(h, w)`, multiples of 32 (train_mode='patch' only).
    scale_jitter: `(min, max)`: patch mode resizes each example by a factor drawn uniformly
      from this range before cropping; `(1, 1)` = stored resolution only.
    train_split / eval_split / test_split: split names.
    boundary_width: band width of the edge target (see `sgdc_jax.ops.boundary`).
    num_workers: Grain worker processes; -1 = auto (see `resolve_workers`), 0 = in the
      calling process, n > 0 = exactly n.
    worker_buffer_size: batches buffered per worker process.
    read_threads, prefetch_batches: threads per process (per worker) computing batches
      (-1 = auto, see `resolve_workers`), and batches buffered per process.
    jpeg_draft: decode JPEG-stored images at 1/2, 1/4 or 1/8 size (PIL draft mode) when the
      resize shrinks them at least that much; False = always decode at full size.
    augment: training augmentation (enabled, flips, rot90, scale-crop range, colour jitter).
    mean / std: per-channel normalisation of [0, 1] RGB (ImageNet by default).
    synthetic: sizes, raw resolution and seed of the synthetic splits.
  """
  config = ml_collections.ConfigDict()
  config.name = SYNTHETIC
  config.data_dir = ''
  config.image_size = 256
  config.train_mode = 'resize'
  # An int or (h, w): the field takes either (a plain int field refuses a tuple).
  config.crop_size = ml_collections.FieldReference(256, field_type=object)
  config.scale_jitter = (1.0, 1.0)
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.test_split = 'test'
  config.boundary_width = 2
  config.num_workers = -1       # -1 = auto, see resolve_workers
  config.worker_buffer_size = 2
  config.read_threads = -1      # -1 = auto, see resolve_workers
  config.prefetch_batches = 4
  # DCT-scaled JPEG decoding: several times cheaper for large images resized to image_size.
  config.jpeg_draft = True
  config.augment = ml_collections.ConfigDict(dict(
      enabled=True, hflip=True, vflip=True, rot90=True,
      scale_min=0.5, scale_max=1.0, ratio_min=3 / 4, ratio_max=4 / 3,
      brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
  config.mean = T.IMAGENET_MEAN
  config.std = T.IMAGENET_STD
  config.synthetic = ml_collections.ConfigDict(dict(
      train_size=2000, validation_size=200, test_size=200, height=240, width=320, seed=0))
  return config


def image_size(data_config) -> tuple[int, int]:
  """`(H, W)` of the network input from `data.image_size` (one int S means `(S, S)`).

  Raises:
    ValueError: not a positive int or a pair of them.
  """
  size = data_config.image_size
  size = (int(size), int(size)) if np.ndim(size) == 0 else tuple(int(v) for v in size)
  if len(size) != 2 or min(size) < 1:
    raise ValueError('data.image_size must be a positive int or (H, W), '
                     f'got {data_config.image_size!r}')
  return size


# What each training-patch field must be (the text completes "data.<field>: expected ...").
EXPECTED = {
    'train_mode': f'one of {TRAIN_MODES}',
    'crop_size': f'a multiple of {STRIDE} (encoder stride) or a pair (h, w) of them',
    'scale_jitter': '(min, max) scale factors with 0 < min <= max ((1, 1) = off)',
}


def _parse_train_mode(value) -> str:
  if not isinstance(value, str) or value not in TRAIN_MODES:
    raise ValueError
  return value


def _parse_crop_size(value) -> tuple[int, int]:
  size = (value, value) if np.ndim(value) == 0 else value
  if isinstance(size, (str, bytes)) or np.ndim(size) != 1 or len(size) != 2:
    raise ValueError
  if not all(is_int(v) and v >= STRIDE and v % STRIDE == 0 for v in size):
    raise ValueError
  return int(size[0]), int(size[1])


def _parse_scale_jitter(value) -> tuple[float, float]:
  if isinstance(value, (str, bytes)) or np.ndim(value) != 1 or len(value) != 2:
    raise ValueError
  low, high = value
  if not (is_number(low) and is_number(high) and 0 < low <= high and np.isfinite(high)):
    raise ValueError
  return float(low), float(high)


_PARSERS = {'train_mode': _parse_train_mode, 'crop_size': _parse_crop_size,
            'scale_jitter': _parse_scale_jitter}
_DEFAULTS = {'train_mode': 'resize', 'crop_size': 256, 'scale_jitter': (1.0, 1.0)}


def _field(data_config, field: str):
  """`data.<field>` parsed (its default where the config has no such field), or ValueError
  naming it."""
  value = data_config.get(field, _DEFAULTS[field])
  try:
    return _PARSERS[field](value)
  except (ValueError, TypeError):
    raise ValueError(f'data.{field}: expected {EXPECTED[field]}, got {value!r}') from None


def train_mode(data_config) -> str:
  """`data.train_mode`: 'resize' or 'patch'. Raises ValueError naming the field."""
  return _field(data_config, 'train_mode')


def crop_size(data_config) -> tuple[int, int]:
  """`(h, w)` of the training patches (`data.crop_size`; one int S means `(S, S)`).

  Raises:
    ValueError: naming `data.crop_size`: not a positive multiple of 32 or a pair of them.
  """
  return _field(data_config, 'crop_size')


def scale_jitter(data_config) -> tuple[float, float]:
  """`(min, max)` of patch training's random scale factor (`data.scale_jitter`).

  Raises:
    ValueError: naming `data.scale_jitter`: not a pair of numbers with 0 < min <= max.
  """
  return _field(data_config, 'scale_jitter')


def validate_train_fields(data_config) -> None:
  """Checks `train_mode`, `crop_size` and `scale_jitter`; ValueError naming the first bad one."""
  train_mode(data_config)
  crop_size(data_config)
  scale_jitter(data_config)


def rule(field: str):
  """`(predicate, expected)` of `data.<field>` for `sgdc_jax.run.config.RULES`."""
  def predicate(value) -> bool:
    try:
      _PARSERS[field](value)
    except (ValueError, TypeError):
      return False
    return True
  return predicate, EXPECTED[field]
