"""Training batches whose iterator state is the batch count, so resuming works with any
number of Grain worker processes or read threads."""
from __future__ import annotations

import grain

from sgdc_jax.data.workers import (close_pipeline, release_shared_memory, resolve_workers,
                                   to_iter_dataset)


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
      self._iterator = iter(to_iter_dataset(self._batches[self._next_batch:], self._data_config))
    return self._iterator

  def __next__(self):
    self._assert_not_closed()
    batch = release_shared_memory(next(self._started()))
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
      close_pipeline(self._iterator, resolve_workers(self._data_config)[0] > 0)
      self._iterator = None

  def close(self) -> None:
    """Stops the worker processes and read threads."""
    self._stop()
    super().close()
