"""Grain input pipeline: raw examples -> resized, augmented, normalised, per-process batches.

Training (`create_train_iterator`)::

  MapDataset.source(open_source(...)) -> seed(seed) -> shuffle -> repeat
    -> random_map(decode, crop-resize, flips, 90-degree turns, colour jitter, normalise,
                  boundary)
    -> [process_index::process_count] -> batch(global // process_count, drop_remainder)
    -> to_iter_dataset(read threads) -> mp_prefetch(num_workers)

Every stage before `to_iter_dataset` is index-based, so element `i` of the stream (and its
augmentation, seeded by `(seed, i)`) does not depend on the number of processes or workers;
batch `k` of process `p` holds stream elements `(k * b + j) * P + p`. The iterator's
`get_state()` is `{'next_batch': k}`, which `set_state()` restores to the exact next batch
whatever the worker count (`ResumableBatches`); save it with the training checkpoint.

Evaluation (`create_eval_iterator`) pads the split to whole global batches: global batch `k`
holds records `k * B .. k * B + B - 1`, process `p` the `p`-th block of `B / P` of them, rows
past the end of the split have `valid=False` and `index=-1`. Every record is seen exactly
once, in order, by exactly one process; all processes run the same number of batches.
Full-resolution metrics fetch `open_source(config, split)[index]` for the original mask and id.

Speed (the pipeline must outrun the accelerator):
- TFDS images are read as their stored bytes and decoded in the transform, JPEGs at 1/2,
  1/4 or 1/8 size when the crop still holds the output size at that scale
  (`data.jpeg_draft`, default on; see `transforms`). Masks are always decoded in full.
- Pixels stay uint8 through crop, resize, flips, turns and colour jitter; `normalise` at
  the end makes the float32 image.
- `data.num_workers` and `data.read_threads` default to -1 = sized to the host
  (`resolve_workers`); a value >= 0 is used as given.
- `create_*_dataset(..., reference=True)` runs the previous, slower path (full-size decode,
  float32 colour jitter) for tests and benchmarks.
"""
from __future__ import annotations

import dataclasses
import math
import os

import grain
import ml_collections
import numpy as np

from sgdc_jax.ops.boundary import boundary_target
from sgdc_jax.data import builders
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
  data_dir = data_config.data_dir or None
  ours = name.split('/')[0] in builders.BUILDERS
  if not ours and name not in _prepared_names(data_dir):
    known = sorted(builders.DATASET_NAMES + [SYNTHETIC])
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


# -1 for `data.num_workers` / `data.read_threads`: size to the host (`resolve_workers`).
AUTO = -1
MAX_AUTO_WORKERS = 16
MAX_AUTO_READ_THREADS = 4


def usable_cpus() -> int:
  """CPUs this process may run on (its affinity mask where the OS has one)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # no affinity masks (macOS, Windows)
    return os.cpu_count() or 1


def validate_data_config(data_config) -> None:
  """Checks the pipeline's speed settings; raises ValueError naming the `data.*` field."""
  for field in ('num_workers', 'read_threads'):
    value = data_config.get(field, AUTO)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < AUTO:
      raise ValueError(f'data.{field}: expected -1 (auto: sized to the host) or an integer '
                       f'>= 0, got {value!r}')
  for field, low in (('worker_buffer_size', 1), ('prefetch_batches', 0)):
    value = data_config.get(field, low)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f'data.{field}: expected an integer >= {low}, got {value!r}')
  if not isinstance(data_config.get('jpeg_draft', True), (bool, np.bool_)):
    raise ValueError(f'data.jpeg_draft: expected True or False, got '
                     f'{data_config.get("jpeg_draft")!r}')


