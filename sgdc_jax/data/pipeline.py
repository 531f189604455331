"""Grain input pipeline: raw examples -> resized, augmented, normalised, per-process batches.

Training (`create_train_iterator`)::

  MapDataset.source(open_source(...)) -> seed(seed) -> shuffle -> repeat
    -> random_map(crop-resize, flips, 90-degree turns, colour jitter, normalise, boundary)
    -> [process_index::process_count] -> batch(global // process_count, drop_remainder)
    -> to_iter_dataset(read threads) -> mp_prefetch(num_workers)

Every stage before `to_iter_dataset` is index-based, so element `i` of the stream (and its
augmentation, seeded by `(seed, i)`) does not depend on the number of processes or workers;
batch `k` of process `p` holds stream elements `(k * b + j) * P + p`. The iterator's
`get_state()` is a small dict (`{'next_index': k}` without workers) that `set_state()`
restores to the exact next batch; save it with the training checkpoint.

Evaluation (`create_eval_iterator`) pads the split to whole global batches: global batch `k`
holds records `k * B .. k * B + B - 1`, process `p` the `p`-th block of `B / P` of them, rows
past the end of the split have `valid=False` and `index=-1`. Every record is seen exactly
once, in order, by exactly one process; all processes run the same number of batches.
Full-resolution metrics fetch `open_source(config, split)[index]` for the original mask and id.
"""
from __future__ import annotations

import math
import os

import grain
import ml_collections
import numpy as np

from sgdc_jax.boundary import boundary_target
from sgdc_jax.data import transforms as T
from sgdc_jax.data.synthetic import SyntheticLesions

SYNTHETIC = 'synthetic_lesions'
SYNTHETIC_SPLITS = ('train', 'validation', 'test')


