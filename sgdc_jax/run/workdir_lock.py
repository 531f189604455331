"""One training at a time per workdir.

`training_lock`: a training holds an exclusive `fcntl.flock` on `workdir/.train.lock` for as long
as it runs; a second training on the same workdir is refused at once with a message naming the
holder (pid, host, start time). The OS releases the lock when the holder exits in any way, kill
-9 included, so a lock left by a dead run never blocks the next one (the file stays and is
reused; its contents are only the last holder's description). Not reliable on NFS-like
filesystems, where `flock` may be emulated per host or not at all. With several JAX processes
only process 0 takes the lock, and its outcome (with the message) is broadcast so that every
process raises the same error.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
from typing import Any, Callable, Iterator, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from sgdc_jax.errors import WorkdirBusyError, WorkdirError

LOCK_FILE = ".train.lock"
# Bytes of the status + message broadcast from process 0 (longer messages are cut).
_MESSAGE_BYTES = 2048

Broadcast = Callable[[np.ndarray], np.ndarray]


def _holder_description() -> dict[str, Any]:
  return {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _describe_holder(f) -> str:
  """The holder's description written in the lock file (it may be mid-write: say so)."""
  f.seek(0)
  try:
    h = json.loads(f.read())
    return f"pid {h['pid']} on host {h['host']}, started {h['started']}"
  except (ValueError, KeyError, TypeError):
    return "holder not recorded yet"


def _try_lock(workdir: str) -> tuple[int, str, Any]:
  """Process 0's attempt: `(status, message, open file or None)`; status 0 = locked,
  1 = busy, 2 = the lock file could not be opened."""
  path = os.path.join(workdir, LOCK_FILE)
  try:
    os.makedirs(workdir, exist_ok=True)
    # 'a+' neither truncates nor requires the file: the holder's description is read below.
    f = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
  except OSError as e:
    return 2, f"cannot create the training lock {path}: {e.strerror or e}", None
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.EAGAIN, errno.EACCES):
      f.close()
      return 2, f"cannot lock {path}: {e.strerror or e}", None
    holder = _describe_holder(f)
    f.close()
    return 1, (f"workdir {workdir} is in use by another training ({holder}; lock file {path}). "
               f"Wait for it to finish or stop it, or choose another --workdir."), None
  f.seek(0)
  f.truncate()
  f.write(json.dumps(_holder_description()))
  f.flush()
  return 0, "", f


def _encode(status: int, message: str) -> np.ndarray:
  payload = np.zeros(_MESSAGE_BYTES, np.uint8)
  data = message.encode("utf-8")[:_MESSAGE_BYTES - 1]
  payload[0] = status
  payload[1:1 + len(data)] = np.frombuffer(data, np.uint8)
  return payload


def _decode(payload: np.ndarray) -> tuple[int, str]:
  payload = np.asarray(payload, np.uint8)
  return int(payload[0]), payload[1:].tobytes().rstrip(b"\0").decode("utf-8", "replace")


def _default_broadcast(process_count: int) -> Broadcast:
  if process_count == 1:
    return lambda x: x
  return multihost_utils.broadcast_one_to_all


@contextlib.contextmanager
def training_lock(workdir: str, *, broadcast: Optional[Broadcast] = None,
                  process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> Iterator[None]:
  """Holds the workdir's training lock for the body of the `with` block.

  Every process must enter it (it broadcasts). Only process 0 touches the lock file; the
  others receive its outcome.

  Args:
    workdir: the run directory (created if missing).
    broadcast: sends process 0's uint8 array (status + message) to every process; default
      `multihost_utils.broadcast_one_to_all` with several processes, identity with one.
    process_index, process_count: default `jax.process_index()` / `jax.process_count()`.
  Raises:
    WorkdirBusyError: another training holds the lock (names the workdir and the holder).
    WorkdirError: the lock file cannot be created or locked.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  broadcast = broadcast or _default_broadcast(process_count)
  status, message, f = _try_lock(workdir) if process_index == 0 else (0, "", None)
  try:
    status, message = _decode(broadcast(_encode(status, message)))
    if status:
      raise (WorkdirBusyError if status == 1 else WorkdirError)(message)
    yield
  finally:  # also when the broadcast itself fails: never keep the lock past this block
    if f is not None:
      fcntl.flock(f, fcntl.LOCK_UN)
      f.close()
