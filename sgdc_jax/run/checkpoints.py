"""Orbax checkpoints (train state + Grain iterator state) and SIGTERM-triggered saves.

One `orbax.checkpoint.CheckpointManager` per run directory with two items:
`'state'` (the `TrainState` pytree, `StandardSave`/`StandardRestore`) and `'data'`
(the Grain iterator, `grain.checkpoint.CheckpointSave`/`CheckpointRestore`, one JSON file per
process). Retention is Orbax's own: `AnyPreservationPolicy` of `LatestN(1)` (the latest
checkpoint) and `BestN(keep_best)` by validation Dice (checkpoints saved with
`metrics={'val_dice': ...}`; periodic saves without metrics are dropped once a newer one exists).
Preemption: with several processes, `CheckpointManager.reached_preemption` (JAX's preemption
sync service: every process reaches the same save step); with one, a local SIGTERM flag.

A full disk (`checkpoint_space`): before each save a warning when the free space is smaller
than the last complete checkpoint; a save that fails for lack of space (seen when Orbax's
background write is waited for: at the next save, `wait_until_finished` or `close`) has its
temporary folder removed at once and raises one `CheckpointSaveError` naming the step, the
directory and the last complete checkpoint; Orbax's thread tracebacks about it are dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import threading
from typing import Any, Optional

import grain
import jax
import orbax.checkpoint as ocp
from absl import flags

from sgdc_jax import log
from sgdc_jax.errors import CheckpointSaveError
from sgdc_jax.run import checkpoint_recovery, checkpoint_space, sharding

BEST_METRIC = "val_dice"
# Orbax's warnings about what this module does on purpose, silenced where it does it: opening a
# read-only manager (eval, predict, diagnose), and periodic or preemption saves without
# validation metrics (`OnlyWithMetrics` ranks only the validated ones).
_READ_ONLY_NOTICE = "Given directory is read only"
_NO_METRICS_NOTICE = "Requested `tracked_metric`; did not provide metrics"


class _DropMessage(logging.Filter):
  """Drops the log records whose message template starts with `prefix`."""

  def __init__(self, prefix: str):
    super().__init__()
    self.prefix = prefix

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def _without_log_message(prefix: Optional[str], logger: str = "absl"):
  """Silences one message of `logger` (absl's Python logger, which Orbax logs to) while the
  block runs; every other message passes. `prefix=None` silences nothing."""
  if prefix is None:
    yield
    return
  drop = _DropMessage(prefix)
  logging.getLogger(logger).addFilter(drop)
  try:
    yield
  finally:
    logging.getLogger(logger).removeFilter(drop)


def _use_distributed_barriers() -> None:
  """Makes Orbax synchronise processes through the JAX coordination service (long timeouts)
  instead of device collectives: on CPU every new collective group starts a Gloo context whose
  key exchange gives up after 30 s, too short when hosts drift apart under load."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  if "experimental_orbax_use_distributed_barrier" in flags.FLAGS:
    flags.FLAGS.experimental_orbax_use_distributed_barrier = True


def _best_metric(metrics: dict[str, float]) -> float:
  """Validation Dice for ranking; NaN ranks worst."""
  v = float(metrics[BEST_METRIC])
  return -math.inf if math.isnan(v) else v


@dataclasses.dataclass
class OnlyWithMetrics(ocp.checkpoint_managers.PreservationPolicy):
  """Applies `policy` to the checkpoints saved with metrics; the others are not preserved by it.

  Orbax's `BestN` keeps everything while there are at most `n` checkpoints, periodic saves
  included; ranked among the validated checkpoints only, a periodic save is dropped as soon as
  a newer checkpoint exists.
  """
  policy: ocp.checkpoint_managers.PreservationPolicy

  def should_preserve(self, checkpoints, *, context=None):
    """One bool per checkpoint info (`.step`, `.metrics`), oldest first."""
    scored = [i for i, c in enumerate(checkpoints) if c.metrics is not None]
    keep = self.policy.should_preserve([checkpoints[i] for i in scored], context=context)
    out = [False] * len(checkpoints)
    for i, k in zip(scored, keep):
      out[i] = bool(k)
    return out


def retention_policy(keep_best: int) -> ocp.checkpoint_managers.AnyPreservationPolicy:
  """The latest checkpoint plus the `keep_best` with the highest `val_dice` (NaN worst, ties:
  the later step): Orbax's `LatestN(1)` or `BestN(keep_best)`."""
  return ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=1),
      OnlyWithMetrics(ocp.checkpoint_managers.BestN(get_metric_fn=_best_metric, n=keep_best))])


