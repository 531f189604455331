r"""Kernel-source ablation as one command: train and test every (source, seed), then compare.

  python -m sgdc_jax.analysis.ablation --config=configs/isic2017.py --workdir=runs/abl \
      --sources=structure,pooled,none --seeds=0,1,2 [--config.train.num_steps=... ...]

Each run is an ordinary training workdir, `WORKDIR/<source>_seed<seed>/`, trained by
`train.train_and_evaluate` with `model.kernel_source` and `seed` set, then scored on
`--split` (default `data.test_split`) by `evaluate.evaluate_checkpoint`. A run is finished
when its `ablation_run.json` exists: a rerun skips it (after checking that its config equals
the one asked for now), resumes an interrupted one from its newest checkpoint, and rebuilds
the report from all finished runs:

- `ablation.csv`: one row per run (test means and stds, parameters, GFLOPs per image,
  training wall time, steps);
- `ablation.md`: per source mean ± std over seeds, and paired per-image comparisons of
  `structure` against each other source (see `ablation_report`);
- `ablation.png`: per-source box and strip plots of per-image HD95 and Dice.

`--config.*` overrides apply to every run. Exit status (`sgdc_jax.cli`): 0 done, 2 bad flags,
config or other user error, 3 non-finite loss, 4 workdir busy.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from typing import Any, Sequence

import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from sgdc_jax.analysis import report
from sgdc_jax import cli
from sgdc_jax.run import config as config_lib
from sgdc_jax.analysis import diagnose
from sgdc_jax.run import evaluate, experiment, peers, train
from sgdc_jax import models
from sgdc_jax.modules import KERNEL_SOURCES

RUN_RECORD = 'ablation_run.json'
TIME_FILE = 'ablation_train_time.json'
# Fields that may differ between the run that finished and the command now (they do not change
# what a finished run computed).
_IGNORED_FIELDS = ('compilation_cache_dir', 'train.log_every', 'train.profile_steps',
                   'train.profile_first_step', 'eval.overlays', 'data.num_workers',
                   'data.read_threads', 'data.data_dir', 'predict.')


@dataclasses.dataclass(frozen=True)
class Run:
  """One (kernel source, seed) cell of the ablation."""
  source: str
  seed: int
  directory: str


def plan(workdir: str, sources: Sequence[str], seeds: Sequence[int]) -> list[Run]:
  """The runs of the ablation, seeds outermost (so an interrupted ablation has compared every
  source on the first seeds)."""
  return [Run(s, int(k), os.path.join(workdir, f'{s}_seed{int(k)}')) for k in seeds
          for s in sources]


def run_config(config: ml_collections.ConfigDict, run: Run) -> ml_collections.ConfigDict:
  """`config` with this run's kernel source and seed (a copy; `config` is unchanged)."""
  cfg = copy.deepcopy(config)
  cfg.model.kernel_source = run.source
  cfg.seed = run.seed
  return cfg


def model_cost(config: ml_collections.ConfigDict) -> tuple[int, float]:
  """(parameters, forward GFLOPs per image at `data.image_size`) from XLA's cost analysis of
  the lowered eval-mode forward at batch 1; nothing is computed."""
  model = models.build_model(config.model)
  size = int(config.data.image_size)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape),
                                                train=False))
  cost = jax.jit(lambda v, im: model.apply(v, im, train=False)).lower(variables, x).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  params = int(sum(np.prod(p.shape) for p in jax.tree.leaves(variables['params'])))
  return params, float(cost['flops']) / 1e9


def _comparable(config: ml_collections.ConfigDict) -> dict[str, Any]:
  flat = config_lib.flatten(config)
  return {k: v for k, v in flat.items() if not k.startswith(_IGNORED_FIELDS)}


def config_differences(recorded: dict[str, Any], config: ml_collections.ConfigDict) -> list[str]:
  """Fields whose value differs between a finished run's record and `config` ('a.b: x vs y').

  Fields the record does not have (added to the package after the run finished) are not
  compared: the run used what was then the only behaviour.
  """
  now = json.loads(json.dumps(_comparable(config), default=str))
  keys = sorted(set(recorded))
  return [f'{k}: {recorded.get(k)!r} (finished run) vs {now.get(k)!r} (now)' for k in keys
          if recorded.get(k) != now.get(k)]


