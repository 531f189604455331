"""The training input: shuffled, repeated, augmented, per-process batches of one split.

See `sgdc_jax.data.pipeline` for the stages and why element `i` of the stream does not depend
on the number of processes or workers.
"""
from __future__ import annotations

import grain

from sgdc_jax.data import sources
from sgdc_jax.data.batching import per_process_batch, processes
from sgdc_jax.data.preprocess import TrainTransform
from sgdc_jax.data.resumable import ResumableBatches
from sgdc_jax.data.workers import validate_data_config


def create_train_dataset(data_config, global_batch_size: int, seed: int, process_index=None,
                         process_count=None, *, reference: bool = False) -> grain.IterDataset:
  """The training pipeline as a re-iterable `grain.IterDataset` (see `create_train_iterator`).

  `reference=True` selects the previous, slower transforms (`TrainTransform`).
  """
  validate_data_config(data_config)
  process_index, process_count = processes(process_index, process_count)
  batch = per_process_batch(global_batch_size, process_count)
  if int(seed) != seed or not 0 <= seed < 2**32:
    raise ValueError(f'seed must be an integer in [0, 2**32), got {seed!r}')
  split = data_config.train_split
  # Looked up on the module (not imported by name), so tests can substitute a source.
  source = sources.open_source(data_config, split)
  if len(source) == 0:
    raise ValueError(f'dataset {data_config.name!r} split {split!r} is empty')
  ds = grain.MapDataset.source(sources.undecoded_images(source)).seed(int(seed))
  ds = ds.shuffle().repeat()
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
    A `grain.DatasetIterator` yielding {'image': float32 (b, H, W, 3) normalised,
    'mask': int32 (b, H, W), 'edge': uint8 (b, H, W)} with b = global_batch_size /
    process_count and (H, W) = `data.image_size`, or `data.crop_size` when
    `data.train_mode='patch'` (windows at the stored resolution, any stored sizes);
    `get_state()` (`{'next_batch': k}`, JSON) / `set_state(state)` resume at
    the exact next batch, with any `num_workers` / `read_threads` (`ResumableBatches`).

  Raises:
    ValueError: batch size not divisible by the process count, bad seed, empty split, bad
      worker / thread settings, bad `data.train_mode` / `crop_size` / `scale_jitter`.
  """
  return iter(create_train_dataset(data_config, global_batch_size, seed, process_index,
                                   process_count))