def resolve_workers(data_config, cpus: int | None = None, *,
                    evaluation: bool = False) -> tuple[int, int]:
  """`(num_workers, read_threads)` of `data_config`, -1 (auto) replaced by host-sized values.

  Auto workers for training: `min(cpus - 1, MAX_AUTO_WORKERS)`, so one CPU stays with the
  training process (step dispatch, host-to-device copies) and decoding/augmentation runs in
  separate processes, free of the training process's GIL. Auto workers for evaluation: 0,
  because the eval iterator is rebuilt at every evaluation and starting worker processes
  (seconds: each imports the package) costs more than a typical validation split takes.
  Auto read threads (per process computing elements, i.e. per worker when there are
  workers): `max(1, min(cpus // max(workers, 1), MAX_AUTO_READ_THREADS))`; Pillow and NumPy
  release the GIL for most of their work. Values >= 0 are used as given (0 workers:
  everything in the calling process; 0 threads: elements computed in the consuming thread).

  Args:
    data_config: a `default_data_config()`-like ConfigDict.
    cpus: CPUs to size for (default: `usable_cpus()`).
    evaluation: size an evaluation pipeline rather than the training one.
  """
  validate_data_config(data_config)
  cpus = usable_cpus() if cpus is None else int(cpus)
  workers = int(data_config.get('num_workers', AUTO))
  threads = int(data_config.get('read_threads', AUTO))
  if workers == AUTO:
    workers = 0 if evaluation else max(0, min(cpus - 1, MAX_AUTO_WORKERS))
  if threads == AUTO:
    threads = max(1, min(cpus // max(workers, 1), MAX_AUTO_READ_THREADS))
  return workers, threads


def _undecoded_images(source):
  """A TFDS source whose records keep 'image' as the stored JPEG/PNG bytes; others as given.

  The transforms decode the bytes themselves, at reduced size where the format allows.
  """
  if not (dataclasses.is_dataclass(source) and hasattr(source, 'dataset_info')
          and hasattr(source, 'decoders')):
    return source
  # TFDS is heavy and only TFDS-backed sources get here (open_source imported it already).
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = source.dataset_info.features
  if 'image' not in features or not isinstance(features['image'], tfds.features.Image):
    return source
  decoders = dict(source.decoders or {}, image=tfds.decode.SkipDecoding())
  return dataclasses.replace(source, decoders=decoders)


class TrainTransform(grain.transforms.RandomMap):
  """Raw example -> {'image': float32 (S, S, 3), 'mask': int32 (S, S), 'edge': uint8 (S, S)}.

  Random resized crop of the full-resolution example straight to the output size (one
  resampling; JPEG bytes decoded at reduced size when `data.jpeg_draft` allows), flips,
  90-degree turns and colour jitter on uint8 pixels, then normalisation and the boundary
  target. All draws come from the per-element generator Grain passes in, in the same order
  on both paths, so `reference=True` (full-size decode, float32 jitter: the previous
  implementation) gives the same geometry.
  """

  def __init__(self, data_config, where: str = 'train', reference: bool = False):
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
    self.reference = bool(reference)
    self.draft = bool(data_config.get('jpeg_draft', True)) and not self.reference

  def random_map(self, element, rng: np.random.Generator):
    """Raw example -> augmented, normalised training example with its boundary target."""
    where = f'{self.where} example {element.get("id", "?")!r}'
    image, mask = T.open_example(element, where)
    if not self.enabled:
      image, mask = T.resize_pair(image, mask, self.size, draft=self.draft, where=where)
      return _finish(image, mask, self.mean, self.std, self.boundary_width)
    box = None
    if self.scale != (1.0, 1.0) or self.ratio != (1.0, 1.0):
      box = T.random_crop_box(rng, mask.shape[0], mask.shape[1], self.scale, self.ratio)
    turns = 0
    if self.rot90:
      turns = int(rng.integers(4)) if self.size[0] == self.size[1] else 2 * int(rng.integers(2))
    image, mask = T.crop_flip_rotate(image, mask, self.size, box,
                                     self.hflip and rng.uniform() < 0.5,
                                     self.vflip and rng.uniform() < 0.5, turns,
                                     draft=self.draft, where=where)
    if any(self.jitter.values()):
      if self.reference:
        image = T.colour_jitter(image.astype(np.float32) * np.float32(1 / 255), rng,
                                **self.jitter)
      else:
        image = T.colour_jitter_uint8(image, rng, **self.jitter)
    return _finish(image, mask, self.mean, self.std, self.boundary_width)


def _finish(image, mask, mean, std, boundary_width):
  """uint8 (or [0, 1] float) image and uint8 mask -> the example dict the step consumes."""
  return {'image': T.normalise(image, mean, std),
          'mask': mask.astype(np.int32),
          'edge': boundary_target(mask, boundary_width)}


class EvalTransform(grain.transforms.Map):
  """Record index -> resized, normalised example with 'valid' and 'index'; -1 -> padding row.

  Deterministic: the record alone decides the output (JPEGs decoded at reduced size when
  `data.jpeg_draft` allows, as in training; `reference=True` decodes in full).
  """

  def __init__(self, source, data_config, where: str = 'eval', reference: bool = False):
    self.source = source
    self.size = _image_size(data_config)
    self.mean, self.std = tuple(data_config.mean), tuple(data_config.std)
    self.boundary_width = int(data_config.boundary_width)
    self.where = where
    self.draft = bool(data_config.get('jpeg_draft', True)) and not reference

  def map(self, element):
    """Record index (-1 = padding) -> resized, normalised eval example with `valid`/`index`."""
    index = int(element)
    if index < 0:
      height, width = self.size
      return {'image': np.zeros((height, width, 3), np.float32),
              'mask': np.zeros((height, width), np.int32),
              'edge': np.zeros((height, width), np.uint8),
              'valid': np.bool_(False), 'index': np.int32(-1)}
    where = f'{self.where} record {index}'
    image, mask = T.open_example(self.source[index], where)
    image, mask = T.resize_pair(image, mask, self.size, draft=self.draft, where=where)
    out = _finish(image, mask, self.mean, self.std, self.boundary_width)
    out.update(valid=np.bool_(True), index=np.int32(index))
    return out


def _finalise(ds, data_config, evaluation: bool = False):
  workers, threads = resolve_workers(data_config, evaluation=evaluation)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                            prefetch_buffer_size=int(data_config.prefetch_batches)))
  if workers > 0:
    # Grain's worker processes read absl flags; outside an absl app (tests, notebooks,
    # scripts) nothing parsed them, so take their defaults. `app.run` still re-parses argv.
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=workers, per_worker_buffer_size=int(data_config.worker_buffer_size)))
  return ds


