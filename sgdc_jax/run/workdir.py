"""What a workdir guarantees: one training at a time, and the record of how it was trained.

Lock (`training_lock`): a training holds an exclusive `fcntl.flock` on `workdir/.train.lock`
for as long as it runs; a second training on the same workdir is refused at once with a
message naming the holder (pid, host, start time). The OS releases the lock when the holder
exits in any way, kill -9 included, so a lock left by a dead run never blocks the next one
(the file stays and is reused; its contents are only the last holder's description). Not
reliable on NFS-like filesystems, where `flock` may be emulated per host or not at all. With
several JAX processes only process 0 takes the lock, and its outcome (with the message) is
broadcast so that every process raises the same error.

Training config record (`record_training_config`, `check_training_config`): `workdir/config.json`
is written once, when a training starts without a checkpoint, and never by a resumed training,
eval, predict or a run that failed its config check. On resume (and before eval/predict
restore a checkpoint) the current config is compared with it: fields that change the saved
state (`STATE_FIELDS`) give one error listing each as
`model.encoder: 'resnet50' (workdir) vs 'resnet18' (now)`; other differences (num_steps,
log_every, the data dir, ...) are allowed and logged, except the settings of how an eval or
predict run reads and writes (`UNREPORTED_FIELDS`: `predict.*`, which checkpoint, overlays, eval
batch size, the compilation cache), which never concern the trained model.

Eval and predict write their resolved config beside their outputs (`write_run_config`), never
over the record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import os
import socket
import tempfile
from typing import Any, Callable, Iterator, Optional

import jax
import ml_collections
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from sgdc_jax import log
from sgdc_jax.errors import ModelConfigMismatchError, WorkdirBusyError, WorkdirError  # noqa: F401

LOCK_FILE = ".train.lock"
CONFIG_FILE = "config.json"
# Bytes of the status + message broadcast from process 0 (longer messages are cut).
_MESSAGE_BYTES = 2048

Broadcast = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------------ lock


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


# ------------------------------------------------------------------------ training config

# Fields whose change makes the checkpoints unrestorable or the resumed training another model.
# `model.pretrained` (read only at initialisation) and `model.impl` (the same function computed
# by another kernel) are free to change.
_FREE_MODEL_FIELDS = ("model.pretrained", "model.impl")
# Optimizer fields that change the saved state's structure only through their sign.
_STATE_SWITCHES = {
    "optimizer.ema_decay": ("EMA on/off changes the saved state", lambda v: v > 0),
    "optimizer.grad_clip_norm": ("clipping on/off changes the optimizer state", lambda v: v > 0),
}
STATE_FIELDS = ("model.*",) + tuple(_STATE_SWITCHES)
# Fields that say how an eval/predict run reads and writes (or where compiled programs are
# cached), never how the checkpoints were trained: their differences are not reported.
# A name ending in '.' covers its section.
UNREPORTED_FIELDS = ("predict.", "eval.checkpoint", "eval.overlays", "eval.batch_size",
                     "compilation_cache_dir")


@dataclasses.dataclass(frozen=True)
class FieldDiff:
  """One field that differs between the workdir's training config and the current one."""
  path: str
  recorded: Any
  current: Any
  why: str = ""

  def __str__(self) -> str:
    why = f" ({self.why})" if self.why else ""
    return f"{self.path}: {self.recorded!r} (workdir) vs {self.current!r} (now){why}"


@dataclasses.dataclass(frozen=True)
class ConfigComparison:
  """`blocking`: fields that change the saved state; `allowed`: every other difference."""
  record_path: str
  blocking: list[FieldDiff]
  allowed: list[FieldDiff]


_ABSENT = "(absent)"


