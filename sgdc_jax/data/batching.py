"""Which records each JAX process batches: process ids, per-process batch size, eval order."""
from __future__ import annotations

import math


def processes(process_index=None, process_count=None) -> tuple[int, int]:
  """`(process_index, process_count)`, None taken from `jax.process_index()` / `_count()`.

  Raises:
    ValueError: the index is not in [0, process_count).
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} must be in [0, process_count={process_count})')
  return int(process_index), int(process_count)


def per_process_batch(global_batch_size: int, process_count: int) -> int:
  """Rows per process of a global batch.

  Raises:
    ValueError: not a positive integer, or not divisible by the process count.
  """
  if int(global_batch_size) != global_batch_size or global_batch_size < 1:
    raise ValueError(f'global_batch_size must be a positive integer, got {global_batch_size!r}')
  if global_batch_size % process_count:
    raise ValueError(f'global_batch_size {global_batch_size} is not divisible by the number of '
                     f'JAX processes {process_count}')
  return global_batch_size // process_count


def eval_indices(num_records: int, global_batch_size: int, process_index: int,
                 process_count: int) -> list[int]:
  """Record indices process `process_index` evaluates, in order, -1 for padding rows.

  Global batch k covers records [k * B, (k + 1) * B); each process takes its block of B / P.
  """
  batch = per_process_batch(global_batch_size, process_count)
  num_batches = max(1, math.ceil(num_records / global_batch_size))
  out = []
  for k in range(num_batches):
    start = k * global_batch_size + process_index * batch
    out.extend(i if i < num_records else -1 for i in range(start, start + batch))
  return out