def _read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _write_json(path: str, value: Any) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=2, default=str)
  os.replace(tmp, path)  # a kill leaves the old or the new file, never half of one


def train_and_test(config: ml_collections.ConfigDict, run: Run, split: str) -> dict[str, Any] | None:
  """Trains (or resumes) one run, scores it on `split` and writes its record.

  Returns:
    The run record, or None when the training was preempted (SIGTERM; rerun to resume).
  """
  cfg = run_config(config, run)
  primary = jax.process_index() == 0
  os.makedirs(run.directory, exist_ok=True)
  time_path = os.path.join(run.directory, TIME_FILE)
  spent = _read_json(time_path)['train_s'] if os.path.exists(time_path) else 0.0
  start = time.perf_counter()

  def record_time(step: int) -> None:
    # Every 25 steps, so a killed run loses at most that much of its recorded wall time.
    if primary and step % 25 == 0:
      _write_json(time_path, {'train_s': spent + time.perf_counter() - start})

  result = train.train_and_evaluate(cfg, run.directory, step_callback=record_time)
  train_s = spent + time.perf_counter() - start
  if primary:
    _write_json(time_path, {'train_s': train_s})
  if result.preempted:
    return None
  summary = evaluate.evaluate_checkpoint(cfg, run.directory, split=split)
  diagnostics = diagnostic_fields(diagnose.diagnose(cfg, run.directory, split), run.directory)
  params, gflops = model_cost(cfg)
  record = {
      'source': run.source, 'seed': run.seed, 'split': split,
      **{k: summary['mean'][k] for k in report.METRICS},
      **{f'{k}_std': summary['std'][k] for k in report.METRICS},
      'n_images': summary['n_images'], 'region': summary['region'],
      'n_roi': summary['n_roi'], 'params': params, 'gflops_per_image': gflops,
      'train_s': train_s, 'steps': int(cfg.train.num_steps),
      'checkpoint_step': summary['checkpoint_step'],
      'per_image_csv': os.path.relpath(os.path.join(summary['output_dir'], 'per_image.csv'),
                                       run.directory),
      'config': _comparable(cfg),
      **diagnostics,
  }
  if primary:
    _write_json(os.path.join(run.directory, RUN_RECORD), record)
  return record


def diagnostic_fields(result: dict[str, Any], run_dir: str) -> dict[str, Any]:
  """Run-record fields from a `diagnose.diagnose` result: where its JSON is, and the
  `ablation.csv` diagnostic columns (mean knock-out costs, edge F, block averages)."""
  fields: dict[str, Any] = {
      'diagnostics': os.path.relpath(os.path.join(result['output_dir'], 'diagnose.json'),
                                     run_dir),
      'edge_f': result['edge']['edge_f'],
  }
  for name, ko in result['knockouts'].items():
    fields[f'ko_{name}_dice'] = ko['comparison']['dice']['mean_diff']
    fields[f'ko_{name}_hd95'] = ko['comparison']['hd95']['mean_diff']
  for key in ('ls1_mean_abs', 'ls2_mean_abs', 'branch1_rel_norm', 'branch2_rel_norm'):
    values = [b[key] for b in result['blocks'] if key in b]
    if values:
      fields[key] = float(np.mean(values))
  return fields


def add_diagnostics(config: ml_collections.ConfigDict, run: Run, record: dict[str, Any]
                    ) -> dict[str, Any]:
  """Diagnoses a run that finished before the ablation recorded diagnostics, and rewrites
  its record with them."""
  cfg = run_config(config, run)
  result = diagnose.diagnose(cfg, run.directory, record['split'])
  record = {**record, **diagnostic_fields(result, run.directory)}
  if jax.process_index() == 0:
    _write_json(os.path.join(run.directory, RUN_RECORD), record)
  return record


def finished_record(config: ml_collections.ConfigDict, run: Run) -> dict[str, Any] | None:
  """The record of a finished run, or None if it has not finished.

  Raises:
    ValueError: the run finished with a different config (the message lists the fields).
  """
  path = os.path.join(run.directory, RUN_RECORD)
  if not os.path.exists(path):
    return None
  record = _read_json(path)
  diffs = config_differences(record['config'], run_config(config, run))
  if diffs:
    raise ValueError(f'{run.directory} finished with another config; use a new --workdir or '
                     'remove that run. Differences: ' + '; '.join(diffs))
  return record