def _as_json(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """The config as `config.json` stores it (tuples become lists, other values strings)."""
  data = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  return json.loads(json.dumps(data, sort_keys=True, default=str))


def _flat(data: dict[str, Any]) -> dict[str, Any]:
  return traverse_util.flatten_dict(data, sep=".")


def _write_json_atomic(data: dict[str, Any], path: str) -> str:
  """Writes `path` through a temporary file and a rename: a kill leaves the old file or the
  new one, never a truncated one."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(data, f, indent=2, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def record_path(workdir: str) -> str:
  """`workdir/config.json`, the training config record."""
  return os.path.join(workdir, CONFIG_FILE)


def record_training_config(config: ml_collections.ConfigDict, workdir: str) -> Optional[str]:
  """Writes `config` as the workdir's training record; call only when a (validated) training
  starts without any checkpoint, on every process (process 0 writes).

  An existing record is replaced then: it described a training that saved nothing.

  Returns:
    The path written (None on processes other than 0).
  """
  if jax.process_index() != 0:
    return None
  return _write_json_atomic(_as_json(config), record_path(workdir))


def read_training_config(workdir: str) -> Optional[dict[str, Any]]:
  """The recorded training config (nested dict), or None when the workdir has no record.

  Raises:
    WorkdirError: the record exists but is not a JSON object (names the file).
  """
  path = record_path(workdir)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirError(f"cannot read the training config record {path}: {e}; restore it, or "
                       f"delete it to skip the comparison with the current config") from None
  if not isinstance(data, dict):
    raise WorkdirError(f"the training config record {path} is not a JSON object")
  return data


def _unreported(path: str) -> bool:
  return any(path.startswith(f) if f.endswith(".") else path == f for f in UNREPORTED_FIELDS)


def _classify(path: str, recorded: Any, current: Any) -> tuple[bool, str]:
  """`(blocking, why)` for a differing field."""
  if path in _STATE_SWITCHES:
    why, on = _STATE_SWITCHES[path]
    try:
      return bool(on(recorded)) != bool(on(current)), why
    except TypeError:  # a non-number on either side: treat as a state change
      return True, why
  blocking = path.startswith("model.") and path not in _FREE_MODEL_FIELDS
  return blocking, ""


def compare_training_config(config: ml_collections.ConfigDict,
                            workdir: str) -> Optional[ConfigComparison]:
  """Differences between the workdir's training record and `config`, or None without record.

  Fields are dotted paths; a field missing on one side shows as '(absent)'. Fields in
  `UNREPORTED_FIELDS` are not compared.
  """
  recorded = read_training_config(workdir)
  if recorded is None:
    return None
  old, new = _flat(recorded), _flat(_as_json(config))
  blocking, allowed = [], []
  for path in sorted(set(old) | set(new)):
    a, b = old.get(path, _ABSENT), new.get(path, _ABSENT)
    if a == b or _unreported(path):
      continue
    is_blocking, why = _classify(path, a, b)
    (blocking if is_blocking else allowed).append(FieldDiff(path, a, b, why))
  return ConfigComparison(record_path(workdir), blocking, allowed)


def check_training_config(config: ml_collections.ConfigDict, workdir: str, *,
                          action: str = "resume") -> Optional[ConfigComparison]:
  """Compares `config` with the workdir's training record before a checkpoint is restored.

  Allowed differences are logged; a missing record is logged (nothing to compare with).

  Args:
    config: the current (validated) config.
    workdir: the run directory.
    action: what is about to happen, for the messages ('resume', 'eval', 'predict').
  Returns:
    The comparison, or None when the workdir has no record.
  Raises:
    ModelConfigMismatchError: state-changing fields differ; the message lists every one.
  """
  comparison = compare_training_config(config, workdir)
  if comparison is None:
    log.log(f"note: {record_path(workdir)} does not exist, so the current config cannot "
                  f"be compared with the one the checkpoints were trained with")
    return None
  if comparison.blocking:
    lines = "\n  ".join(str(d) for d in comparison.blocking)
    raise ModelConfigMismatchError(
        f"cannot {action} {workdir}: its checkpoints were trained with another model config "
        f"({comparison.record_path}); these fields differ:\n  {lines}\n"
        f"Use the workdir's values (or --config=... with the same model), or another --workdir.")
  if comparison.allowed:
    log.log(f"{action}: config differs from the workdir's training config in "
                  f"{len(comparison.allowed)} field(s) that do not change the model: " +
                  "; ".join(str(d) for d in comparison.allowed))
  return comparison


def write_run_config(config: ml_collections.ConfigDict, out_dir: str, workdir: str) -> str:
  """Writes the resolved config of an eval/predict run as `out_dir/config.json`, beside its
  outputs (eval: `workdir/eval/<data>/<split>/step_<N>/`; predict: `predict.output_dir`).
  Call on process 0 only.

  Raises:
    WorkdirError: `out_dir/config.json` is the workdir's training record (e.g.
      `predict.output_dir` = the workdir), which is never overwritten.
  """
  path = os.path.join(out_dir, CONFIG_FILE)
  if os.path.realpath(path) == os.path.realpath(record_path(workdir)):
    raise WorkdirError(f"{out_dir} is the workdir: its {CONFIG_FILE} is the training config "
                       f"record and is not overwritten; write the outputs to another folder")
  return _write_json_atomic(_as_json(config), path)