class ResumableBatches(grain.IterDataset):
  """Batches of an index-based `MapDataset`, run through `to_iter_dataset` / `mp_prefetch`.

  Its iterators' state is `{'next_batch': k}`, the number of batches consumed; `set_state`
  restarts the Grain pipeline at `batches[k:]`. So a checkpoint resumes at the exact next
  batch with any worker or thread count (Grain's own multi-worker state is per worker, and
  restoring it with another count fails or, worse, yields different batches) -- which matters
  now that `num_workers=-1` sizes the pipeline to whichever host resumes.
  """

  def __init__(self, batches: grain.MapDataset, data_config):
    super().__init__()
    self._batches = batches
    self._data_config = data_config

  def __iter__(self) -> grain.DatasetIterator:
    return _ResumableIterator(self._batches, self._data_config)

  def __str__(self) -> str:
    return f'ResumableBatches({self._batches})'


class _ResumableIterator(grain.DatasetIterator):
  """Iterator of `ResumableBatches`; the Grain iterator underneath starts lazily."""

  def __init__(self, batches: grain.MapDataset, data_config):
    super().__init__()
    self._batches = batches
    self._data_config = data_config
    self._next_batch = 0
    self._iterator = None

  def _started(self):
    if self._iterator is None:
      self._iterator = iter(_finalise(self._batches[self._next_batch:], self._data_config))
    return self._iterator

  def __next__(self):
    self._assert_not_closed()
    batch = next(self._started())
    self._next_batch += 1
    return batch

  def get_state(self) -> dict:
    """`{'next_batch': k}`: batches consumed so far."""
    return {'next_batch': self._next_batch}

  def set_state(self, state: dict) -> None:
    """Resumes at batch `state['next_batch']` (or a single-process Grain `next_index`)."""
    if 'next_batch' in state:
      next_batch = state['next_batch']
    elif set(state) == {'next_index'}:  # saved by the Grain iterator this class replaced
      next_batch = state['next_index']
    else:
      raise ValueError(f'training iterator state {state!r}: expected {{"next_batch": k}}; '
                       'states of Grain multi-worker iterators cannot be restored')
    self._stop()
    self._next_batch = int(next_batch)

  def start_prefetch(self) -> None:
    """Starts the Grain pipeline (worker processes, read threads) ahead of the first batch."""
    self._started().start_prefetch()

  def _stop(self) -> None:
    if self._iterator is not None:
      self._iterator.close()
      self._iterator = None

  def close(self) -> None:
    """Stops the worker processes and read threads."""
    self._stop()
    super().close()


