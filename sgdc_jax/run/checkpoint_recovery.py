"""Restore the newest intact checkpoint: damaged ones are named, skipped and kept.

`restore_newest_intact` tries the steps of an Orbax `CheckpointManager` newest first. A step
whose restore fails (a truncated or corrupted TensorStore/OCDBT file, a deleted item folder,
unreadable metadata) or whose state does not match the fingerprint written at save time gets a
warning naming the step and the damage, and the next older step is tried; when none is intact
the error lists every step with its damage. Nothing is ever deleted: for training
(`set_aside_to`), the damaged steps newer than the one restored are moved out of the
checkpoint directory, because the resumed run saves those step numbers again (Orbax refuses to
save over an existing step, and its retention would otherwise delete them).

Why a fingerprint: OCDBT checks its b-tree nodes (CRC-32C), but a flipped byte inside a
compressed array chunk can decode to wrong numbers without any error. `fingerprint(state)` is,
per leaf, a wrapping uint32 sum of the leaf's bit patterns weighted by odd position weights
(computed by one jitted reduction, exact for any sharding: integer addition does not depend on
the order), so any change of one element changes it. Saved as the JSON item
`FINGERPRINT_ITEM` beside the state (`fingerprint_save_args`), it is checked after every
restore; checkpoints saved without it are restored unverified.

With several JAX processes every process tries the same step and they agree on the verdict
(one failing process makes it damaged for all), so all restore the same step.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax import lax
from jax.experimental import multihost_utils

from sgdc_jax import log
from sgdc_jax.errors import NoIntactCheckpointError, chain
from sgdc_jax.run import sharding as shd

FINGERPRINT_ITEM = "fingerprint"
_REASON_CHARS = 300

ItemArgs = Mapping[str, ocp.args.CheckpointArgs]


@dataclasses.dataclass(frozen=True)
class Damage:
  """A checkpoint step that could not be restored intact, and why (one line)."""
  step: int
  reason: str

  def __str__(self) -> str:
    return f"step {self.step}: {self.reason}"


@dataclasses.dataclass
class Recovered:
  """What `restore_newest_intact` found.

  Attributes:
    step: the restored step.
    items: item name -> restored value (the fingerprint item excluded).
    damaged: the newer steps skipped, newest first.
    verified: the state matched a fingerprint saved with it (False: saved without one).
    set_aside: where the damaged steps were moved (empty unless `set_aside_to` was given).
  """
  step: int
  items: dict[str, Any]
  damaged: list[Damage]
  verified: bool
  set_aside: list[str] = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------------------ fingerprint


def _leaf_sum(x: jax.Array) -> jax.Array:
  """uint32 sum over elements of bits(x[i]) * (2 * i + 1), i the row-major position (wraps)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    bits = x.astype(jnp.uint32)
  elif x.dtype.itemsize in (1, 2):
    bits = lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}")).astype(
        jnp.uint32)
  else:  # 4 bytes -> same shape; 8 bytes -> a trailing axis of two words
    bits = lax.bitcast_convert_type(x, jnp.uint32)
  # Position from iotas, not a reshape of the (possibly sharded) array.
  index = jnp.zeros(bits.shape, jnp.uint32)
  for axis, size in enumerate(bits.shape):
    index = index * jnp.uint32(size) + lax.broadcasted_iota(jnp.uint32, bits.shape, axis)
  return jnp.sum(bits * (index * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)


_fingerprint_sums = jax.jit(lambda tree: jax.tree.map(_leaf_sum, tree))


def _path_name(path) -> str:
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def fingerprint(tree: Any) -> dict[str, str]:
  """`{leaf path: '<shape> <dtype> <8 hex digits>'}` for every array leaf of `tree`.

  Equal trees give equal fingerprints whatever their sharding or device; a change of any
  element changes its leaf's entry. Call on every process (the sums are jitted collectives).
  """
  sums = _fingerprint_sums(tree)
  out = {}
  for (path, leaf), (_, s) in zip(jax.tree_util.tree_leaves_with_path(tree),
                                  jax.tree_util.tree_leaves_with_path(sums)):
    value = int(np.asarray(s.addressable_data(0)) if isinstance(s, jax.Array) else s)
    shape = "x".join(map(str, np.shape(leaf))) or "scalar"
    out[_path_name(path)] = f"{shape} {jnp.dtype(leaf.dtype).name} {value:08x}"
  return out


def fingerprint_save_args(state: Any) -> ocp.args.JsonSave:
  """The `FINGERPRINT_ITEM` save args for `state` (add them to the checkpoint's Composite)."""
  return ocp.args.JsonSave(fingerprint(state))


def fingerprint_mismatch(state: Any, saved: Mapping[str, str]) -> Optional[str]:
  """None when `state` matches the saved fingerprint, else a description of the differences."""
  now = fingerprint(state)
  differ = sorted(k for k in set(now) | set(saved) if now.get(k) != saved.get(k))
  if not differ:
    return None
  shown = ", ".join(differ[:3]) + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")
  return (f"{len(differ)} array(s) differ from the fingerprint written at save ({shown}): "
          f"corrupted data that the storage layer did not detect")


# ---------------------------------------------------------------------------------- restore


def _one_line(error: BaseException) -> str:
  text = str(error).strip().strip("'\"")
  for marker in (" [tensorstore_spec", "See full TensorStore details", "\n"):
    text = text.split(marker)[0]
  text = re.sub(r"\s+", " ", text).strip(" .:")
  if len(text) > _REASON_CHARS:
    # TensorStore nests "Error opening ...: Error reading ...: <cause>": keep the status code
    # and the innermost parts, where the cause is.
    parts = text.split(": ")
    head = parts[0] + ": ..." if re.fullmatch(r"[A-Z_]+", parts[0]) else "..."
    tail = []
    while parts[1:] and len(": ".join([parts[-1]] + tail)) <= _REASON_CHARS - len(head):
      tail.insert(0, parts.pop())
    text = f"{head} {': '.join(tail)}" if tail else text[:_REASON_CHARS] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def describe_error(error: BaseException) -> str:
  """One line for a restore failure: the exception and, when it wraps another, the innermost
  cause (type and message, without TensorStore's JSON spec dump)."""
  *_, root = chain(error)
  outer = _one_line(error)
  return outer if root is error else f"{outer}; cause: {_one_line(root)}"


def _all_processes_ok(ok: bool) -> bool:
  if jax.process_count() == 1:
    return ok
  shd.barrier("checkpoint_verdict")
  return bool(np.all(multihost_utils.process_allgather(np.array([int(ok)], np.int32))))


def step_path(manager: ocp.CheckpointManager, step: int) -> str:
  """The folder of `step` (Orbax's standard step names, as this project's manager uses)."""
  return str(ocp.step.standard_name_format().find_step(manager.directory, step).path)


def _try_restore(manager: ocp.CheckpointManager, step: int, items: ItemArgs,
                 state_item: str) -> tuple[Optional[dict[str, Any]], bool, Optional[str]]:
  """`(restored items or None, verified, reason)` for one step on this process."""
  try:
    args = dict(items)
    has_fingerprint = os.path.isdir(os.path.join(step_path(manager, step), FINGERPRINT_ITEM))
    if has_fingerprint:
      args[FINGERPRINT_ITEM] = ocp.args.JsonRestore()
    restored = dict(manager.restore(step, args=ocp.args.Composite(**args)).items())
    saved = restored.pop(FINGERPRINT_ITEM, None)
    if has_fingerprint:
      if not isinstance(saved, dict):
        return None, False, f"the {FINGERPRINT_ITEM} item is not a JSON object"
      mismatch = fingerprint_mismatch(restored[state_item], saved)
      if mismatch:
        return None, False, mismatch
    return restored, has_fingerprint, None
  except Exception as e:  # pylint: disable=broad-except
    # TensorStore raises plain `Exception`s; anything that stops a restore is damage here.
    return None, False, describe_error(e)


def _set_aside(manager: ocp.CheckpointManager, damaged: Sequence[Damage],
               destination: str) -> list[str]:
  """Moves the damaged steps' folders into `destination` (process 0) and reloads the manager."""
  moved = []
  for d in damaged:
    source = step_path(manager, d.step)
    target = os.path.join(destination, os.path.basename(source))
    n = 1
    while os.path.exists(target):
      target = os.path.join(destination, f"{os.path.basename(source)}.{n}")
      n += 1
    if jax.process_index() == 0:
      os.makedirs(destination, exist_ok=True)
      os.replace(source, target)
    moved.append(target)
  shd.barrier("checkpoint_set_aside")
  manager.reload()
  return moved


def restore_newest_intact(manager: ocp.CheckpointManager,
                          items: Union[ItemArgs, Callable[[int], ItemArgs]], *,
                          steps: Optional[Sequence[int]] = None, state_item: str = "state",
                          set_aside_to: Optional[str] = None) -> Recovered:
  """Restores the newest step of `manager` that restores intact; see the module docstring.

  Call on every process.

  Args:
    manager: the run's `CheckpointManager` (item names include `state_item`).
    items: item name -> restore args, e.g. `{'state': ocp.args.StandardRestore(abstract_state),
      'data': grain.checkpoint.CheckpointRestore(iterator)}`, or a function of the step
      returning them (for args that must be fresh per attempt).
    steps: the candidates in the order to try (default `manager.all_steps()`, newest first;
      eval of the best checkpoint passes the best step first).
    state_item: the item checked against the saved fingerprint.
    set_aside_to: training only: once a step is restored, the damaged steps tried before it
      are moved into this folder (never deleted) and the manager is reloaded. None (eval,
      predict) leaves the directory as it is.
  Returns:
    `Recovered`.
  Raises:
    NoIntactCheckpointError: no candidate restored intact (FileNotFoundError when there are
      no candidates at all); nothing is moved then.
  """
  candidates = sorted(manager.all_steps(), reverse=True) if steps is None else list(steps)
  if not candidates:
    raise FileNotFoundError(f"no checkpoints in {manager.directory}")
  damaged: list[Damage] = []
  for step in candidates:
    restored, verified, reason = _try_restore(
        manager, step, items(step) if callable(items) else items, state_item)
    if _all_processes_ok(reason is None):
      moved = _set_aside(manager, damaged, set_aside_to) if (set_aside_to and damaged) else []
      if moved:
        log.log(f"moved the damaged checkpoint(s) to {set_aside_to} (kept for "
                      f"inspection; the resumed run saves these steps again): {moved}")
      return Recovered(step, restored, damaged, verified, moved)
    d = Damage(step, reason or "failed on another process")
    damaged.append(d)
    rest = candidates[len(damaged):]
    log.log(f"warning: checkpoint {step_path(manager, step)} is damaged ({d.reason}); "
                  + (f"trying step {rest[0]}" if rest else "no other checkpoint"))
  listing = "\n  ".join(str(d) for d in damaged)
  raise NoIntactCheckpointError(
      f"no intact checkpoint in {manager.directory} (nothing was deleted):\n  {listing}\n"
      f"If every step fails the same way, the checkpoints probably do not match the current "
      f"config rather than being damaged.")
