"""The record of how a workdir was trained, and the check of a later config against it.

`workdir/config.json` is written once, when a training starts without a checkpoint
(`record_training_config`), and never by a resumed training, eval, predict or a run that failed
its config check. On resume (and before eval/predict restore a checkpoint) the current config is
compared with it (`check_training_config`): fields that change the saved state
(`STATE_FIELDS`) give one error listing each as `model.encoder: 'resnet50' (workdir) vs
'resnet18' (now)`; other differences (num_steps, log_every, the data dir, ...) are allowed and
logged, except the settings of how an eval or predict run reads and writes
(`UNREPORTED_FIELDS`: `predict.*`, which checkpoint, overlays, eval batch size, the inference
resolution and windows, the compilation cache), which never concern the trained model.

Eval and predict write their resolved config beside their outputs (`write_run_config`), never
over the record.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any, Optional

import jax
import ml_collections
from flax import traverse_util

from sgdc_jax import log
from sgdc_jax.errors import ModelConfigMismatchError, WorkdirError

CONFIG_FILE = "config.json"


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
UNREPORTED_FIELDS = ("predict.", "eval.checkpoint", "eval.overlays", "eval.output_dir",
                     "eval.batch_size", "eval.resolution", "eval.window", "eval.overlap",
                     "eval.window_batch", "eval.tta", "compilation_cache_dir")


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


# Fields added after records were first written, with the value that reproduces what a record
# without them was trained with: absent in the record and this value now is no difference.
LATER_FIELDS = {"model.output_stride": 4}


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
    if a == b or _unreported(path) or (a == _ABSENT and LATER_FIELDS.get(path, _ABSENT) == b):
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