def default_data_config() -> ml_collections.ConfigDict:
  """Default data configuration (synthetic lesions at 256x256, standard augmentation).

  Fields:
    name: 'synthetic_lesions' or a TFDS name registered by `sgdc_jax.data.builders`
      ('isic2016', 'isic2018', 'ph2', 'conic/binary', 'conic/semantic').
    data_dir: TFDS data directory ('' = the TFDS default, ~/tensorflow_datasets).
    image_size: side S of the square network input.
    train_split / eval_split / test_split: split names.
    boundary_width: band width of the edge target (see `sgdc_jax.boundary`).
    num_workers: Grain worker processes (0 = in the calling process).
    worker_buffer_size: batches buffered per worker process.
    read_threads, prefetch_batches: threads per process computing batches, and batches
      buffered per process.
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
  config.num_workers = 0
  config.worker_buffer_size = 2
  config.read_threads = 2
  config.prefetch_batches = 4
  config.augment = ml_collections.ConfigDict(dict(
      enabled=True, hflip=True, vflip=True, rot90=True,
      scale_min=0.5, scale_max=1.0, ratio_min=3 / 4, ratio_max=4 / 3,
      brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
  config.mean = T.IMAGENET_MEAN
  config.std = T.IMAGENET_STD
  config.synthetic = ml_collections.ConfigDict(dict(
      train_size=2000, validation_size=200, test_size=200, height=240, width=320, seed=0))
  return config


def synthetic_split_seed(seed: int, split: str) -> int:
  """Seed of a synthetic split: `4 * seed + k`, k = 0/1/2 for train/validation/test.

  Distinct for every (seed, split) pair, so the splits are disjoint example streams.
  """
  if split not in SYNTHETIC_SPLITS:
    raise ValueError(f'{SYNTHETIC}: unknown split {split!r}; splits are {SYNTHETIC_SPLITS}')
  return 4 * int(seed) + SYNTHETIC_SPLITS.index(split)


def _prepare_hint(name: str, data_dir: str) -> str:
  data_dir_arg = f' --data_dir={data_dir}' if data_dir else ''
  return (f'prepare it with: python -m sgdc_jax.data.prepare --dataset={name} '
          f'--manual_dir=DIR{data_dir_arg}')


def _prepared_names(data_dir: str | None) -> list[str]:
  """Names of the data sets prepared in `data_dir` (None: TFDS's default data dir)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  root = os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)
  if not os.path.isdir(root):
    return []
  names = []
  for name in sorted(os.listdir(root)):
    folder = os.path.join(root, name)
    if os.path.isdir(folder) and any(
        os.path.isfile(os.path.join(folder, v, 'dataset_info.json')) for v in os.listdir(folder)
        if os.path.isdir(os.path.join(folder, v))):
      names.append(name)
  return names


def _tfds_builder(name: str, data_config):
  """The TFDS builder of one of our data sets, or of a `folder` data set prepared as `name`.

  Raises:
    ValueError: `name` is neither (lists ours and the ones prepared in data_dir).
    FileNotFoundError: one of ours, not prepared in data_dir.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    from sgdc_jax.data import builders  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f'dataset {name!r} needs the TFDS builders in sgdc_jax.data.builders: {e}') from e
  data_dir = data_config.data_dir or None
  ours = name.split('/')[0] in builders.BUILDERS
  if not ours and name not in _prepared_names(data_dir):
    known = sorted([SYNTHETIC] + [
        n for base, cls in builders.BUILDERS.items()
        for n in [base] + [f'{base}/{c.name}' for c in cls.BUILDER_CONFIGS]])
    prepared = ', '.join(_prepared_names(data_dir)) or 'none'
    raise ValueError(
        f'unknown dataset {name!r} (data.name): expected one of {", ".join(known)}, or a data '
        f'set prepared with python -m sgdc_jax.data.prepare --dataset=folder --name=NAME in '
        f'data.data_dir={data_config.data_dir!r} (prepared there: {prepared})')
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for an unknown name / config
    raise ValueError(f'unknown dataset {name!r} (data.name): {e}') from e
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'dataset {name!r} is not prepared in data_dir={str(builder.data_dir)!r} '
        f'(data.data_dir={data_config.data_dir!r}); {_prepare_hint(name, data_config.data_dir)}')
  return builder


def open_source(data_config, split: str):
  """Random-access source of the raw, full-resolution examples of one split.

  Args:
    data_config: a `default_data_config()`-like ConfigDict; `name` is 'synthetic_lesions',
      one of the `sgdc_jax.data.builders` data sets, or the `--name` of a data set prepared
      with `python -m sgdc_jax.data.prepare --dataset=folder` in `data_dir`.
    split: split name ('train', 'validation', 'test', ...; TFDS slicing such as
      'train[:10%]' passes through for TFDS datasets).

  Returns:
    An object with `__len__` and `__getitem__(i) -> {'image': uint8 (H, W, 3),
    'mask': uint8 (H, W) (TFDS image features may carry a trailing 1), 'id': str or bytes}`.

  Raises:
    ValueError: unknown split or dataset name (the message lists the known ones).
    FileNotFoundError: the TFDS dataset is not prepared in `data_dir` (the message names the
      directory and the command that prepares it).
  """
  name = data_config.name
  if name == SYNTHETIC:
    syn = data_config.synthetic
    sizes = {'train': syn.train_size, 'validation': syn.validation_size, 'test': syn.test_size}
    seed = synthetic_split_seed(syn.seed, split)
    return SyntheticLesions(sizes[split], (syn.height, syn.width), seed=seed)

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = _tfds_builder(name, data_config)
  base = split.split('[')[0]
  # 'all' is TFDS's union of every split (PH2 documents it for all 200 images).
  if '+' not in split and base != 'all' and base not in builder.info.splits:
    raise ValueError(f'dataset {name!r} has no split {split!r}; '
                     f"splits are {sorted(builder.info.splits)} (or 'all')")
  return tfds.data_source(name, split=split, data_dir=data_config.data_dir or None,
                          download=False)


def _image_size(data_config):
  size = data_config.image_size
  size = (int(size), int(size)) if np.ndim(size) == 0 else tuple(int(v) for v in size)
  if len(size) != 2 or min(size) < 1:
    raise ValueError('data.image_size must be a positive int or (H, W), '
                     f'got {data_config.image_size!r}')
  return size


def _processes(process_index, process_count):
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} must be in [0, process_count={process_count})')
  return int(process_index), int(process_count)


def _per_process_batch(global_batch_size: int, process_count: int) -> int:
  if int(global_batch_size) != global_batch_size or global_batch_size < 1:
    raise ValueError(f'global_batch_size must be a positive integer, got {global_batch_size!r}')
  if global_batch_size % process_count:
    raise ValueError(f'global_batch_size {global_batch_size} is not divisible by the number of '
                     f'JAX processes {process_count}')
  return global_batch_size // process_count


class TrainTransform(grain.transforms.RandomMap):
  """Raw example -> {'image': float32 (S, S, 3), 'mask': int32 (S, S), 'edge': uint8 (S, S)}.

  Random resized crop of the full-resolution example straight to the output size (one
  resampling), flips, 90-degree turns, colour jitter, normalisation, boundary target.
  All draws come from the per-element generator Grain passes in.
  """

  def __init__(self, data_config, where: str = 'train'):
    aug = data_config.augment
    self.size = _image_size(data_config)
    self.enabled = bool(aug.enabled)
    self.hflip, self.vflip, self.rot90 = bool(aug.hflip), bool(aug.vflip), bool(aug.rot90)
    self.scale = (float(aug.scale_min), float(aug.scale_max))
    self.ratio = (float(aug.ratio_min), float(aug.ratio_max))
    self.jitter = dict(brightness=float(aug.brightness), contrast=float(aug.contrast),
                       saturation=float(aug.saturation), hue=float(aug.hue))
    self.mean, self.std = tuple(data_config.mean), tuple(data_config.std)
    self.boundary_width = int(data_config.boundary_width)
    self.where = where

  def random_map(self, element, rng: np.random.Generator):
    """Raw example -> augmented, normalised training example with its boundary target."""
    image, mask = T.check_example(element, f'{self.where} example {element.get("id", "?")!r}')
    if self.enabled:
      box = None
      if self.scale != (1.0, 1.0) or self.ratio != (1.0, 1.0):
        box = T.random_crop_box(rng, image.shape[0], image.shape[1], self.scale, self.ratio)
      turns = 0
      if self.rot90:
        turns = int(rng.integers(4)) if self.size[0] == self.size[1] else 2 * int(rng.integers(2))
      image, mask = T.crop_flip_rotate(image, mask, self.size, box,
                                       self.hflip and rng.uniform() < 0.5,
                                       self.vflip and rng.uniform() < 0.5, turns)
      pixels = image.astype(np.float32) * np.float32(1 / 255)
      if any(self.jitter.values()):
        pixels = T.colour_jitter(pixels, rng, **self.jitter)
    else:
      image, mask = T.resize_pair(image, mask, self.size)
      pixels = image
    return _finish(pixels, mask, self.mean, self.std, self.boundary_width)


def _finish(pixels, mask, mean, std, boundary_width):
  return {'image': T.normalise(pixels, mean, std),
          'mask': mask.astype(np.int32),
          'edge': boundary_target(mask, boundary_width)}


class EvalTransform(grain.transforms.Map):
  """Record index -> resized, normalised example with 'valid' and 'index'; -1 -> padding row."""

  def __init__(self, source, data_config, where: str = 'eval'):
    self.source = source
    self.size = _image_size(data_config)
    self.mean, self.std = tuple(data_config.mean), tuple(data_config.std)
    self.boundary_width = int(data_config.boundary_width)
    self.where = where

  def map(self, element):
    """Record index (-1 = padding) -> resized, normalised eval example with `valid`/`index`."""
    index = int(element)
    if index < 0:
      height, width = self.size
      return {'image': np.zeros((height, width, 3), np.float32),
              'mask': np.zeros((height, width), np.int32),
              'edge': np.zeros((height, width), np.uint8),
              'valid': np.bool_(False), 'index': np.int32(-1)}
    image, mask = T.check_example(self.source[index], f'{self.where} record {index}')
    image, mask = T.resize_pair(image, mask, self.size)
    out = _finish(image, mask, self.mean, self.std, self.boundary_width)
    out.update(valid=np.bool_(True), index=np.int32(index))
    return out


def _finalise(ds, data_config):
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(data_config.read_threads),
                                            prefetch_buffer_size=int(data_config.prefetch_batches)))
  if int(data_config.num_workers) > 0:
    # Grain's worker processes read absl flags; outside an absl app (tests, notebooks,
    # scripts) nothing parsed them, so take their defaults. `app.run` still re-parses argv.
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(data_config.num_workers),
        per_worker_buffer_size=int(data_config.worker_buffer_size)))
  return ds


def create_train_dataset(data_config, global_batch_size: int, seed: int, process_index=None,
                         process_count=None) -> grain.IterDataset:
  """The training pipeline as a re-iterable `grain.IterDataset` (see `create_train_iterator`)."""
  process_index, process_count = _processes(process_index, process_count)
  batch = _per_process_batch(global_batch_size, process_count)
  if int(seed) != seed or not 0 <= seed < 2**32:
    raise ValueError(f'seed must be an integer in [0, 2**32), got {seed!r}')
  split = data_config.train_split
  source = open_source(data_config, split)
  if len(source) == 0:
    raise ValueError(f'dataset {data_config.name!r} split {split!r} is empty')
  ds = grain.MapDataset.source(source).seed(int(seed)).shuffle().repeat()
  ds = ds.random_map(TrainTransform(data_config, where=f'{data_config.name}/{split}'))
  ds = ds[process_index::process_count]
  ds = ds.batch(batch, drop_remainder=True)
  return _finalise(ds, data_config)


def create_train_iterator(data_config, global_batch_size: int, seed: int, process_index=None,
                          process_count=None):
  """Infinite, checkpointable iterator of this process's training batches.

  Args:
    data_config: `default_data_config()`-like ConfigDict.
    global_batch_size: examples per step over all processes; must divide by process_count.
    seed: integer in [0, 2**32): shuffle order and augmentation (per epoch and element).
    process_index, process_count: default to `jax.process_index()` / `jax.process_count()`.

  Returns:
    A `grain.DatasetIterator` yielding {'image': float32 (b, S, S, 3) normalised,
    'mask': int32 (b, S, S), 'edge': uint8 (b, S, S)} with b = global_batch_size /
    process_count; `get_state()` / `set_state(state)` resume at the exact next batch.

  Raises:
    ValueError: batch size not divisible by the process count, bad seed, empty split.
  """
  return iter(create_train_dataset(data_config, global_batch_size, seed, process_index,
                                   process_count))


def eval_indices(num_records: int, global_batch_size: int, process_index: int,
                 process_count: int) -> list[int]:
  """Record indices process `process_index` evaluates, in order, -1 for padding rows.

  Global batch k covers records [k * B, (k + 1) * B); each process takes its block of B / P.
  """
  batch = _per_process_batch(global_batch_size, process_count)
  num_batches = max(1, math.ceil(num_records / global_batch_size))
  out = []
  for k in range(num_batches):
    start = k * global_batch_size + process_index * batch
    out.extend(i if i < num_records else -1 for i in range(start, start + batch))
  return out


def create_eval_dataset(data_config, split: str, global_batch_size: int, process_index=None,
                        process_count=None) -> grain.IterDataset:
  """The evaluation pipeline as a re-iterable `grain.IterDataset` (see `create_eval_iterator`)."""
  process_index, process_count = _processes(process_index, process_count)
  batch = _per_process_batch(global_batch_size, process_count)
  source = open_source(data_config, split)
  indices = eval_indices(len(source), global_batch_size, process_index, process_count)
  ds = grain.MapDataset.source(indices).map(
      EvalTransform(source, data_config, where=f'{data_config.name}/{split}'))
  ds = ds.batch(batch, drop_remainder=False)
  return _finalise(ds, data_config)


def create_eval_iterator(data_config, split: str, global_batch_size: int, process_index=None,
                         process_count=None):
  """Finite iterator over every record of `split` exactly once across processes.

  Args:
    data_config: `default_data_config()`-like ConfigDict.
    split: split name.
    global_batch_size: rows per step over all processes; must divide by process_count.
    process_index, process_count: default to `jax.process_index()` / `jax.process_count()`.

  Returns:
    An iterator of ceil(N / global_batch_size) batches (the same count on every process) of
    {'image': float32 (b, S, S, 3), 'mask': int32 (b, S, S), 'edge': uint8 (b, S, S),
     'valid': bool (b,), 'index': int32 (b,) record index in the split, -1 for padding};
    padding rows are zeros. Order is deterministic (record order).
  """
  return iter(create_eval_dataset(data_config, split, global_batch_size, process_index,
                                  process_count))
