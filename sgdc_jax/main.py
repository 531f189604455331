"""Command-line entry point: parses flags and calls the library (nothing imports this module).

  python -m sgdc_jax.main --config=configs/demo.py --workdir=runs/demo [--mode=train|eval|predict]
      [--config.train.num_steps=100 ...]

Several processes (multi-host GPU/TPU, or loopback tests) are detected from the environment
(`experiment.multiprocess_from_env`); `jax.distributed.initialize()` is then called before
anything touches the devices. Exit status: 0 done, 2 invalid config, 3 non-finite loss.
"""

from __future__ import annotations

import sys

import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
from absl import app, flags
from ml_collections import config_flags

from sgdc_jax import config as config_lib
from sgdc_jax import checkpoint_recovery, evaluate, experiment, predict, reporting, train
from sgdc_jax import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs.")
_MODE = flags.DEFINE_enum("mode", "train", list(config_lib.MODES), "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  """absl entry point: runs the selected mode and exits with its status."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  experiment.initialize_processes()
  config, workdir, mode = _CONFIG.value, _WORKDIR.value, _MODE.value
  experiment.enable_compilation_cache(config)
  try:
    if mode == "train":
      train.train_and_evaluate(config, workdir)
    elif mode == "eval":
      summary = evaluate.evaluate_checkpoint(config, workdir)
      if jax.process_index() == 0:
        reporting.print_summary(summary, summary["output_dir"])
    else:
      predict.predict_folder(config, workdir)
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except train.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  except (workdir_lib.WorkdirError, checkpoint_recovery.NoIntactCheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(4)


if __name__ == "__main__":
  app.run(main)