def write_report(workdir: str, records: Sequence[dict[str, Any]], title: str) -> dict[str, str]:
  """Writes ablation.csv, ablation.md and ablation.png from finished run records."""
  per_source: dict[str, dict[str, dict[str, float]]] = {}
  for source in dict.fromkeys(r['source'] for r in records):
    by_seed = [report.read_per_image(os.path.join(workdir, f"{r['source']}_seed{r['seed']}",
                                                  r['per_image_csv']))
               for r in records if r['source'] == source]
    per_source[source] = report.seed_averaged(by_seed)
  paths = {name: os.path.join(workdir, f'ablation.{name}') for name in ('csv', 'md', 'png')}
  report.write_runs_csv(paths['csv'], records)
  comparisons = report.compare_sources(per_source)
  with open(paths['md'], 'w', encoding='utf-8') as f:
    f.write(report.markdown(report.source_summary(records), comparisons, title))
    f.write(diagnostics_markdown(workdir, records))
  report.plot(per_source, paths['png'])
  return paths


def diagnostics_markdown(workdir: str, records: Sequence[dict[str, Any]]) -> str:
  """The knock-out, block and edge sections of `ablation.md`: per source, each knock-out as
  a paired comparison of seed-averaged per-image scores (intact vs knocked), then the
  per-run block and edge tables of `diagnose`."""
  results = []
  for r in records:
    if 'diagnostics' in r:
      path = os.path.join(workdir, f"{r['source']}_seed{r['seed']}", r['diagnostics'])
      results.append((os.path.dirname(path), f"{r['source']} s{r['seed']}", _read_json(path)))
  if not results:
    return ''
  shown = ('dice', 'hd95', 'nsd', 'boundary_iou', 'cldice')
  rows = []
  for source in dict.fromkeys(r['source'] for r in records):
    mine = [(d, res) for d, label, res in results if res['kernel_source'] == source]
    if not mine:
      continue
    names = [n for n in mine[0][1]['knockouts'] if all(n in res['knockouts'] for _, res in mine)]

    def averaged(relative: str) -> dict[str, dict[str, float]]:
      return report.seed_averaged([report.read_per_image(os.path.join(d, relative))
                                   for d, _ in mine])

    intact = averaged(mine[0][1]['per_image_csv'])
    for name in names:
      knocked = averaged(mine[0][1]['knockouts'][name]['per_image_csv'])
      rows += [c for c in report.paired_rows(intact, knocked, f'{source} intact', name)
               if c['metric'] in shown]
  labelled = [(label, res) for _, label, res in results]
  edge_tol = results[0][2]['edge']['tolerance_px']
  run_names = {n for _, _, res in results for n in res['knockouts']}
  not_run = {n: why for _, _, res in results for n, why in res.get('not_run', {}).items()}
  lines = ['', '## Test-time knock-outs', '',
           'Each run scored again with a part of its trained network removed '
           '(`sgdc_jax.analysis.knockouts`): ' +
           '; '.join(f'`{k}`: {v}' for k, v in diagnose.knockouts.DESCRIPTIONS.items()
                     if k in run_names) +
           ''.join(f'. `{k}` not run: {why}' for k, why in not_run.items()) +
           '. Per source, per-image scores averaged over seeds, then intact - knocked '
           '("reference better" = the knock-out hurts).', '',
           '| intact vs knock-out | metric | n | mean diff | 95 % CI | Wilcoxon p | W/T/L | '
           'verdict |', '|---|---|---|---|---|---|---|---|']
  lines += report.comparison_rows(rows)
  lines += ['', '## SGDC blocks after training', '']
  lines += diagnose.block_table(labelled)
  lines += ['', f'## SGE edge map: boundary F-score at {edge_tol:g} px', '']
  lines += diagnose.edge_table(labelled)
  return '\n'.join(lines) + '\n'


