"""How much of the host the input pipeline uses: worker processes, read threads, prefetch.

`resolve_workers` sizes `data.num_workers` / `data.read_threads` of -1 (auto) to the host;
`to_iter_dataset` turns an index-based Grain `MapDataset` into the running pipeline with
those read threads and worker processes; `release_shared_memory` frees the names of the
shared-memory blocks a worker's batch arrives in and `close_pipeline` those Grain still holds,
so none is left behind at exit (Python's resource tracker reported them as leaked).
"""
from __future__ import annotations

import gc
import os

import grain
from grain import multiprocessing as grain_mp
import numpy as np

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


def to_iter_dataset(ds: grain.MapDataset, data_config,
                    evaluation: bool = False) -> grain.IterDataset:
  """`ds` read by `resolve_workers`' threads, in its worker processes when there are any."""
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


def release_shared_memory(batch):
  """Unlinks the names of the shared-memory blocks `batch`'s arrays arrived in; returns `batch`.

  Grain's worker processes hand each array over in a POSIX shared-memory block that the
  receiving array unlinks when it is garbage-collected. Batches still referenced at exit
  (the device prefetcher's queue and arrays aliasing it, kept in reference cycles) never are,
  so Python's resource tracker reported them: 'There appear to be N leaked shared_memory
  objects to clean up at shutdown'. Unlinking removes only the name: the mapping, and so the
  array, stays valid until the array is freed, and the memory is returned then or at exit.
  Arrays from the calling process (no workers) are left as they are.

  Args:
    batch: a dict (or list / tuple) of arrays, as a Grain iterator yields.
  """
  leaves = batch.values() if isinstance(batch, dict) else (
      batch if isinstance(batch, (list, tuple)) else (batch,))
  for leaf in leaves:
    # Only arrays that own the unlinking (`unlink_on_del`); views share the block.
    if isinstance(leaf, grain_mp.SharedMemoryArray) and getattr(leaf, '_unlink_on_del', False):
      leaf._unlink_on_del = False  # pylint: disable=protected-access  (no second unlink)
      try:
        leaf.shm.unlink()
      except FileNotFoundError:  # already gone (unlinked elsewhere); nothing is left to free
        pass
  return batch


def close_pipeline(iterator, worker_processes: bool) -> None:
  """Closes a Grain iterator of `to_iter_dataset`; with worker processes, frees the
  shared-memory blocks Grain's own threads still hold.

  At the end of a finite stream Grain's prefetch thread forwards the StopIteration with its
  traceback, which holds the thread's frame and so the last batch it fetched: a reference
  cycle that only the cyclic garbage collector frees (and with it unlinks the batch's blocks).
  A process that exits soon after never runs it, and the resource tracker reported the blocks
  as leaked. One collection (about 0.1 s) after a pipeline whose worker processes took
  seconds to start frees them now.
  """
  iterator.close()
  if worker_processes:
    gc.collect()
