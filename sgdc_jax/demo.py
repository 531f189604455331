"""`make demo`: train the demo config on synthetic lesions, then evaluate on the test split.

  python -m sgdc_jax.demo [--workdir=runs/demo]

The config is `sgdc_jax.run.config.demo_config()` (= `configs/demo.py`). Writes into the workdir:
checkpoints, TensorBoard events, `history.jsonl`, `training_curve.png`, and the test evaluation
in `eval/synthetic_lesions/test/step_<N>/` (`metrics.json`, `per_image.csv`, `overlays/`);
prints the test metrics and where the outputs are. Rerunning resumes (or, when training is
complete, only re-evaluates).

Errors and exit status as every entry point (`sgdc_jax.cli`): one line `error: ...`,
2 user error, 3 non-finite loss, 4 workdir unusable (e.g. another training holds it).
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
from absl import app, flags

from sgdc_jax.run import config as config_lib
from sgdc_jax import cli
from sgdc_jax.run import evaluate, experiment, train
from sgdc_jax.run import outputs

DEFAULT_WORKDIR = "runs/demo"


def define_flags() -> dict[str, Any]:
  """Defines the command-line flags (only when run as a script)."""
  return {"workdir": flags.DEFINE_string("workdir", DEFAULT_WORKDIR, "Output directory.")}


def run_demo(workdir: str) -> None:
  """Trains and evaluates the demo in `workdir`, printing the test metrics and timings."""
  config = config_lib.demo_config()
  experiment.enable_compilation_cache(config)
  start = time.time()
  train.train_and_evaluate(config, workdir)
  train_time = time.time() - start
  summary = evaluate.evaluate_checkpoint(config, workdir)
  total = time.time() - start
  outputs.print_summary(summary, summary["output_dir"])
  print(f"training curve: {os.path.join(workdir, 'training_curve.png')}")
  print(f"TensorBoard: tensorboard --logdir {workdir}")
  print(f"wall time: {total:.0f} s (training {train_time:.0f} s, test evaluation "
        f"{total - train_time:.0f} s)")


def main(argv: Sequence[str], holders: dict[str, Any]) -> None:  # pylint: disable=unused-argument
  """absl entry point; user errors print one message and exit non-zero."""
  cli.log_warnings_only()  # the demo's lines once, on stdout (-v 0 shows absl INFO too)
  cli.run(lambda: run_demo(holders["workdir"].value))


if __name__ == "__main__":
  _holders = define_flags()
  app.run(lambda argv: main(argv, _holders), flags_parser=cli.parse_flags)