def run_ablation(config: ml_collections.ConfigDict, workdir: str, sources: Sequence[str],
                 seeds: Sequence[int], split: str | None = None) -> dict[str, str] | None:
  """Trains/tests every missing run and writes the report; see the module docstring.

  Returns:
    Paths of the report files (process 0; None elsewhere), or None when preempted.
  Raises:
    ConfigError / ValueError: bad config, sources or seeds, or a finished run whose config
      differs from `config` (checked for every run before anything is trained).
  """
  unknown = [s for s in sources if s not in KERNEL_SOURCES]
  if unknown or not sources:
    raise ValueError(f'--sources: {unknown or "none given"}; expected a comma-separated subset '
                     f'of {", ".join(KERNEL_SOURCES)}')
  if len(set(sources)) != len(sources) or len(set(seeds)) != len(seeds) or not seeds:
    raise ValueError(f'--sources and --seeds must be non-empty and without repeats; got '
                     f'{list(sources)} and {list(seeds)}')
  split = split or config.data.test_split
  runs = plan(workdir, sources, seeds)
  finished = {}
  for run in runs:  # validate every run's config and every finished record up front
    config_lib.validate_config(run_config(config, run), mode='train')
    finished[run] = finished_record(config, run)
  records = []
  for run in runs:
    record = finished[run]
    if record is not None:
      print(f'[ablation] {run.source} seed {run.seed}: finished, skipped', flush=True)
      if 'diagnostics' not in record:
        print(f'[ablation] {run.source} seed {run.seed}: adding its diagnostics', flush=True)
        record = add_diagnostics(config, run, record)
    else:
      print(f'[ablation] {run.source} seed {run.seed}: training in {run.directory}', flush=True)
      record = train_and_test(config, run, split)
      if record is None:
        print('[ablation] preempted; rerun the same command to resume', flush=True)
        return None
    records.append(record)
  if jax.process_index() != 0:
    return None
  title = (f'Kernel-source ablation: {config.data.name}, split {split}, '
           f'{int(config.train.num_steps)} steps per run{_region_note(records)}')
  return write_report(workdir, records, title)


def _region_note(records: Sequence[dict[str, Any]]) -> str:
  """', scored inside the region of interest' when the runs' test images carried one."""
  regions = {r.get('region', 'image') for r in records}
  if regions == {'roi'}:
    return ', scored inside each image\'s region of interest'
  if regions - {'image'}:
    return ', scored inside the region of interest where an image has one'
  return ''


def define_flags() -> dict[str, Any]:
  """Defines the command-line flags (only when run as a script, so importing this module
  registers nothing)."""
  return {
      'config': config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                                lock_config=True),
      'workdir': flags.DEFINE_string('workdir', None, 'Folder holding one subfolder per run.'),
      'sources': flags.DEFINE_list('sources', ['structure', 'pooled', 'none'],
                                   'Kernel sources.'),
      'seeds': flags.DEFINE_list('seeds', ['0'], 'Seeds (integers).'),
      'split': flags.DEFINE_string('split', None, 'Split scored (default: data.test_split).'),
  }


def main(argv: Sequence[str], holders: dict[str, Any]) -> None:  # pylint: disable=unused-argument
  """absl entry point (`cli.parse_flags` refuses extra arguments and expands the paths); user
  errors print one message and exit non-zero (see `sgdc_jax.cli`)."""
  values = {k: h.value for k, h in holders.items()}
  cli.run(lambda: _main(values))


def _main(values: dict[str, Any]) -> None:
  if not values['workdir']:
    raise ValueError('--workdir is required')
  try:
    seeds = [int(s) for s in values['seeds']]
  except ValueError:
    raise ValueError(f'--seeds must be integers; got {values["seeds"]}') from None
  # Several processes: a lost one ends the others with one line (exit 5), as in main.
  with peers.guard(experiment.initialize_processes(values['config'])):
    experiment.enable_compilation_cache(values['config'])
    paths = run_ablation(values['config'], values['workdir'], values['sources'], seeds,
                         values['split'])
  if paths:
    print('[ablation] report: ' + ', '.join(paths.values()))


if __name__ == '__main__':
  _holders = define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(lambda argv: main(argv, _holders), flags_parser=cli.parse_flags)
