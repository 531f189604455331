"""`make demo`: train the demo config on synthetic lesions, then evaluate on the test split.

  python -m sgdc_jax.demo [--workdir=runs/demo]

The config is `sgdc_jax.run.config.demo_config()` (= `configs/demo.py`). Writes into the workdir:
checkpoints, TensorBoard events, `history.jsonl`, `training_curve.png`, and the test evaluation
in `eval/synthetic_lesions/test/step_<N>/` (`metrics.json`, `per_image.csv`, `overlays/`);
prints the test metrics and where the outputs are. Rerunning resumes (or, when training is
complete, only re-evaluates).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)

from sgdc_jax.run import config as config_lib
from sgdc_jax.run import evaluate, experiment, train
from sgdc_jax.run import outputs


def main(argv=None):
  """Trains and evaluates the demo; exits non-zero on failure."""
  parser = argparse.ArgumentParser(description="SGDC demo on synthetic lesions")
  parser.add_argument("--workdir", default="runs/demo", help="output directory")
  args = parser.parse_args(argv)
  workdir = args.workdir
  config = config_lib.demo_config()
  experiment.enable_compilation_cache(config)
  start = time.time()
  try:
    train.train_and_evaluate(config, workdir)
  except (config_lib.ConfigError, train.NonFiniteLossError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2 if isinstance(e, config_lib.ConfigError) else 3)
  train_time = time.time() - start
  summary = evaluate.evaluate_checkpoint(config, workdir)
  total = time.time() - start
  outputs.print_summary(summary, summary["output_dir"])
  print(f"training curve: {os.path.join(workdir, 'training_curve.png')}")
  print(f"TensorBoard: tensorboard --logdir {workdir}")
  print(f"wall time: {total:.0f} s (training {train_time:.0f} s, test evaluation "
        f"{total - train_time:.0f} s)")


if __name__ == "__main__":
  main()
