"""The data section of the configuration: its defaults and the network input size."""
from __future__ import annotations

import ml_collections
import numpy as np

from sgdc_jax.data import transforms as T
from sgdc_jax.data.sources import SYNTHETIC


def default_data_config() -> ml_collections.ConfigDict:
  """Default data configuration (synthetic lesions at 256x256, standard augmentation).

  Fields:
    name: 'synthetic_lesions' or a TFDS name registered by `sgdc_jax.data.builders`
      ('isic2016', 'isic2018', 'ph2', 'conic/binary', 'conic/semantic').
    data_dir: TFDS data directory ('' = the TFDS default, ~/tensorflow_datasets).
    image_size: side S of the square network input.
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
