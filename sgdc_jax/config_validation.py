"""Config validation before any compute, and writing the resolved config to the workdir.

``validate_config`` collects every problem (unknown or missing field, wrong type, impossible value
such as a batch size the devices cannot split, a missing dataset directory) and raises one
``ConfigError`` whose message lists them, each naming the field.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import ml_collections
import numpy as np

MODES = ("train", "eval", "predict")


class ConfigError(ValueError):
  """The config cannot be run; the message lists every problem found."""


def is_int(v: Any) -> bool:
  """True for Python/NumPy integers (not bools)."""
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
  """True for Python/NumPy ints and floats (not bools)."""
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


# field -> (type check, description) for the sections this module owns.
_SCHEMA: dict[str, tuple[Any, str]] = {
    "seed": (is_int, "an integer"),
    "optimizer.learning_rate": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "optimizer.weight_decay": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "optimizer.b1": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "optimizer.b2": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "optimizer.eps": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "optimizer.warmup_steps": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "optimizer.min_lr_ratio": (lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "optimizer.grad_clip_norm": (is_number, "a number (<= 0 disables clipping)"),
    "optimizer.ema_decay": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "train.num_steps": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "train.batch_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "train.log_every": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "train.eval_every": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "train.checkpoint_every": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "train.keep_best": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "train.preemption_check_every": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "train.profile_steps": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "train.profile_first_step": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "mesh.data": (lambda v: is_int(v) and (v == -1 or v >= 1), "-1 or an integer >= 1"),
    "mesh.fsdp": (lambda v: isinstance(v, bool), "true or false"),
    "mesh.fsdp_min_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "loss.lambda_edge": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "eval.batch_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "eval.overlays": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "eval.use_ema": (lambda v: isinstance(v, bool), "true or false"),
    "eval.checkpoint": (lambda v: v in ("best", "latest"), "'best' or 'latest'"),
    "predict.input_dir": (lambda v: isinstance(v, str), "a directory path"),
    "predict.output_dir": (lambda v: isinstance(v, str), "a directory path"),
    "predict.save_probabilities": (lambda v: isinstance(v, bool), "true or false"),
    "predict.batch_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
}


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      out.update(_leaves(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _default_config() -> ml_collections.ConfigDict:
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "default.py")
  spec = importlib.util.spec_from_file_location("sgdc_configs_default", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def validate_config(config: ml_collections.ConfigDict, *, mode: str = "train",
                    device_count: Optional[int] = None, process_count: Optional[int] = None,
                    reference: Optional[ml_collections.ConfigDict] = None) -> None:
  """Checks ``config`` before anything is computed.

  Args:
    config: the resolved config (after command-line overrides).
    mode: 'train', 'eval' or 'predict' (predict also checks ``predict.input_dir``).
    device_count: global device count (default ``jax.device_count()``).
    process_count: JAX process count (default ``jax.process_count()``).
    reference: the config whose field names and types are expected (default
      ``configs/default.py``).
  Raises:
    ConfigError: listing every problem, one per line, each naming its field.
  """
  import jax  # pylint: disable=g-import-not-at-top
  device_count = jax.device_count() if device_count is None else device_count
  process_count = jax.process_count() if process_count is None else process_count
  problems: list[str] = []
  if mode not in MODES:
    problems.append(f"--mode={mode!r}: expected one of {MODES}")
  ref = _leaves(reference if reference is not None else _default_config())
  given = _leaves(config)
  for name in sorted(set(given) - set(ref)):
    problems.append(f"{name}: unknown field")
  for name in sorted(set(ref) - set(given)):
    problems.append(f"{name}: missing field")
  structural = bool(problems)
  bad = set()
  for name, (check, expected) in _SCHEMA.items():
    if name in given and not check(given[name]):
      problems.append(f"{name}: expected {expected}, got {given[name]!r}")
      bad.add(name)
  for name in sorted(set(given) & set(ref)):
    if name in _SCHEMA:
      continue
    want, got = ref[name], given[name]
    if want is None or got is None:
      continue
    if isinstance(want, bool) != isinstance(got, bool) or (
        is_number(want) and not is_number(got)) or (isinstance(want, str) and not isinstance(got, str)):
      problems.append(f"{name}: expected a {type(want).__name__}, got {got!r}")
      bad.add(name)
  if structural:  # unknown/missing fields: the checks below assume the fields exist
    raise ConfigError("invalid config:\n  " + "\n  ".join(problems))

  mesh_data = device_count if ("mesh.data" in bad or config.mesh.data == -1) else config.mesh.data
  if mesh_data > device_count:
    problems.append(f"mesh.data: {mesh_data} devices requested, {device_count} available")
  for name in ("train.batch_size", "eval.batch_size", "predict.batch_size"):
    b = _get(config, name)
    if name not in bad and (mode == "train" or name != "train.batch_size"):
      if b % mesh_data:
        problems.append(f"{name}: {b} is not divisible by the {mesh_data} devices of the mesh")
      elif b % process_count:
        problems.append(f"{name}: {b} is not divisible by the {process_count} processes")
  if (mode == "train" and not bad & {"optimizer.warmup_steps", "train.num_steps"}
      and config.optimizer.warmup_steps >= config.train.num_steps):
    problems.append(f"optimizer.warmup_steps: {config.optimizer.warmup_steps} must be smaller "
                    f"than train.num_steps={config.train.num_steps}")
  try:
    from sgdc_jax.models import validate_model_config  # pylint: disable=g-import-not-at-top
    validate_model_config(config.model)
  except (ValueError, TypeError) as e:
    problems.append(str(e))
  size = config.data.get("image_size")
  if is_int(size) and (size < 32 or size % 32):
    problems.append(f"data.image_size: {size} must be a multiple of 32 (encoder stride)")
  data_dir = config.data.get("data_dir", "")
  if data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
    problems.append(f"data.data_dir: directory {data_dir!r} does not exist")
  manual_dir = config.data.get("manual_dir", "")
  if manual_dir and not os.path.isdir(os.path.expanduser(manual_dir)):
    problems.append(f"data.manual_dir: directory {manual_dir!r} does not exist")
  try:
    from sgdc_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    check = getattr(pipeline, "validate_data_config", None)
    if check is not None:
      check(config.data)
  except (ValueError, TypeError) as e:
    problems.append(str(e))
  if not problems and config.data.get("name") != "synthetic_lesions":
    problems.extend(_check_dataset(config, mode))
  if mode == "predict":
    if not config.predict.input_dir:
      problems.append("predict.input_dir: required for --mode=predict")
    elif not os.path.isdir(config.predict.input_dir):
      problems.append(f"predict.input_dir: directory {config.predict.input_dir!r} does not exist")
    if not config.predict.output_dir:
      problems.append("predict.output_dir: required for --mode=predict")
  if problems:
    raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def _check_dataset(config: ml_collections.ConfigDict, mode: str) -> list[str]:
  """Problems opening the splits ``mode`` needs (dataset not prepared, unknown split/name)."""
  from sgdc_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  splits = {"train": ("train_split", "eval_split"), "eval": ("test_split",), "predict": ()}[mode]
  out = []
  for field in splits:
    try:
      pipeline.open_source(config.data, config.data[field])
    except (FileNotFoundError, ValueError, ImportError) as e:
      out.append(f"data.{field}={config.data[field]!r}: {e}")
      break
  return out


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the resolved config as ``workdir/config.json`` and returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
  return path
