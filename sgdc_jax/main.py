"""Command-line entry point: parses flags and calls the library.

  python -m sgdc_jax.main --config=configs/demo.py --workdir=runs/demo [--mode=train|eval|predict]
      [--config.train.num_steps=100 ...]

Several processes (multi-host GPU/TPU, or loopback tests) are detected from the environment:
``JAX_COORDINATOR_ADDRESS`` + ``JAX_NUM_PROCESSES`` + ``JAX_PROCESS_ID``, SLURM
(``SLURM_NTASKS > 1``) or a multi-host Cloud TPU (``TPU_WORKER_HOSTNAMES`` with several hosts);
``jax.distributed.initialize()`` is then called before anything touches the devices.
"""

from __future__ import annotations

import os
import sys

import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict"], "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def multiprocess_from_env(env=None) -> dict | None:
  """Arguments for ``jax.distributed.initialize`` when the environment says multi-process.

  Returns:
    ``{}`` (let JAX auto-detect: SLURM, Cloud TPU), a dict with coordinator_address /
    num_processes / process_id (explicit JAX_* variables), or None for a single process.
  """
  env = os.environ if env is None else env
  if env.get("JAX_COORDINATOR_ADDRESS") and int(env.get("JAX_NUM_PROCESSES", "1")) > 1:
    return {"coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
            "num_processes": int(env["JAX_NUM_PROCESSES"]),
            "process_id": int(env["JAX_PROCESS_ID"])}
  if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
    return {}
  hosts = env.get("TPU_WORKER_HOSTNAMES", "")
  if hosts and len(hosts.split(",")) > 1:
    return {}
  return None


def run(config, workdir: str, mode: str) -> int:
  """Validates ``config`` and runs ``mode``; returns the process exit status."""
  import jax  # pylint: disable=g-import-not-at-top
  from sgdc_jax import config_validation  # pylint: disable=g-import-not-at-top
  try:
    config_validation.validate_config(config, mode=mode)
  except config_validation.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if jax.process_index() == 0:
    config_validation.write_config(config, workdir)
  if mode == "train":
    from sgdc_jax import train  # pylint: disable=g-import-not-at-top
    try:
      result = train.train_and_evaluate(config, workdir)
    except train.NonFiniteLossError as e:
      print(f"error: {e}", file=sys.stderr)
      return 3
    return 0
  if mode == "eval":
    from sgdc_jax import evaluate  # pylint: disable=g-import-not-at-top
    summary = evaluate.evaluate_checkpoint(config, workdir)
    if jax.process_index() == 0:
      print_summary(summary, workdir)
    return 0
  from sgdc_jax import predict  # pylint: disable=g-import-not-at-top
  predict.predict_folder(config, workdir)
  return 0


def print_summary(summary: dict, workdir: str) -> None:
  """Prints the mean metrics of an evaluation and where its outputs are."""
  mean = summary["mean"]
  keys = [k for k in ("dice", "iou", "hd95", "assd", "accuracy", "sensitivity", "specificity",
                      "precision") if k in mean]
  print(f"{summary.get('split', '')} metrics over {summary['n_images']} images "
        f"(checkpoint step {summary.get('checkpoint_step')}):")
  for k in keys:
    print(f"  {k:12s} {mean[k]:.4f} +- {summary['std'][k]:.4f}")
  print(f"  empty masks: {summary.get('empty')}; HD95 convention: {summary.get('hd95_convention')}")
  print(f"outputs: {os.path.join(workdir, 'metrics.json')}, "
        f"{os.path.join(workdir, 'per_image.csv')}, {os.path.join(workdir, 'overlays')}/")


def main(argv):
  """absl entry point: validates the config and runs the selected mode."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  dist = multiprocess_from_env()
  if dist is not None:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(**dist)
  sys.exit(run(_CONFIG.value, _WORKDIR.value, _MODE.value))


if __name__ == "__main__":
  app.run(main)
