r"""How much does a trained network use its SGDC blocks and their guidance?

  python -m sgdc_jax.analysis.diagnose --workdir=RUN [--split=validation] [--edge_tolerance=3] \
      [--config=configs/....py --config.data.data_dir=...] [--data_dir=DIR]

Without `--config`, the config is the workdir's training record (`RUN/config.json`) with the
package's defaults for fields added since; `--data_dir` replaces its `data.data_dir`. The
checkpoint is the one `--mode=eval` scores (`eval.checkpoint`). On the split, at the stored
resolution, with the ordinary scorer (`inference.Scorer`):

- the intact network's per-image metrics;
- each applicable test-time knock-out (`sgdc_jax.analysis.knockouts`), as a paired per-image
  comparison with the intact network (intact - knocked: mean difference, 95 % bootstrap
  interval, Wilcoxon p, wins/ties/losses of the intact network; `ablation_report`);
- per SGDC block, the layer-scale statistics and the norm of each residual branch relative to
  the block's input (`||branch1|| / ||x||`, `||branch2|| / ||x + branch1||`, per image, then
  averaged), on the input the scorer gives the network (with `eval.resolution='native'`: each
  image padded to a multiple of 32, its central `eval.window` square when larger);
- the SGE edge map's boundary F-score (`metrics.boundary_f_score`: edge probability > 0.5 vs
  the ground-truth mask's border, at `--edge_tolerance` pixels), beside the same score of the
  predicted mask's border for scale.

Outputs: `RUN/diagnose/<data.name>/<split>/step_<N>/`: `diagnose.json`, `diagnose.md`, and
`intact/`, `<knock-out>/` folders with `per_image.csv` + `metrics.json` as `--mode=eval` writes.
Exit status as `sgdc_jax.main` (`sgdc_jax.cli`).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Optional, Sequence

import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from sgdc_jax.analysis import report as ablation_report, knockouts
from sgdc_jax import cli
from sgdc_jax.data import pipeline, transforms
from sgdc_jax.run import experiment, inference, peers, windows
from sgdc_jax.run import outputs
from sgdc_jax.run import config as config_lib
from sgdc_jax import metrics as metrics_lib
from sgdc_jax.modules.sgdc import recording_diagnostics
from sgdc_jax.run import sharding as shd
from sgdc_jax.run import workdir as workdir_lib

DEFAULT_EDGE_TOLERANCE = 3.0
# Metrics shown in diagnose.md's knock-out table (all of ablation_report.METRICS are in the JSON).
_SHOWN = ('dice', 'hd95', 'nsd', 'boundary_iou', 'cldice')


class _FixedVariables:
  """Stands in for a TrainState where the scorer only needs `eval_variables`."""

  def __init__(self, variables: dict[str, Any]):
    self._variables = variables

  def eval_variables(self, use_ema: bool = True) -> dict[str, Any]:
    del use_ema  # already chosen
    return self._variables


def config_from_record(recorded: dict[str, Any]) -> ml_collections.ConfigDict:
  """The base config with every recorded field that it still has set to the recorded value
  (fields added to the package since keep their defaults).

  Raises:
    ValueError: a recorded field the package no longer has (named).
  """
  config = config_lib.get_config()
  known = config_lib.flatten(config)
  unknown = []
  for path, value in _flat(recorded).items():
    if path not in known:
      unknown.append(path)
      continue
    node = config
    *parents, leaf = path.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  if unknown:
    raise ValueError(f'the training record has field(s) this package does not know: {unknown}; '
                     'pass --config=... instead')
  return config


def _flat(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def diagnose_dir(workdir: str, dataset: str, split: str, step: int) -> str:
  """`workdir/diagnose/<dataset>/<split>/step_<step>` (beside `eval/`)."""
  under_eval = os.path.relpath(outputs.eval_dir(workdir, dataset, split, step),
                               os.path.join(workdir, 'eval'))
  return os.path.join(workdir, 'diagnose', under_eval)


def _contour(target: np.ndarray) -> np.ndarray:
  """Border pixels of every foreground label of a label map `(H, W)`."""
  out = np.zeros(target.shape, bool)
  for label in np.unique(target):
    if label != 0:
      out |= metrics_lib.border(target == label)
  return out


def _edge_visitor(tolerance: float, scores: list[dict[str, float]]):
  def visit(item: inference.ScoredImage) -> None:
    contour = _contour(item.target)
    row = {f'mask_{k}': v for k, v in
           metrics_lib.boundary_f_score(_contour(item.pred), contour, tolerance).items()}
    if item.edge is not None:
      row.update({f'edge_{k}': v for k, v in
                  metrics_lib.boundary_f_score(item.edge > 0.5, contour, tolerance).items()})
    scores.append(row)
  return visit


def _native_batches(exp: experiment.Experiment, split: str):
  """Yields `(images, valid)` per record of `split` at its stored resolution, as the native
  scorer sees it: normalised, reflect-padded to a multiple of 32, its central
  `eval.window` x `eval.window` part when larger; repeated over the devices (global
  `(D, h, w, 3)`; `valid` (D,) True for the first copy only)."""
  cfg = exp.config
  source = pipeline.open_source(cfg.data, split)
  devices = int(exp.mesh.shape[shd.DATA_AXIS])
  window = int(cfg.eval.window)
  sharding = shd.data_sharding(exp.mesh)
  valid = np.arange(devices) == 0
  for idx in range(len(source)):
    image = inference.record_image(dict(source[idx]), f'{split} record {idx}')
    x = windows.pad_to_multiple(
        transforms.normalise(image, tuple(cfg.data.mean), tuple(cfg.data.std)))
    top, left = (max(side - window, 0) // 2 for side in x.shape[:2])
    x = np.ascontiguousarray(x[top:top + window, left:left + window], np.float32)
    batch = np.repeat(x[None], devices, axis=0)
    yield jax.make_array_from_callback(batch.shape, sharding, lambda i, b=batch: b[i]), valid


def _resized_batches(exp: experiment.Experiment, split: str):
  """Yields `(images, valid)` of the resized eval batches (global `(B, S, S, 3)`, host `(B,)`)."""
  for gbatch in inference.global_eval_batches(exp.config, exp.mesh, split):
    yield gbatch['image'], shd.global_to_host(gbatch['valid']).astype(bool)


def branch_norms(exp: experiment.Experiment, variables: dict[str, Any], split: str
                 ) -> dict[str, dict[str, float]]:
  """Per block: mean over the split's images of `||branch1|| / ||x||` and
  `||branch2|| / ||x + branch1||` (the 'diagnostics' the SGDC blocks sow), on the inputs the
  scorer gives the network (`eval.resolution`: resized, or the stored resolution)."""
  def fn(v, images):
    with recording_diagnostics():  # inside the traced function: the flag is read when tracing
      _, state = exp.model.apply(v, images, train=False, mutable=['diagnostics'])
    return state['diagnostics']
  sown_fn = jax.jit(fn, out_shardings=shd.data_sharding(exp.mesh))
  native = str(exp.config.eval.resolution) == 'native'
  batches = _native_batches(exp, split) if native else _resized_batches(exp, split)
  sums: dict[str, dict[str, float]] = {}
  count = 0
  for images, valid in batches:
    sown = sown_fn(variables, images)
    count += int(valid.sum())
    for block, values in sown.items():
      sq = {k: shd.global_to_host(v[0])[valid].astype(np.float64) for k, v in values.items()}
      acc = sums.setdefault(block, {'branch1_rel_norm': 0.0, 'branch2_rel_norm': 0.0})
      acc['branch1_rel_norm'] += float(np.sum(np.sqrt(sq['branch1_sq'] / sq['input_sq'])))
      acc['branch2_rel_norm'] += float(np.sum(np.sqrt(sq['branch2_sq'] / sq['mid_sq'])))
  return {b: {k: v / max(count, 1) for k, v in acc.items()} for b, acc in sorted(sums.items())}


def _scores(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
  """Scorer rows -> `{id: {metric: value}}` for the compared metrics."""
  return {str(r['id']): {m: float(r[m]) for m in ablation_report.METRICS} for r in rows}


def _mean_of(rows: Sequence[dict[str, float]], key: str) -> float:
  vals = [r[key] for r in rows if key in r]
  return float(np.mean(vals)) if vals else math.nan


def diagnose(config: ml_collections.ConfigDict, workdir: str, split: Optional[str] = None,
             edge_tolerance: float = DEFAULT_EDGE_TOLERANCE) -> dict[str, Any]:
  """Runs every diagnostic of the module docstring on `workdir`'s checkpoint.

  Returns:
    The `diagnose.json` dict (identical on every process; files written by process 0), with
    'output_dir'.
  Raises:
    ConfigError, FileNotFoundError (no checkpoint), ModelConfigMismatchError, ValueError.
  """
  config_lib.validate_config(config, mode='eval')
  if not (isinstance(edge_tolerance, (int, float)) and edge_tolerance >= 0):
    raise ValueError(f'--edge_tolerance must be a number >= 0, got {edge_tolerance!r}')
  workdir_lib.check_training_config(config, workdir, action='diagnose')
  split = split or config.data.test_split
  exp = experiment.build(config)
  state, step = experiment.restore_for_inference(exp, workdir)
  out_dir = diagnose_dir(workdir, config.data.name, split, step)
  primary = jax.process_index() == 0
  variables = state.eval_variables(use_ema=bool(config.eval.use_ema))
  scorer = inference.Scorer(config, exp.model, exp.mesh)

  edge_rows: list[dict[str, float]] = []
  rows, summary = scorer.score(_FixedVariables(variables), split,
                               visit=_edge_visitor(float(edge_tolerance), edge_rows))
  if primary:
    outputs.write_eval_outputs(os.path.join(out_dir, 'intact'), rows, summary)
  intact = _scores(rows)
  m = config.model
  result: dict[str, Any] = {
      'workdir': workdir, 'split': split, 'checkpoint_step': step,
      'kernel_source': m.kernel_source, 'n_blocks': int(m.n_blocks),
      'layer_scale_init': float(m.layer_scale_init), 'n_images': summary['n_images'],
      'intact': summary['mean'], 'knockouts': {},
  }
  native = scorer.resolution == 'native'
  skipped = knockouts.not_run(m.kernel_source, int(m.n_blocks), native)
  if skipped:
    result['not_run'] = skipped
  for name in knockouts.applicable(m.kernel_source, int(m.n_blocks), one_image_per_pass=native):
    knocked = knockouts.knocked_variables(variables, name)
    model = knockouts.knocked_model(exp.model, name)
    ko_scorer = scorer if model is exp.model else inference.Scorer(config, model, exp.mesh)
    ko_rows, ko_summary = ko_scorer.score(_FixedVariables(knocked), split)
    if primary:
      outputs.write_eval_outputs(os.path.join(out_dir, name), ko_rows, ko_summary)
    comparison = ablation_report.paired_rows(intact, _scores(ko_rows), 'intact', name)
    result['knockouts'][name] = {
        'description': knockouts.DESCRIPTIONS[name], 'mean': ko_summary['mean'],
        'comparison': {c['metric']: c for c in comparison},
        'per_image_csv': os.path.join(name, 'per_image.csv'),
    }
  result['per_image_csv'] = os.path.join('intact', 'per_image.csv')
  blocks = []
  if int(m.n_blocks):
    norms = branch_norms(exp, variables, split)
    for row in knockouts.layer_scale_stats(variables['params']):
      blocks.append({**row, **norms.get(row['block'], {})})
  result['blocks'] = blocks
  result['edge'] = {
      'tolerance_px': float(edge_tolerance), 'n_images': len(edge_rows),
      **{k: _mean_of(edge_rows, k) for k in ('edge_f', 'edge_precision', 'edge_recall',
                                             'mask_f', 'mask_precision', 'mask_recall')},
  }
  result['output_dir'] = out_dir
  if primary:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'diagnose.json'), 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2, default=str)
    with open(os.path.join(out_dir, 'diagnose.md'), 'w', encoding='utf-8') as f:
      f.write(markdown(result))
    workdir_lib.write_run_config(config, out_dir, workdir)
  return result


def _fmt(value: float, digits: int) -> str:
  return '-' if value is None or (isinstance(value, float) and math.isnan(value)) else (
      f'{value:.{digits}f}')


def knockout_table(results: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
  """Markdown rows: per (label, diagnose result) and knock-out, the intact - knocked cost of
  the `_SHOWN` metrics with 95 % intervals and the Dice verdict."""
  lines = ['| run | knock-out | ' + ' | '.join(f'{k} cost [95 % CI]' for k in _SHOWN) +
           ' | Dice W/T/L | verdict (Dice) |',
           '|---|---|' + '---|' * (len(_SHOWN) + 2)]
  for label, result in results:
    for name, ko in result['knockouts'].items():
      cells = []
      for metric in _SHOWN:
        c = ko['comparison'][metric]
        d = 2 if metric == 'hd95' else 4
        cells.append(f"{c['mean_diff']:+.{d}f} [{c['ci_low']:+.{d}f}, {c['ci_high']:+.{d}f}]")
      dice = ko['comparison']['dice']
      verdict = (('knock-out hurts' if dice['mean_diff'] > 0 else 'knock-out helps')
                 if dice['significant'] else 'no significant difference')
      lines.append(f"| {label} | {name} | " + ' | '.join(cells) +
                   f" | {dice['wins']}/{dice['ties']}/{dice['losses']} | {verdict} |")
  return lines


def block_table(results: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
  """Markdown rows: layer scales and relative branch norms per (label, block)."""
  lines = ['| run | block | mean abs ls1 | max abs ls1 | mean abs ls2 | max abs ls2 | '
           '‖branch1‖/‖x‖ | ‖branch2‖/‖x+branch1‖ |', '|---|---|---|---|---|---|---|---|']
  for label, result in results:
    for b in result['blocks']:
      lines.append(f"| {label} | {b['block']} | {b['ls1_mean_abs']:.4f} | {b['ls1_max_abs']:.4f}"
                   f" | {b['ls2_mean_abs']:.4f} | {b['ls2_max_abs']:.4f} | "
                   f"{_fmt(b.get('branch1_rel_norm'), 4)} | {_fmt(b.get('branch2_rel_norm'), 4)} |")
  return lines


def edge_table(results: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
  """Markdown rows: boundary F-score of the SGE edge map and of the predicted mask."""
  lines = ['| run | tolerance px | SGE edge F (P / R) | predicted-mask contour F (P / R) |',
           '|---|---|---|---|']
  for label, result in results:
    e = result['edge']
    lines.append(f"| {label} | {e['tolerance_px']:g} | {_fmt(e['edge_f'], 3)} "
                 f"({_fmt(e['edge_precision'], 3)} / {_fmt(e['edge_recall'], 3)}) | "
                 f"{_fmt(e['mask_f'], 3)} ({_fmt(e['mask_precision'], 3)} / "
                 f"{_fmt(e['mask_recall'], 3)}) |")
  return lines


def markdown(result: dict[str, Any]) -> str:
  """`diagnose.md` of one run."""
  label = f"{result['kernel_source']}"
  one = [(label, result)]
  intact = result['intact']
  lines = [f"# Diagnostics: {result['workdir']}, split {result['split']}, step "
           f"{result['checkpoint_step']}", '',
           f"kernel_source {result['kernel_source']}, {result['n_blocks']} SGDC block(s), "
           f"layer_scale_init {result['layer_scale_init']:g}; {result['n_images']} images at "
           f"the stored resolution. Intact: Dice {intact['dice']:.4f}, HD95 "
           f"{intact['hd95']:.2f} px, NSD {intact['nsd']:.4f}, Boundary IoU "
           f"{intact['boundary_iou']:.4f}.", '',
           'Knock-outs (cost = intact - knocked, per image, paired; HD95 in px, a negative '
           'HD95 cost means the knock-out raised HD95; 95 % bootstrap intervals):', '']
  lines += knockout_table(one) if result['knockouts'] else ['(no SGDC block to knock out)']
  lines += [f'\n`{name}` not run: {why}' for name, why in result.get('not_run', {}).items()]
  lines += ['', 'SGDC blocks (layer scales; residual branch norm relative to its input, mean '
            'over images):', '']
  lines += block_table(one) if result['blocks'] else ['(no SGDC block)']
  lines += ['', 'Boundary F-score against the ground-truth mask border:', '']
  lines += edge_table(one)
  return '\n'.join(lines) + '\n'


def define_flags() -> dict[str, Any]:
  """Defines the command-line flags (only when run as a script)."""
  return {
      'config': config_flags.DEFINE_config_file(
          'config', None, 'Optional configs/*.py file (default: the workdir training record).',
          lock_config=True),
      'workdir': flags.DEFINE_string('workdir', None, 'A trained run directory.'),
      'split': flags.DEFINE_string('split', None, 'Split scored (default: data.test_split).'),
      'data_dir': flags.DEFINE_string('data_dir', None, 'Replaces data.data_dir.'),
      'edge_tolerance': flags.DEFINE_float('edge_tolerance', DEFAULT_EDGE_TOLERANCE,
                                           'Boundary F-score tolerance, pixels.'),
  }


def _main(values: dict[str, Any]) -> None:
  workdir = values['workdir']
  if not workdir:
    raise ValueError('--workdir is required')
  if not os.path.isdir(workdir):
    raise ValueError(f'--workdir: {workdir} is not a directory')
  config = values['config']
  if config is None:
    recorded = workdir_lib.read_training_config(workdir)
    if recorded is None:
      raise ValueError(f'{workdir_lib.record_path(workdir)} does not exist; pass --config=...')
    config = config_from_record(recorded)
  if values['data_dir'] is not None:
    config.data.data_dir = values['data_dir']
  with peers.guard(experiment.initialize_processes(config)):  # as in main: exit 5, one line
    experiment.enable_compilation_cache(config)
    result = diagnose(config, workdir, values['split'], values['edge_tolerance'])
  if jax.process_index() == 0:
    print(markdown(result))
    print(f"[diagnose] outputs: {result['output_dir']}")


def main(argv: Sequence[str], holders: dict[str, Any]) -> None:  # pylint: disable=unused-argument
  """absl entry point (`cli.parse_flags` refuses extra arguments and expands the paths); user
  errors print one message and exit non-zero (see `sgdc_jax.cli`)."""
  values = {k: h.value for k, h in holders.items()}
  cli.run(lambda: _main(values))


if __name__ == '__main__':
  _holders = define_flags()
  flags.mark_flags_as_required(['workdir'])
  app.run(lambda argv: main(argv, _holders), flags_parser=cli.parse_flags)
