"""``make demo``: train ``configs/demo.py`` on synthetic lesions, then evaluate on the test split.

  python -m sgdc_jax.demo [--workdir=runs/demo]

Writes into the workdir: checkpoints, TensorBoard events, ``training_curve.png``,
``metrics.json``, ``per_image.csv`` and ``overlays/``; prints the test metrics and where the
outputs are. Rerunning resumes (or, when training is complete, only re-evaluates).
"""

from __future__ import annotations

import os
import sys
import time

import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import argparse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_demo_config():
  """``configs/demo.py``'s config, locked (unknown fields are errors)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("sgdc_configs_demo",
                                                os.path.join(REPO, "configs", "demo.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.lock()
  return config


def main(argv=None):
  """Trains and evaluates the demo; returns nothing, exits non-zero on failure."""
  parser = argparse.ArgumentParser(description="SGDC demo on synthetic lesions")
  parser.add_argument("--workdir", default="runs/demo", help="output directory")
  args = parser.parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  from sgdc_jax import evaluate, main as main_lib  # pylint: disable=g-import-not-at-top
  workdir = args.workdir
  # Compiled programs are cached next to the runs, so a second demo skips XLA compilation.
  jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(
      os.path.abspath(workdir)), ".jax_cache"))
  config = load_demo_config()
  start = time.time()
  status = main_lib.run(config, workdir, "train")
  if status:
    sys.exit(status)
  train_time = time.time() - start
  summary = evaluate.evaluate_checkpoint(config, workdir)
  total = time.time() - start
  main_lib.print_summary(summary, workdir)
  print(f"training curve: {os.path.join(workdir, 'training_curve.png')}")
  print(f"TensorBoard: tensorboard --logdir {workdir}")
  print(f"wall time: {total:.0f} s (training {train_time:.0f} s, test evaluation "
        f"{total - train_time:.0f} s)")


if __name__ == "__main__":
  main()
