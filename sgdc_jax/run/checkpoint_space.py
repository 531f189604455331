"""A checkpoint save that runs out of disk space: seen early, reported in one line, cleaned up.

Orbax writes a step into `<step>.orbax-checkpoint-tmp*` in background threads and renames it
to `<step>` once every item is written. When the disk fills, TensorStore's error
(`RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']`) is logged with a
traceback by each background thread (and by asyncio for every write task) and reaches the
main thread only at the next `wait_until_finished` (the next save or the end of training).

This module:
- `is_disk_full(error)`: whether an exception (or one it wraps) is ENOSPC or EDQUOT, as an
  `OSError` errno or in TensorStore's message;
- `silence_disk_full_noise()`: drops the log records (absl, asyncio) whose exception is a full
  disk, and the `RuntimeError: Event loop is closed` that TensorStore reports through
  `sys.unraisablehook` for each write still running when Orbax's event loop stopped at the
  first failed one, so the main thread's one-line `CheckpointSaveError` is all the user sees;
- `remove_partial(directory, step)`: deletes the step's temporary folder at once (Orbax would
  delete it only when the next run opens the directory);
- `space_warning(directory, step, last_step, last_bytes)`: before a save, a warning when the
  free space of the file system is smaller than the last complete checkpoint.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
from typing import Optional

from sgdc_jax.errors import chain

TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax's atomicity_types.TMP_DIR_SUFFIX
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# TensorStore puts the OS error in the message: "... No space left on device [os_error_code='28']".
_FULL_TEXT = re.compile("|".join([re.escape(os.strerror(e)) for e in _FULL_ERRNOS] + [
    rf"os_error_code='{e}'" for e in _FULL_ERRNOS]))


def is_disk_full(error: Optional[BaseException]) -> bool:
  """Whether `error` or an exception it wraps says the disk (or the user's quota) is full."""
  return any((isinstance(e, OSError) and e.errno in _FULL_ERRNOS) or _FULL_TEXT.search(str(e))
             for e in chain(error))


class _DropDiskFull(logging.Filter):
  """Drops records that carry a full-disk exception or say so in their message."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.WARNING:
      return True
    error = record.exc_info[1] if record.exc_info else None
    return not (is_disk_full(error) or _FULL_TEXT.search(record.getMessage()))


_FILTER = _DropDiskFull()
# Orbax logs through absl; asyncio reports the write tasks whose error nobody read, when they
# are garbage collected (possibly at exit): the filter stays for the life of the process.
_LOGGERS = ("absl", "asyncio")


def _closed_loop_callback(args) -> bool:
  """Whether an unraisable exception is asyncio's 'Event loop is closed' from a callback
  scheduled by another thread (`call_soon_threadsafe`) after the loop ended."""
  error, tb = args.exc_value, args.exc_traceback
  if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
    return False
  while tb is not None:
    if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
      return True
    tb = tb.tb_next
  return False


def _unraisable_hook(previous):
  def hook(args):
    if not _closed_loop_callback(args):
      previous(args)
  hook.drops_closed_loop_callbacks = True
  return hook


def silence_disk_full_noise() -> None:
  """Installs the full-disk log filter on Orbax's and asyncio's loggers and the unraisable
  hook that drops late write callbacks (once per process)."""
  for name in _LOGGERS:
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
      logger.addFilter(_FILTER)
  if not getattr(sys.unraisablehook, "drops_closed_loop_callbacks", False):
    sys.unraisablehook = _unraisable_hook(sys.unraisablehook)


def partial_paths(directory: str, step: int) -> list[str]:
  """The temporary folders of `step` in `directory` (`<step>.orbax-checkpoint-tmp[-<time>]`)."""
  prefix = f"{int(step)}{TMP_SUFFIX}"
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted(os.path.join(directory, n) for n in names if n.startswith(prefix))


def remove_partial(directory: str, step: int) -> list[str]:
  """Deletes the temporary folders of `step`; returns those that are gone."""
  removed = []
  for path in partial_paths(directory, step):
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.exists(path):
      removed.append(path)
  return removed


def tree_bytes(path: str) -> int:
  """Bytes of the files under `path` (0 when it cannot be read)."""
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        total += os.lstat(os.path.join(root, name)).st_size
      except OSError:
        pass
  return total


def free_bytes(directory: str) -> Optional[int]:
  """Free bytes of the file system holding `directory` (None when it cannot be asked)."""
  try:
    return shutil.disk_usage(directory).free
  except OSError:
    return None


def megabytes(n: int) -> str:
  return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 2**20:.1f} MB"


def space_warning(directory: str, step: int, last_step: Optional[int],
                  last_bytes: Optional[int]) -> Optional[str]:
  """A warning line when `directory`'s file system has less free space than the last complete
  checkpoint (`last_step`, `last_bytes`) took, else None."""
  if last_step is None or not last_bytes:
    return None
  free = free_bytes(directory)
  if free is None or free >= last_bytes:
    return None
  return (f"warning: {megabytes(free)} free on the file system of {directory}, but checkpoint "
          f"{last_step} took {megabytes(last_bytes)}: saving checkpoint {step} will probably "
          f"fail; free space now (training goes on)")