def last_complete_step(directory: str, excluding: Optional[int] = None) -> Optional[int]:
  """The newest finalised step in `directory` other than `excluding` (what a rerun resumes
  from), or None; the temporary folder of a save in flight or failed is not a step."""
  steps = [s for s in ocp.utils.checkpoint_steps(directory) if s != excluding]
  return max(steps) if steps else None


class Checkpointer:
  """Thin wrapper over ``ocp.CheckpointManager`` for this project's two items."""

  def __init__(self, directory: str, *, keep_best: int = 3, read_only: bool = False):
    """Opens (or creates) the checkpoint directory.

    Args:
      directory: absolute or relative path; created if missing (unless ``read_only``).
      keep_best: number of best-by-``val_dice`` checkpoints kept besides the latest.
      read_only: open for restoring only (eval/predict).
    """
    self.directory = os.path.abspath(directory)
    if jax.process_count() > 1:
      _use_distributed_barriers()
    # Read-only: the save interval Orbax would otherwise reset (and warn about) is 0 already.
    options = ocp.CheckpointManagerOptions(
        best_fn=_best_metric, best_mode="max", preservation_policy=retention_policy(keep_best),
        create=not read_only, read_only=read_only, enable_async_checkpointing=True,
        save_interval_steps=0 if read_only else 1)
    with _without_log_message(_READ_ONLY_NOTICE):
      self._mngr = ocp.CheckpointManager(
          self.directory, options=options,
          item_names=("state", "data", checkpoint_recovery.FINGERPRINT_ITEM))
    self._pending: Optional[int] = None  # the step whose asynchronous save is not waited for
    self._last_size: tuple[int, int] = (-1, 0)  # (step, bytes) of the last complete save
    if not read_only:
      checkpoint_space.silence_disk_full_noise()

  def save(self, step: int, state: Any, data_iter: Any = None,
           metrics: Optional[dict[str, float]] = None) -> None:
    """Saves ``state`` (and the iterator state when ``data_iter`` is given) at ``step``.

    Asynchronous: call ``wait_until_finished`` before reading the files or exiting.

    Raises:
      CheckpointSaveError: the disk is full (this save's or the previous one's; see the
        module docstring).
    """
    # The previous save first, so that its failure is reported as its own.
    self.wait_until_finished()
    self._warn_if_short(step)
    sharding.barrier("checkpoint_save")
    items = {"state": ocp.args.StandardSave(state)}
    items[checkpoint_recovery.FINGERPRINT_ITEM] = checkpoint_recovery.fingerprint_save_args(state)
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    with _without_log_message(_NO_METRICS_NOTICE if metrics is None else None):
      try:
        self._mngr.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
      except Exception as e:  # pylint: disable=broad-except  (re-raised unless the disk is full)
        self._raise_save_error(step, e)
    self._pending = step

  def _warn_if_short(self, step: int) -> None:
    """Logs a warning when the free space is smaller than the last complete checkpoint."""
    last = self._mngr.latest_step()
    if last is None:
      return
    if self._last_size[0] != last:  # each step's folder is walked once
      self._last_size = (last, checkpoint_space.tree_bytes(
          checkpoint_recovery.step_path(self._mngr, last)))
    warning = checkpoint_space.space_warning(self.directory, step, last, self._last_size[1])
    if warning:
      log.log(warning)

  def _raise_save_error(self, step: Optional[int], error: Exception):
    """Re-raises `error`, or, when the disk is full, removes `step`'s partial folder and raises
    `CheckpointSaveError` (one line: the step, what was removed, the last complete step)."""
    if step is None or not checkpoint_space.is_disk_full(error):
      raise error
    removed = checkpoint_space.remove_partial(self.directory, step)
    complete = last_complete_step(self.directory, excluding=step)
    last, rerun = (f"the last complete checkpoint is step {complete}", "resume") if (
        complete is not None) else ("no checkpoint is complete yet", "start again from step 0")
    free = checkpoint_space.free_bytes(self.directory)
    raise CheckpointSaveError(
        f"no space left on device while saving checkpoint {step} to {self.directory}"
        + (f" ({checkpoint_space.megabytes(free)} free)" if free is not None else "")
        + ("; removed the partial save" if removed else "")
        + f"; {last}; free space and rerun the same command to {rerun}") from error

  def latest_step(self) -> Optional[int]:
    """Most recent saved step, or None."""
    return self._mngr.latest_step()

  def best_step(self) -> Optional[int]:
    """Step with the highest ``val_dice`` (the latest if none has metrics), or None."""
    best = self._mngr.best_step()
    return best if best is not None else self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    """All steps currently on disk."""
    return list(self._mngr.all_steps())

  def restore(self, step: int, abstract_state: Any, data_iter: Any = None) -> tuple[Any, Any]:
    """Restores the state (sharded as ``abstract_state``'s shardings) and, optionally, the
    iterator position in place.

    Args:
      step: a step from ``all_steps()``.
      abstract_state: pytree of ``jax.ShapeDtypeStruct`` with shardings.
      data_iter: a freshly created iterator of the same pipeline, or None to skip the data item.
    Returns:
      ``(state, data_iter)``.
    """
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    out = self._mngr.restore(step, args=ocp.args.Composite(**items))
    return out["state"], (out["data"] if data_iter is not None else None)

  def restore_intact(self, abstract_state: Any, data_iter: Any = None, *,
                     prefer: Optional[int] = None,
                     set_aside_to: Optional[str] = None) -> tuple[Any, Any, int]:
    """``(state, data_iter, step)`` of the newest checkpoint that restores intact."""
    steps = None
    if prefer is not None:
      steps = [prefer] + [s for s in sorted(self.all_steps(), reverse=True) if s != prefer]
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    found = checkpoint_recovery.restore_newest_intact(self._mngr, items, steps=steps,
                                                      set_aside_to=set_aside_to)
    return found.items["state"], found.items.get("data"), found.step

  def reached_preemption(self, step: int) -> bool:
    """Orbax/JAX multi-process preemption consensus (False without `jax.distributed`)."""
    return self._mngr.reached_preemption(step)

  def wait_until_finished(self) -> None:
    """Blocks until pending asynchronous saves are on disk.

    Raises:
      CheckpointSaveError: the pending save failed for lack of space (raised once).
    """
    step, self._pending = self._pending, None
    try:
      self._mngr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless the disk is full)
      self._raise_save_error(step, e)

  def close(self) -> None:
    """Waits for pending saves and releases the manager (raises as `wait_until_finished`)."""
    self.wait_until_finished()
    self._mngr.close()


class PreemptionFlag:
  """Tells the train loop, consistently on every process, when to save and stop after SIGTERM.

  With several processes JAX's preemption sync service (started by `jax.distributed`) catches
  SIGTERM and `checkpointer.reached_preemption(step)` names the same step everywhere; with one
  process (no coordination service) a local SIGTERM handler sets the flag, restored by
  `restore()`.
  """

  def __init__(self, checkpointer: Optional[Checkpointer] = None):
    self._event = threading.Event()
    self._checkpointer = checkpointer
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):  # pylint: disable=unused-argument
    self._event.set()

  @property
  def requested(self) -> bool:
    """Whether this process received SIGTERM (single process)."""
    return self._event.is_set()

  def should_stop(self, step: int) -> bool:
    """True when the loop should save and stop after `step` (same answer on all processes)."""
    if jax.process_count() > 1 and self._checkpointer is not None:
      return self._checkpointer.reached_preemption(step)
    return self.requested

  def restore(self) -> None:
    """Reinstates the SIGTERM handler that was active before."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
