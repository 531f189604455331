"""`--mode=eval`: score a checkpoint on a split at the original resolution and write the results.

Outputs go to one folder per (data set, split, checkpoint step),
`workdir/eval/<data.name>/<split>/step_<N>/`: `metrics.json` (means, standard deviations, counts,
empty masks, the HD95 convention, the split and checkpoint step), `per_image.csv` (one row per
image with its file id), `overlays/` (the first `eval.overlays` images) and `config.json` (the
resolved config of this evaluation). The scoring itself is `inference.Scorer`: every image is
scored at its stored size, seen by the network resized (`eval.resolution='resize'`) or at that
size (`'native'`: whole image or sliding windows, `run.windows`).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import ml_collections

from sgdc_jax.run import config as config_lib
from sgdc_jax.run import experiment, inference
from sgdc_jax.run import outputs
from sgdc_jax.run import workdir as workdir_lib


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        split: Optional[str] = None) -> dict[str, Any]:
  """Restores the best (or latest, per `config.eval.checkpoint`) checkpoint of `workdir` and
  scores `split` (default `config.data.test_split`).

  Returns:
    The `metrics.summarize` dict plus 'split', 'checkpoint_step' and 'output_dir' (identical on
    every process; files are written by process 0).
  Raises:
    ConfigError: invalid config. FileNotFoundError: no checkpoint in `workdir/checkpoints`.
  """
  config_lib.validate_config(config, mode="eval")
  workdir_lib.check_training_config(config, workdir, action="eval")
  split = split or config.data.test_split
  exp = experiment.build(config)
  state, step = experiment.restore_for_inference(exp, workdir)
  out_dir = outputs.eval_dir(workdir, config.data.name, split, step)
  primary = jax.process_index() == 0
  visit = outputs.overlay_writer(out_dir, int(config.eval.overlays)) if primary else None
  rows, summary = inference.Scorer(config, exp.model, exp.mesh).score(state, split, visit=visit)
  summary["checkpoint_step"] = step
  summary["output_dir"] = out_dir
  if primary:
    outputs.write_eval_outputs(out_dir, rows, summary)
    workdir_lib.write_run_config(config, out_dir, workdir)
  return summary
