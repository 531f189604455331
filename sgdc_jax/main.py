"""Command-line entry point: parses flags and calls the library (nothing imports this module).

  python -m sgdc_jax.main --config=configs/demo.py --workdir=runs/demo [--mode=train|eval|predict]
      [--config.train.num_steps=100 ...]

Several processes (multi-host GPU/TPU, or loopback tests) are detected from the environment
(`experiment.multiprocess_from_env`); `jax.distributed.initialize()` is then called before
anything touches the devices.

Paths typed on the command line (`--workdir`, `--config=`, the config's path fields) may start
with `~` or hold `$VARS` (`sgdc_jax.paths`). User errors print one line, `error: ...`, without a
traceback (`SGDC_DEBUG=1` adds it; see `sgdc_jax.cli`). Exit status:
  0  done (also when the workdir is already at train.num_steps: nothing to train);
  2  invalid flags, arguments or config (unknown field, missing or broken config file, bad
     value, missing `model.pretrained` file or unreadable weights) or another user error (no
     checkpoint to evaluate or predict with, unusable predict folders, a full disk during a
     checkpoint save: the partial save is removed, the last complete checkpoint named);
  3  non-finite loss (training stopped; the last good checkpoint is kept);
  4  workdir busy (another training holds its lock), no intact checkpoint to resume from, or a
     read-only workdir for --mode=eval (`--config.eval.output_dir=DIR` writes elsewhere);
  5  several processes: another process was lost (the line names it and the last complete
     checkpoint; rerun the same command on every process to resume).
"""

from __future__ import annotations

import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
from absl import app, flags
from ml_collections import config_flags

from sgdc_jax.run import config as config_lib
from sgdc_jax import cli
from sgdc_jax.run import evaluate, experiment, predict, train
from sgdc_jax.run import outputs, peers

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs.")
_MODE = flags.DEFINE_enum("mode", "train", list(config_lib.MODES), "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):  # pylint: disable=unused-argument  (cli.parse_flags refuses extra arguments)
  """absl entry point: runs the selected mode; user errors exit with one message."""
  cli.run(lambda: _run(_CONFIG.value, _WORKDIR.value, _MODE.value))


def _run(config, workdir: str, mode: str) -> None:
  # Several processes: a lost one ends the others with one line (exit 5, `run.peers`).
  watchdog = experiment.initialize_processes(
      config, checkpoint_dir=experiment.checkpoint_dir(workdir) if mode == "train" else "")
  with peers.guard(watchdog):
    experiment.enable_compilation_cache(config)
    if mode == "train":
      train.train_and_evaluate(config, workdir)
    elif mode == "eval":
      summary = evaluate.evaluate_checkpoint(config, workdir)
      if jax.process_index() == 0:
        outputs.print_summary(summary, summary["output_dir"])
    else:
      predict.predict_folder(config, workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