def create_train_dataset(data_config, global_batch_size: int, seed: int, process_index=None,
                         process_count=None, *, reference: bool = False) -> grain.IterDataset:
  """The training pipeline as a re-iterable `grain.IterDataset` (see `create_train_iterator`).

  `reference=True` selects the previous, slower transforms (`TrainTransform`).
  """
  validate_data_config(data_config)
  process_index, process_count = _processes(process_index, process_count)
  batch = _per_process_batch(global_batch_size, process_count)
  if int(seed) != seed or not 0 <= seed < 2**32:
    raise ValueError(f'seed must be an integer in [0, 2**32), got {seed!r}')
  split = data_config.train_split
  source = open_source(data_config, split)
  if len(source) == 0:
    raise ValueError(f'dataset {data_config.name!r} split {split!r} is empty')
  ds = grain.MapDataset.source(_undecoded_images(source)).seed(int(seed)).shuffle().repeat()
  ds = ds.random_map(TrainTransform(data_config, where=f'{data_config.name}/{split}',
                                    reference=reference))
  ds = ds[process_index::process_count]
  return ResumableBatches(ds.batch(batch, drop_remainder=True), data_config)


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
    process_count; `get_state()` (`{'next_batch': k}`, JSON) / `set_state(state)` resume at
    the exact next batch, with any `num_workers` / `read_threads` (`ResumableBatches`).

  Raises:
    ValueError: batch size not divisible by the process count, bad seed, empty split, bad
      worker / thread settings.
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
                        process_count=None, *, reference: bool = False) -> grain.IterDataset:
  """The evaluation pipeline as a re-iterable `grain.IterDataset` (see `create_eval_iterator`).

  `reference=True` decodes JPEGs at full size (`EvalTransform`).
  """
  return _eval_dataset(data_config, split, global_batch_size, process_index, process_count,
                       reference)[0]


def _eval_dataset(data_config, split, global_batch_size, process_index, process_count,
                  reference=False) -> tuple[grain.IterDataset, int]:
  """`(the evaluation pipeline, its number of batches)`."""
  validate_data_config(data_config)
  process_index, process_count = _processes(process_index, process_count)
  batch = _per_process_batch(global_batch_size, process_count)
  source = open_source(data_config, split)
  indices = eval_indices(len(source), global_batch_size, process_index, process_count)
  ds = grain.MapDataset.source(indices).map(
      EvalTransform(_undecoded_images(source), data_config,
                    where=f'{data_config.name}/{split}', reference=reference))
  ds = ds.batch(batch, drop_remainder=False)
  return _finalise(ds, data_config, evaluation=True), len(indices) // batch


def create_eval_iterator(data_config, split: str, global_batch_size: int, process_index=None,
                         process_count=None, *, reference: bool = False):
  """Finite iterator over every record of `split` exactly once across processes.

  Args:
    data_config: `default_data_config()`-like ConfigDict.
    split: split name.
    global_batch_size: rows per step over all processes; must divide by process_count.
    process_index, process_count: default to `jax.process_index()` / `jax.process_count()`.
    reference: decode JPEGs at full size (`EvalTransform`; for tests and benchmarks).

  Returns:
    An iterator of ceil(N / global_batch_size) batches (the same count on every process) of
    {'image': float32 (b, S, S, 3), 'mask': int32 (b, S, S), 'edge': uint8 (b, S, S),
     'valid': bool (b,), 'index': int32 (b,) record index in the split, -1 for padding};
    padding rows are zeros. Order is deterministic (record order).
  """
  ds, num_batches = _eval_dataset(data_config, split, global_batch_size, process_index,
                                  process_count, reference)
  return _take(iter(ds), num_batches)


def _take(iterator, count: int):
  """Yields `count` items of a Grain iterator, then closes it.

  With worker processes, Grain reports the end of a finite stream only after a poll timeout
  (about 1.5 s measured); the batch count is known, so the evaluation need not wait for it.
  """
  try:
    for _ in range(count):
      yield next(iterator)
  finally:
    iterator.close()
