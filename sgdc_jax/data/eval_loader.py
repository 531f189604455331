"""The evaluation input: every record of a split exactly once, in order, padded to whole
global batches and shared between processes (see `sgdc_jax.data.pipeline`)."""
from __future__ import annotations

import grain

from sgdc_jax.data import sources
from sgdc_jax.data.batching import eval_indices, per_process_batch, processes
from sgdc_jax.data.preprocess import EvalTransform
from sgdc_jax.data.workers import (close_pipeline, release_shared_memory, resolve_workers,
                                   to_iter_dataset, validate_data_config)


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
  process_index, process_count = processes(process_index, process_count)
  batch = per_process_batch(global_batch_size, process_count)
  source = sources.open_source(data_config, split)
  indices = eval_indices(len(source), global_batch_size, process_index, process_count)
  ds = grain.MapDataset.source(indices).map(
      EvalTransform(sources.undecoded_images(source), data_config,
                    where=f'{data_config.name}/{split}', reference=reference))
  ds = ds.batch(batch, drop_remainder=False)
  return to_iter_dataset(ds, data_config, evaluation=True), len(indices) // batch


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
  worker_processes = resolve_workers(data_config, evaluation=True)[0] > 0
  return take(iter(ds), num_batches, worker_processes)


def take(iterator, count: int, worker_processes: bool = False):
  """Yields `count` items of a Grain iterator, then closes it (`close_pipeline`).

  With worker processes, Grain reports the end of a finite stream only after a poll timeout
  (about 1.5 s measured); the batch count is known, so the evaluation need not wait for it.
  Each batch's shared-memory names are released on arrival (`release_shared_memory`).
  """
  try:
    for _ in range(count):
      yield release_shared_memory(next(iterator))
  finally:
    close_pipeline(iterator, worker_processes)
