"""Logging: CLU metric writers, periodic actions (progress, profiling) and a tty progress bar."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional

import jax
import ml_collections
from absl import logging


def log(message: str) -> None:
  """Logs ``message`` (absl INFO) and prints it on process 0."""
  logging.info(message)
  if jax.process_index() == 0:
    print(message, flush=True)


def create_writer(workdir: str):
  """TensorBoard event files + console on process 0; console logging only elsewhere."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  return metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)


def flatten_config(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  """``{'a.b': value}`` for every leaf of ``config`` (lists/tuples as strings)."""
  out = {}
  for k, v in config.items():
    key = f"{prefix}{k}"
    if isinstance(v, ml_collections.ConfigDict):
      out.update(flatten_config(v, key + "."))
    elif isinstance(v, (bool, int, float, str)):
      out[key] = v
    else:
      out[key] = str(v)
  return out


def write_hparams(writer, config: ml_collections.ConfigDict) -> None:
  """Writes the flattened config once as hyper-parameters."""
  writer.write_hparams(flatten_config(config))


def create_hooks(config: ml_collections.ConfigDict, workdir: str, writer,
                 num_steps: int) -> list[Callable[[int], None]]:
  """Periodic actions called after every step: progress report (steps/s, ETA) on process 0,
  and a profiler window when ``config.train.profile_steps > 0``."""
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  hooks: list[Callable[[int], None]] = []
  if jax.process_index() == 0:
    hooks.append(periodic_actions.ReportProgress(
        num_train_steps=num_steps, writer=writer, every_steps=config.train.log_every,
        every_secs=None))
  if config.train.profile_steps > 0:
    hooks.append(periodic_actions.Profile(
        logdir=workdir, num_profile_steps=config.train.profile_steps,
        first_profile=config.train.profile_first_step, every_secs=None))
  return hooks


def progress_bar(total: int, initial: int) -> Optional[Any]:
  """A tqdm bar on process 0 when stdout is an interactive terminal, else None."""
  if jax.process_index() != 0 or not sys.stdout.isatty() or os.environ.get("SGDC_NO_BAR"):
    return None
  try:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
