"""Orbax checkpoints (train state + Grain iterator state) and SIGTERM-triggered saves.

One ``orbax.checkpoint.CheckpointManager`` per run directory with two items:
``'state'`` (the ``TrainState`` pytree, ``StandardSave``/``StandardRestore``) and ``'data'``
(the Grain iterator, ``grain.checkpoint.CheckpointSave``/``CheckpointRestore``, one JSON file per
process). Retention: the latest checkpoint plus the ``keep_best`` best by validation Dice
(checkpoints saved with ``metrics={'val_dice': ...}``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
from typing import Any, Optional

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

BEST_METRIC = "val_dice"


def _use_distributed_barriers() -> None:
  """Makes Orbax synchronise processes through the JAX coordination service (long timeouts)
  instead of device collectives: on CPU every new collective group starts a Gloo context whose
  key exchange gives up after 30 s, too short when hosts drift apart under load."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  if "experimental_orbax_use_distributed_barrier" in flags.FLAGS:
    flags.FLAGS.experimental_orbax_use_distributed_barrier = True


@dataclasses.dataclass
class LatestAndBest:
  """Orbax preservation policy: the latest checkpoint plus the ``keep_best`` with the highest
  ``val_dice`` (NaN counts as worst; ties go to the later step). Periodic checkpoints without
  metrics are dropped as soon as a newer checkpoint exists."""
  keep_best: int

  def should_preserve(self, checkpoints, *, context=None):  # pylint: disable=unused-argument
    """One bool per ``PolicyCheckpointInfo`` (``.step``, ``.metrics``)."""
    n = len(checkpoints)
    if n == 0:
      return []
    latest = max(range(n), key=lambda i: checkpoints[i].step)

    def score(i):
      v = float(checkpoints[i].metrics[BEST_METRIC])
      return (-math.inf if math.isnan(v) else v, checkpoints[i].step)

    scored = [i for i, c in enumerate(checkpoints)
              if c.metrics is not None and BEST_METRIC in c.metrics]
    keep = set(sorted(scored, key=score)[-self.keep_best:]) if self.keep_best > 0 else set()
    keep.add(latest)
    return [i in keep for i in range(n)]


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
    policy = LatestAndBest(keep_best=keep_best)
    options = ocp.CheckpointManagerOptions(
        best_fn=lambda m: m[BEST_METRIC], best_mode="max", preservation_policy=policy,
        create=not read_only, read_only=read_only, enable_async_checkpointing=True)
    self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                       item_names=("state", "data"))

  def save(self, step: int, state: Any, data_iter: Any = None,
           metrics: Optional[dict[str, float]] = None) -> None:
    """Saves ``state`` (and the iterator state when ``data_iter`` is given) at ``step``.

    Asynchronous: call ``wait_until_finished`` before reading the files or exiting.
    """
    from sgdc_jax import sharding  # pylint: disable=g-import-not-at-top
    sharding.barrier("checkpoint_save")
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self._mngr.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

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

  def restore_latest(self, abstract_state: Any, data_iter: Any) -> Optional[tuple[Any, Any, int]]:
    """``(state, data_iter, step)`` from the latest checkpoint, or None when there is none."""
    step = self.latest_step()
    if step is None:
      return None
    state, data_iter = self.restore(step, abstract_state, data_iter)
    return state, data_iter, step

  def metrics(self, step: int) -> Optional[dict[str, float]]:
    """Metrics saved with ``step`` (None if it was a periodic save)."""
    return self._mngr.metrics(step)

  def wait_until_finished(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._mngr.close()


class PreemptionFlag:
  """Records SIGTERM and tells the train loop, consistently on every process, when to stop.

  With several processes the local flags are OR-ed across processes every ``check_every`` steps
  (all processes must save at the same step); with one process the flag is read every step.
  The previous SIGTERM handler is restored by ``restore()``.
  """

  def __init__(self, check_every: int = 10):
    self._event = threading.Event()
    self._check_every = max(int(check_every), 1)
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):  # pylint: disable=unused-argument
    self._event.set()

  @property
  def requested(self) -> bool:
    """Whether this process received SIGTERM."""
    return self._event.is_set()

  def should_stop(self, step: int) -> bool:
    """True when the loop should save and stop after ``step`` (same answer on all processes)."""
    if jax.process_count() == 1:
      return self.requested
    if step % self._check_every:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    from sgdc_jax import sharding  # pylint: disable=g-import-not-at-top
    sharding.barrier("preemption_check")
    flags = multihost_utils.process_allgather(np.array([self.requested], np.int32))
    return bool(np.any(flags))

  def restore(self) -> None:
    """Reinstates the SIGTERM handler that was active before."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
