"""`--mode=eval`: score a checkpoint on a split at the original resolution and write the results.

Outputs go to one folder per (data set, split, checkpoint step),
`workdir/eval/<data.name>/<split>/step_<N>/`: `metrics.json` (means, standard deviations, counts,
empty masks, the HD95 convention, the split and checkpoint step), `per_image.csv` (one row per
image with its file id), `overlays/` (the first `eval.overlays` images) and `config.json` (the
resolved config of this evaluation). The scoring itself is `inference.Scorer`: every image is
scored at its stored size, seen by the network resized (`eval.resolution='resize'`) or at that
size (`'native'`: whole image or sliding windows, `run.windows`).

`eval.output_dir=DIR` puts that folder at `DIR/<data.name>/<split>/step_<N>/` instead, so a
read-only workdir (a colleague's run, an archive) can be evaluated: eval only reads the workdir
(its checkpoints and training record; it takes no lock). The output folder is created and
tried before anything is scored; a workdir that cannot be written is one `WorkdirError` that
suggests `--config.eval.output_dir=DIR`.
"""

from __future__ import annotations

import errno
import os
import tempfile
from typing import Any, Optional

import jax
import ml_collections

from sgdc_jax.errors import WorkdirError
from sgdc_jax.log import printable
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
    WorkdirError: the outputs would go into the workdir and it cannot be written.
    ValueError: `eval.output_dir` cannot be written.
  """
  config_lib.validate_config(config, mode="eval")
  workdir_lib.check_training_config(config, workdir, action="eval")
  split = split or config.data.test_split
  exp = experiment.build(config)
  state, step = experiment.restore_for_inference(exp, workdir)
  out_dir = output_dir(config, workdir, split, step)
  check_writable(out_dir, workdir, str(config.eval.output_dir))
  primary = jax.process_index() == 0
  visit = outputs.overlay_writer(out_dir, int(config.eval.overlays)) if primary else None
  rows, summary = inference.Scorer(config, exp.model, exp.mesh).score(state, split, visit=visit)
  summary["checkpoint_step"] = step
  summary["output_dir"] = out_dir
  if primary:
    outputs.write_eval_outputs(out_dir, rows, summary)
    workdir_lib.write_run_config(config, out_dir, workdir)
  return summary


def output_dir(config: ml_collections.ConfigDict, workdir: str, split: str, step: int) -> str:
  """`workdir/eval/<data>/<split>/step_<N>`, or `eval.output_dir/<data>/<split>/step_<N>`."""
  if config.eval.output_dir:
    return os.path.join(config.eval.output_dir,
                        outputs.eval_subdir(config.data.name, split, step))
  return outputs.eval_dir(workdir, config.data.name, split, step)


def check_writable(out_dir: str, workdir: str, chosen: str) -> None:
  """Creates `out_dir` and writes (and removes) a file in it, so that an unwritable folder
  stops the evaluation before it scores anything.

  Args:
    out_dir: the evaluation's output folder.
    workdir: the run directory (named in the message when `chosen` is '').
    chosen: `eval.output_dir` ('' = the folder is inside the workdir).
  Raises:
    WorkdirError: `chosen` is '' and the folder cannot be written (a read-only workdir).
    ValueError: `chosen` cannot be written.
  """
  try:
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=out_dir):
      pass
  except OSError as e:
    why = ("is on a read-only file system" if e.errno == errno.EROFS else
           f"is not writable ({e.strerror or e})")
    if chosen:
      raise ValueError(f"eval.output_dir {printable(chosen)} {why}: cannot write the evaluation "
                       f"outputs in {printable(out_dir)}; choose a writable folder") from None
    raise WorkdirError(
        f"workdir {printable(workdir)} {why}, so --mode=eval cannot write its outputs in "
        f"{printable(out_dir)}; nothing was evaluated. Pass --config.eval.output_dir=DIR to write "
        f"them to a writable folder DIR (the workdir is only read)") from None
