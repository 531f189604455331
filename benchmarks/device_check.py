"""The whole GPU check in one run: environment, correctness, benchmarks, a short real training.

  python benchmarks/device_check.py OUTDIR [--data=JPEG_DIR] [--wheels=DIR] [--budget=540]
  python benchmarks/device_check.py OUTDIR --cpu          # tiny sizes, Pallas interpret mode

Writes `OUTDIR/report.md` and `OUTDIR/report.json` (plus `OUTDIR/logs/STEP.log`). Each step runs
in its own subprocess (its own process group) with its own time budget; a step that fails,
crashes or runs past its budget is reported as such (with the tail of its log) and the others
still run. Time a step leaves unused is added to the next step's budget (at most doubling it),
and the whole run stops starting steps at `--budget` seconds (default 540 = 9 minutes). Steps:

1. `wheels`: installs the wheels prepared by `benchmarks/device_wheels.py` (`--wheels`, e.g.
   `.devcarry/wheels`) with pip --no-index --no-deps --target into `--site`, which every later
   step has on its PYTHONPATH (with the repository); without `--wheels` it only checks that the
   data stack (grain, clu, tensorflow_datasets, ml_collections) imports.
2. `env`: devices, versions (python, jax, jaxlib, flax, optax, orbax-checkpoint, grain, ...),
   `nvidia-smi` (driver, card, memory), and that every entry point imports.
3. `correctness`: the fused Pallas kernel (compiled on a GPU, interpret mode on CPU) against
   softmax + `unfold` at the shapes of tests/test_pallas_aggregate.py, values and gradients,
   float32 and bfloat16; the SGDC block with each impl against `unfold`.
4. `bench_aggregate`, `bench_block`: `benchmarks/bench_sgdc.py`'s workers in one process per
   table: aggregation alone with the Pallas launch sweep (GB/s), block fwd and fwd+bwd for
   shift/unfold/pallas, float32 and bfloat16. From them the report recommends the launch and
   the impl `'auto'` should use: pallas only if faster than shift at every benchmarked size.
5. `prepare`: `python -m sgdc_jax.data.prepare` of the ISIC 2017 JPEG folder (`--data`) as the
   `folder` data set `isic2017` (with `--cpu` and no `--data`: a few synthetic JPEGs).
6. `bench_train`: `benchmarks/bench_train.py`, end to end vs the step alone, MFU, for the
   default network (ResNet-50, D=256) at 256 px in bfloat16, on the prepared data (synthetic
   lesions if `prepare` did not pass).
7. `train`, `evaluate`: `configs/isic2017.py` (full size) for `--train_steps` steps (a SIGTERM
   near the end of the budget makes the loop save and stop early, which the report says), then
   test-split metrics (Dice) of the last checkpoint.

With `--cpu` (JAX_PLATFORMS=cpu) every size is tiny: the run checks the script, not the device.
`SGDC_DEVICE_CHECK_FAULT=STEP:fail` or `STEP:hang` injects a failure or a hang into one step,
`STEP:hang_after_row` a hang after a step's first measured row (tests). Benchmark and
correctness rows are saved as they come, so a step that is killed or crashes keeps the rows it
measured (the XLA impls run before Pallas at every size).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import glob
import itertools
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
FAULT_ENV = 'SGDC_DEVICE_CHECK_FAULT'
DATA_NAME = 'isic2017'
IMAGES, MASKS = '{split}x/imgx{id}.jpg', '{split}y/imgy{id}.jpg'
VERSIONS = ('jax', 'jaxlib', 'jax-cuda13-plugin', 'jax-cuda12-plugin', 'flax', 'optax',
            'orbax-checkpoint', 'numpy', 'grain', 'clu', 'tensorflow-datasets', 'ml-collections',
            'tensorboard', 'array-record')
DATA_STACK = ('grain', 'clu.metrics', 'tensorflow_datasets', 'ml_collections', 'array_record')
ENTRY_POINTS = ('sgdc_jax.main', 'sgdc_jax.run.evaluate', 'sgdc_jax.run.predict', 'sgdc_jax.data.prepare',
                'sgdc_jax.analysis.ablation')
# Launch sweep of the aggregation table (THxTW/num_warps/num_stages), besides the default
# launch of sgdc_jax/ops/pallas_aggregate.py (the 'pallas' row).
LAUNCHES = ('16x8/4/2', '8x16/4/2', '16x8/8/3', '16x16/8/2')


@dataclasses.dataclass(frozen=True)
class Step:
  name: str
  budget_s: float       # on a device
  cpu_budget_s: float   # with --cpu
  needs: tuple[str, ...] = ()
  what: str = ''


STEPS = (
    Step('wheels', 15, 60, (), 'install the carried wheels / check the data stack imports'),
    Step('env', 20, 60, (), 'devices, versions, driver, entry points import'),
    Step('correctness', 50, 120, (), 'Pallas vs unfold, SGDC block per impl'),
    Step('bench_aggregate', 75, 90, (), 'aggregation alone: bandwidth, launch sweep'),
    Step('bench_block', 45, 90, (), 'SGDC block fwd, fwd+bwd per impl'),
    Step('prepare', 20, 60, (), 'ISIC 2017 JPEGs -> ArrayRecord'),
    Step('bench_train', 105, 120, (), 'end to end vs step alone, MFU'),
    Step('train', 130, 120, ('prepare',), 'full-size isic2017 config, fixed steps'),
    Step('evaluate', 40, 60, ('train',), 'test-split Dice of the last checkpoint'),
)
# Default --budget on a device and with --cpu. Of the device's 540 s the base budgets above
# leave STARTUP_RESERVE_S for the steps' process start-ups and kills, so that the run ends
# before a 570 s limit on the whole command.
DEVICE_BUDGET_S, CPU_BUDGET_S = 540.0, 900.0
STARTUP_RESERVE_S = 40
STEP_NAMES = tuple(s.name for s in STEPS)


# ------------------------------------------------------------------------------------------
# Parent: runs the steps, writes the reports.


def step_env(args) -> dict[str, str]:
  """Environment of the step subprocesses: the wheel site and the repository importable."""
  env = dict(os.environ)
  paths = [args.site, REPO] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
  env['PYTHONPATH'] = os.pathsep.join(paths)
  if args.cpu:
    env['JAX_PLATFORMS'] = 'cpu'
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  return env


def _tail(path: str, lines: int = 15) -> str:
  try:
    with open(path, encoding='utf-8', errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return ''


def run_step(step: Step, args, timeout: float) -> dict:
  """Runs one step in a subprocess (own process group), killed after `timeout` seconds."""
  logs = os.path.join(args.outdir, 'logs')
  os.makedirs(logs, exist_ok=True)
  log = os.path.join(logs, f'{step.name}.log')
  result_path = os.path.join(args.work, 'results', f'{step.name}.json')
  os.makedirs(os.path.dirname(result_path), exist_ok=True)
  if os.path.exists(result_path):
    os.remove(result_path)
  cmd = [sys.executable, os.path.abspath(__file__), args.outdir, '--step', step.name,
         '--result', result_path] + passthrough_flags(args)
  if step.name == 'train':  # leaves time to save and return before the kill
    cmd.append(f'--stop_after={max(1.0, timeout - (15 if args.cpu else 30)):.0f}')
  start = time.monotonic()
  with open(log, 'w', encoding='utf-8') as out:
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=step_env(args),
                            cwd=REPO, start_new_session=True)
    try:
      rc = proc.wait(timeout=timeout)
      timed_out = False
    except subprocess.TimeoutExpired:
      timed_out, rc = True, None
      _signal_group(proc.pid, signal.SIGTERM)
      try:
        proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        pass
    # Whatever the step's own process did, nothing it started may outlive it (a benchmark
    # that saves and goes on after SIGTERM would keep GPU memory from the next step).
    kill_group(proc.pid)
    proc.wait()
  seconds = time.monotonic() - start
  result = read_result(result_path)
  reported = result.pop('status', None)
  if timed_out:
    status = 'timeout'
    result['error'] = f'ran past its budget of {timeout:.0f} s (killed)'
  elif rc != 0:
    status = 'failed'
    result.setdefault('error', f'exit status {rc}')
  elif reported == 'incomplete':  # exited 0 without writing its final result
    status = 'failed'
    result.setdefault('error', 'exited before writing its result')
  else:
    status = reported or ('passed' if result else 'failed')
  entry = dict(status=status, seconds=round(seconds, 1), budget_s=round(timeout, 1),
               what=step.what, log=os.path.relpath(log, args.outdir), **result)
  if status != 'passed':
    entry['log_tail'] = _tail(log)
  return entry


def _signal_group(pgid: int, sig: int) -> bool:
  """Sends `sig` to the process group; False when no process of it is left."""
  try:
    os.killpg(pgid, sig)
    return True
  except ProcessLookupError:
    return False


def kill_group(pgid: int, wait_s: float = 10.0) -> None:
  """SIGKILLs every process of the group and waits (bounded) until none is left."""
  deadline = time.monotonic() + wait_s
  while _signal_group(pgid, signal.SIGKILL) and time.monotonic() < deadline:
    try:  # reap the leader if it is ours, so that the group can empty
      os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
      pass
    time.sleep(0.05)


def read_result(path: str) -> dict:
  """A step's result file: {} when absent or torn (a kill while it was being replaced)."""
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return {}


def write_result(path: str, result: dict) -> None:
  """Writes a step's result atomically (a kill never leaves half a file)."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(_clean(result), f, default=str)
  os.replace(tmp, path)


def add_row(args, rows: list[dict], row: dict) -> None:
  """Appends a measured row, logs it and saves the rows so far (status 'incomplete'): a
  timeout or crash later in the step keeps them. `STEP:hang_after_row` hangs here (tests)."""
  rows.append(row)
  print(json.dumps(row), flush=True)
  if args.result:
    write_result(args.result, dict(rows=rows, status='incomplete'))
  if os.environ.get(FAULT_ENV) == f'{args.step}:hang_after_row':
    time.sleep(10**6)


def passthrough_flags(args) -> list[str]:
  flags = [f'--work={args.work}', f'--site={args.site}', f'--train_steps={args.train_steps}']
  if args.cpu:
    flags.append('--cpu')
  if args.data:
    flags.append(f'--data={args.data}')
  if args.wheels:
    flags.append(f'--wheels={args.wheels}')
  return flags


def step_budgets(args) -> dict[str, float]:
  """Base seconds per step: device or --cpu values, then the --budgets overrides."""
  budgets = {s.name: s.cpu_budget_s if args.cpu else s.budget_s for s in STEPS}
  for item in filter(None, args.budgets.split(',')):
    name, _, seconds = item.partition('=')
    if name not in budgets:
      raise SystemExit(f'--budgets: unknown step {name!r}; expected one of {STEP_NAMES}')
    budgets[name] = float(seconds)
  return budgets


def step_timeout(budget: float, slack: float, left: float, reserve: float) -> float:
  """Seconds a step may run: its base `budget` plus the `slack` earlier steps left unused.

  The extra is at most the base budget again (a hang costs at most twice what was planned for
  it) and never eats into `reserve`, the base budgets of the steps still to come; nothing runs
  past `left`, what remains of the whole run's budget.
  """
  extra = min(slack, budget, max(0.0, left - reserve - budget))
  return min(left, budget + extra)


def run_all(args) -> dict:
  """Runs the selected steps in order; returns the report dict (also written to OUTDIR)."""
  os.makedirs(args.outdir, exist_ok=True)
  os.makedirs(args.work, exist_ok=True)
  selected = set(args.only.split(',')) if args.only else set(STEP_NAMES)
  unknown = selected - set(STEP_NAMES)
  if unknown:
    raise SystemExit(f'--only: unknown steps {sorted(unknown)}; expected some of {STEP_NAMES}')
  start = time.monotonic()
  report = dict(started=datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec='seconds'), cpu_mode=bool(args.cpu), budget_s=args.budget,
      command=' '.join([os.path.relpath(__file__, REPO)] + sys.argv[1:]), steps={})
  budgets = step_budgets(args)
  slack = 0.0
  for index, step in enumerate(STEPS):
    if step.name not in selected:
      continue
    budget = budgets[step.name]
    reserve = sum(budgets[s.name] for s in STEPS[index + 1:] if s.name in selected)
    failed_needs = [n for n in step.needs if n in report['steps']
                    and report['steps'][n]['status'] != 'passed']
    left = args.budget - (time.monotonic() - start)
    if failed_needs:
      entry = dict(status='skipped', seconds=0.0, budget_s=budget, what=step.what,
                   error=f'needs {", ".join(failed_needs)}, which did not pass')
    elif left < 5:
      entry = dict(status='skipped', seconds=0.0, budget_s=budget, what=step.what,
                   error=f'out of time: {args.budget:.0f} s total budget used')
    else:
      entry = run_step(step, args, step_timeout(budget, slack, left, reserve))
      slack = max(0.0, budget + slack - entry['seconds'])
    report['steps'][step.name] = entry
    print(f'[{time.monotonic() - start:6.1f} s] {step.name}: {entry["status"]} '
          f'({entry["seconds"]:.1f} s){" - " + entry["error"] if entry.get("error") else ""}',
          flush=True)
    write_reports(args.outdir, report)  # partial reports survive a kill of the whole run
  report['recommendation'] = recommend(
      report['steps'].get('bench_aggregate', {}).get('rows', []),
      report['steps'].get('bench_block', {}).get('rows', []),
      report['steps'].get('correctness', {}).get('status') == 'passed')
  report['total_s'] = round(time.monotonic() - start, 1)
  write_reports(args.outdir, report)
  return report


def _faster_everywhere(rows, impl, other, keys=('fwd', 'fwd_bwd')) -> tuple[bool, int]:
  """Whether `impl` beats `other` in every key at every (size, dtype) of `rows`; how many.

  A (size, dtype) where either has no timing (an error row, or not run) counts as a loss.
  """
  points = sorted({(r['size'], r['dtype']) for r in rows})
  times = {(r['size'], r['dtype'], r['impl']): r for r in rows if 'fwd_bwd' in r}

  def wins(s, d):
    a, b = times.get((s, d, impl)), times.get((s, d, other))
    return a is not None and b is not None and all(a[k] < b[k] for k in keys)

  return bool(points) and all(wins(s, d) for s, d in points), len(points)


# Largest relative difference from unfold a benchmark row may show (bench_sgdc's max err).
BENCH_TOLERANCE = {'float32': 1e-3, 'bfloat16': 5e-2}


def _accurate(row) -> bool:
  err = row.get('max_err')
  return 'error' not in row and err is not None and err <= BENCH_TOLERANCE[row['dtype']]


def recommend(aggregate_rows: list[dict], block_rows: list[dict],
              correctness_passed: bool = True) -> dict:
  """The launch and impl `'auto'` should use, from the benchmark rows.

  Launch: among the Pallas rows of the aggregation table (the default launch, impl 'pallas',
  and the sweep, 'pallas@...'; each row names its `launch`), the one with the lowest
  geometric-mean fwd+bwd time relative to the best launch of each (size, dtype). Impl:
  'pallas' only if Pallas is faster than 'shift' in fwd and fwd+bwd at every benchmarked size
  and dtype of both tables (aggregation at the default launch and at the recommended one;
  the block at the default launch), the correctness step passed, every Pallas row of the
  aggregation table agrees with unfold (`BENCH_TOLERANCE`), and nothing ran in interpret
  mode; otherwise 'shift'. A launch whose rows failed or are off is never recommended.
  """
  out = dict(launch=None, impl='shift', reasons=[])
  timed = [r for r in aggregate_rows if 'fwd_bwd' in r]
  inaccurate = sorted({r['impl'] for r in aggregate_rows
                       if r['impl'].startswith('pallas') and not _accurate(r)})
  pallas = [r for r in timed if r['impl'].startswith('pallas') and r.get('launch')
            and r['impl'] not in inaccurate]
  best = {}
  for r in pallas:
    key = (r['size'], r['dtype'])
    best[key] = min(best.get(key, math.inf), r['fwd_bwd'])
  score = {}
  for launch in sorted({r['launch'] for r in pallas}):
    ratios = [r['fwd_bwd'] / best[(r['size'], r['dtype'])] for r in pallas
              if r['launch'] == launch]
    if len(ratios) == len(best):  # timed at every (size, dtype)
      score[launch] = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
  checks = [('aggregate, default launch', timed, 'pallas'),
            ('block', [r for r in block_rows if 'fwd_bwd' in r], 'pallas')]
  if score:
    out['launch'] = min(score, key=score.get)
    out['launch_scores'] = {k: round(v, 3) for k, v in score.items()}
    out['reasons'].append(f'launch {out["launch"]}: geometric-mean fwd+bwd time '
                          f'{score[out["launch"]]:.3f}x the best launch of each size and dtype')
    recommended = [dict(r, impl='pallas*') if r in pallas and r['launch'] == out['launch']
                   else r for r in timed]
    checks.append(('aggregate, recommended launch', recommended, 'pallas*'))
  verdicts = []
  for what, rows, impl in checks:
    faster, n = _faster_everywhere(rows, impl, 'shift')
    verdicts.append(faster)
    out['reasons'].append(f'{what}: pallas {"faster" if faster else "not faster"} than shift '
                          f'at {"every one" if faster else "some"} of {n} (size, dtype) pairs'
                          if n else f'{what}: no pallas/shift pair timed')
  if inaccurate:
    verdicts.append(False)
    out['reasons'].append(f'failed or beyond tolerance of unfold: {", ".join(inaccurate)}')
  if not correctness_passed:
    verdicts.append(False)
    out['reasons'].append('the correctness step did not pass')
  interpreted = any(r.get('interpret') for r in aggregate_rows + block_rows)
  if all(verdicts) and not interpreted:
    out['impl'] = 'pallas'
  if interpreted:
    out['reasons'].append('Pallas ran in interpret mode (CPU): times are no basis for a choice')
  return out


# ------------------------------------------------------------------------------------------
# Reports.


def _fmt(v, spec='.3g'):
  if v is None:
    return '-'
  if isinstance(v, float):
    return format(v, spec)
  return str(v)


def _table(header: list[str], rows: list[list]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(_fmt(c) for c in row) + ' |' for row in rows]
  return lines + ['']


def markdown(report: dict) -> str:
  """report.md: a summary table of the steps, then each step's numbers."""
  steps = report['steps']
  lines = [f'# Device check ({"CPU mode, tiny sizes" if report["cpu_mode"] else "device"})', '',
           f'Started {report["started"]}; command `{report["command"]}`; total '
           f'{_fmt(report.get("total_s"))} s of a {report["budget_s"]:.0f} s budget.', '']
  lines += _table(['step', 'status', 'seconds', 'budget s', 'what', 'error'],
                  [[n, s['status'], s['seconds'], s['budget_s'], s['what'],
                    (s.get('error') or '').replace('|', '/').replace('\n', ' ')[:200]]
                   for n, s in steps.items()])
  env = steps.get('env', {})
  if env.get('devices'):
    lines += ['## Environment', '']
    lines += [f'- devices: {env["device_count"]} x {env["device_kind"]} ({env["backend"]})',
              f'- python {env.get("python")}, ' + ', '.join(
                  f'{k} {v}' for k, v in env.get('versions', {}).items() if v),
              f'- nvidia-smi: {env.get("nvidia_smi") or "not present"}',
              f'- CPUs: {env.get("cpus")}; tensorflow importable: {env.get("tensorflow")}', '']
  wheels = steps.get('wheels', {})
  if wheels.get('installed') is not None:
    lines += [f'Wheels: {len(wheels["installed"])} installed from `{wheels.get("from")}` '
              f'({_fmt(wheels.get("mib"))} MiB): {", ".join(wheels["installed"])}', '']
  corr = steps.get('correctness', {})
  if corr.get('rows'):
    lines += ['## Correctness (max |difference| from unfold; out, dx, dlogits / all grads)', '']
    lines += _table(['check', 'shape', 'dtype', 'mode', 'max err', 'tolerance', 'ok'],
                    [[r['check'], r['shape'], r['dtype'], r['mode'], r['max_err'], r['tol'],
                      r['ok']] for r in corr['rows']])
  agg = steps.get('bench_aggregate', {})
  if agg.get('rows'):
    lines += ['## Aggregation alone (softmax + k x k aggregation), median times', '']
    lines += _table(['size', 'dtype', 'impl', 'fwd ms', 'fwd GB/s', 'fwd+bwd ms',
                     'fwd+bwd GB/s', 'max err', 'note'],
                    [[r['size'], r['dtype'], r['impl'], _ms(r, 'fwd'), _gbps(r, 'fwd'),
                      _ms(r, 'fwd_bwd'), _gbps(r, 'fwd_bwd'), r.get('max_err'),
                      r.get('error') or r.get('skipped') or ('interpret mode' if r.get(
                          'interpret') else '')] for r in agg['rows']])
  block = steps.get('bench_block', {})
  if block.get('rows'):
    lines += ['## SGDC block (C as in bench_sgdc, heads=4, k=7), median times', '']
    lines += _table(['size', 'dtype', 'impl', 'fwd ms', 'fwd+bwd ms', 'XLA temp MB', 'note'],
                    [[r['size'], r['dtype'], r['impl'], _ms(r, 'fwd'), _ms(r, 'fwd_bwd'),
                      r.get('xla_temp_mb'), r.get('error') or r.get('skipped') or (
                          'interpret mode' if r.get('interpret') else '')]
                     for r in block['rows']])
  rec = report.get('recommendation')
  if rec:
    lines += ['## Recommendation for `impl=\'auto\'`', '',
              f'- impl: **{rec["impl"]}**; Pallas launch: **{rec["launch"] or "-"}**']
    lines += [f'- {r}' for r in rec['reasons']] + ['']
  bt = steps.get('bench_train', {})
  if bt.get('result'):
    r = bt['result']
    lines += ['## Training throughput (bench_train)', '']
    lines += _table(['data', 'size', 'batch', 'dtype', 'encoder', 'end to end img/s',
                     'step alone img/s', 'gap', 'pipeline img/s', 'GFLOP/img', 'MFU e2e',
                     'MFU step'],
                    [[r.get('data'), r.get('image_size'), r.get('batch'), r.get('dtype'),
                      r.get('encoder'), r.get('e2e_images_per_s'), r.get('step_images_per_s'),
                      r.get('gap'), r.get('pipeline_images_per_s'), r.get('gflop_per_image'),
                      r.get('mfu_e2e'), r.get('mfu_step')]])
  tr, ev = steps.get('train', {}), steps.get('evaluate', {})
  if tr.get('steps_done') is not None:
    lines += ['## Short real training (configs/isic2017.py)', '',
              f'- data: {steps.get("prepare", {}).get("splits")}; {tr["steps_done"]} of '
              f'{tr["steps_requested"]} steps of {tr["batch_size"]} at {tr["image_size"]} px, '
              f'{tr["dtype"]}, {tr["encoder"]}; compile {_fmt(tr.get("compile_s"))} s, loop '
              f'{_fmt(tr.get("loop_s"))} s = {_fmt(tr.get("images_per_s"))} images/s'
              + ('; stopped early at the end of its budget' if tr.get('stopped_early') else '')]
    if ev.get('mean'):
      m = ev['mean']
      lines.append(f'- {ev.get("split")} split, {ev.get("n_images")} images, checkpoint step '
                   f'{ev.get("checkpoint_step")}: Dice {_fmt(m.get("dice"), ".4f")}, IoU '
                   f'{_fmt(m.get("iou"), ".4f")}, HD95 {_fmt(m.get("hd95"), ".2f")}')
    lines.append('')
  return '\n'.join(lines)


def _ms(r, key):
  return r[key] * 1e3 if key in r else None


def _gbps(r, key):
  return r[f'{key}_bytes'] / r[key] / 1e9 if key in r and f'{key}_bytes' in r else None


def _clean(obj):
  """JSON-safe: NaN/inf become None (strict JSON)."""
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {str(k): _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  return obj


def write_reports(outdir: str, report: dict) -> None:
  clean = _clean(report)
  with open(os.path.join(outdir, 'report.json'), 'w', encoding='utf-8') as f:
    json.dump(clean, f, indent=1, default=str, allow_nan=False)
  with open(os.path.join(outdir, 'report.md'), 'w', encoding='utf-8') as f:
    f.write(markdown(clean))


# ------------------------------------------------------------------------------------------
# Steps (each runs in its own subprocess; returns a JSON-able dict, 'status' optional).


def _versions() -> dict[str, str | None]:
  out = {}
  for name in VERSIONS:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def do_wheels(args) -> dict:
  if not args.wheels:
    import importlib  # pylint: disable=g-import-not-at-top
    for module in DATA_STACK:
      importlib.import_module(module)
    return dict(installed=[], **{'from': None}, note='no --wheels: data stack already importable')
  wheels = sorted(f for f in os.listdir(args.wheels) if f.endswith('.whl'))
  if not wheels:
    raise RuntimeError(f'no .whl files in {args.wheels}')
  os.makedirs(args.site, exist_ok=True)
  cmd = [sys.executable, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps', '--no-compile',
         '--no-cache-dir', '--upgrade', '--target', args.site,
         *[os.path.join(args.wheels, w) for w in wheels]]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  print(proc.stdout[-3000:], proc.stderr[-3000:])
  if proc.returncode:
    raise RuntimeError(f'pip install --target failed ({proc.returncode}): '
                       f'{proc.stderr.strip().splitlines()[-1:]}')
  # The site was not on sys.path when this process started: check in a fresh one.
  check = subprocess.run([sys.executable, '-c', 'import importlib, sys\nfor m in sys.argv[1:]: '
                          'importlib.import_module(m)', *DATA_STACK], capture_output=True,
                         text=True, check=False)
  if check.returncode:
    raise RuntimeError(f'installed, but the data stack does not import: '
                       f'{check.stderr.strip().splitlines()[-1:]}')
  mib = sum(os.path.getsize(os.path.join(args.wheels, w)) for w in wheels) / 2**20
  return {'installed': [w.split('-')[0] + '==' + w.split('-')[1] for w in wheels],
          'from': args.wheels, 'mib': round(mib, 2), 'site': args.site}


def do_env(args) -> dict:
  import sgdc_jax  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  import importlib
  import jax
  devices = jax.devices()
  smi = None
  if shutil.which('nvidia-smi'):
    proc = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total,'
                           'compute_cap,clocks.max.sm', '--format=csv,noheader'],
                          capture_output=True, text=True, check=False, timeout=20)
    smi = proc.stdout.strip() or proc.stderr.strip()
  imported = {}
  for module in ENTRY_POINTS:
    importlib.import_module(module)
    imported[module] = 'ok'
  try:
    import tensorflow  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
    tensorflow_present = True
  except ImportError:
    tensorflow_present = False
  out = dict(backend=jax.default_backend(), device_count=len(devices),
             device_kind=devices[0].device_kind, devices=[str(d) for d in devices],
             python=platform.python_version(), versions=_versions(), nvidia_smi=smi,
             cpus=len(os.sched_getaffinity(0)), entry_points=imported,
             tensorflow=tensorflow_present)
  if not args.cpu and out['backend'] != 'gpu':
    out.update(status='failed', error=f'backend is {out["backend"]!r}, not a GPU')
  return out


# The shapes, heads, kernel sizes and tiles of tests/test_pallas_aggregate.py.
CORRECTNESS_SHAPES = (
    ((1, 5, 11, 8), 1, 3, (8, 8)),
    ((2, 9, 6, 16), 4, 7, (4, 4)),
    ((1, 3, 2, 8), 2, 7, (8, 8)),
    ((1, 10, 7, 24), 4, 5, (4, 2)),
    ((1, 6, 9, 16), 2, 7, (8, 8)),   # the bf16 test's shape
)
TOLERANCE = {'float32': 1e-4, 'bfloat16': 3e-2}


def do_correctness(args) -> dict:
  import sgdc_jax  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  import jax
  import jax.numpy as jnp
  from sgdc_jax.modules.sgdc import SGDC
  from sgdc_jax.ops.aggregate import aggregate_unfold
  from sgdc_jax.ops.pallas_aggregate import softmax_aggregate_pallas

  interpret = jax.default_backend() == 'cpu'
  mode = 'interpret' if interpret else 'compiled'
  rows = []

  def value_and_grads(fn, x, logits, cot):
    def f(a, b, c):
      out, vjp = jax.vjp(fn, a, b)
      return out, vjp(c.astype(out.dtype))
    return jax.jit(f)(x, logits, cot)

  def max_err(got, want, scale=False):
    errs = []
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
      d = jnp.max(jnp.abs(a - b))
      errs.append(float(d / (jnp.max(jnp.abs(b)) + 1e-6)) if scale else
                  float(d / (1 + jnp.max(jnp.abs(b)))))
    return max(errs)

  # The float32 reference runs at full matmul precision (no TF32 on the GPU).
  # --cpu: two of the shapes (the suite's interpret-mode tests cover them all).
  shapes = CORRECTNESS_SHAPES[1::3] if args.cpu else CORRECTNESS_SHAPES
  with jax.default_matmul_precision('highest'):
    for shape, heads, k, tile in shapes:
      for dtype in ('float32', 'bfloat16'):
        keys = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(keys[0], shape).astype(dtype)
        logits = (3 * jax.random.normal(keys[1], (*shape[:3], heads, k * k))).astype(dtype)
        cot = jax.random.normal(keys[2], shape)
        fused = functools.partial(softmax_aggregate_pallas, kernel_size=k, tile=tile,
                                  interpret=interpret)
        got = value_and_grads(lambda a, b, f=fused: f(a, b), x, logits, cot)
        ref = value_and_grads(
            lambda a, b, k=k: aggregate_unfold(a, jax.nn.softmax(b, axis=-1), k),
            x.astype(jnp.float32), logits.astype(jnp.float32), cot)
        err = max_err(got, ref)
        add_row(args, rows, dict(check=f'pallas tile {tile[0]}x{tile[1]} k={k} heads={heads}',
                                 shape=list(shape), dtype=dtype, mode=mode, max_err=err,
                                 tol=TOLERANCE[dtype], ok=err <= TOLERANCE[dtype]))

    # The SGDC block, each impl vs unfold, output and every gradient (scaled by its max).
    x = jax.random.normal(jax.random.key(0), (2, 12, 10, 32))
    guidance = jax.random.normal(jax.random.key(1), (2, 6, 5, 8))
    cot = jax.random.normal(jax.random.key(2), x.shape)
    for dtype in ('float32', 'bfloat16'):
      blocks = {impl: SGDC(32, guide_channels=8, num_heads=4, kernel_size=7,
                           layer_scale_init=0.5, impl=impl, dtype=dtype)
                for impl in ('unfold', 'shift', 'pallas')}
      variables = jax.jit(blocks['unfold'].init)(jax.random.key(3), x, guidance)
      results = {}
      for impl, block in blocks.items():
        def vg(v, block=block):
          y, vjp = jax.vjp(lambda v: block.apply(v, x, guidance), v)
          return y, vjp(cot.astype(y.dtype))[0]
        results[impl] = jax.jit(vg)(variables)
      for impl in ('shift', 'pallas'):
        err = max_err(results[impl], results['unfold'], scale=True)
        add_row(args, rows, dict(check=f'SGDC block impl={impl} vs unfold',
                                 shape=list(x.shape), dtype=dtype,
                                 mode=mode if impl == 'pallas' else 'xla', max_err=err,
                                 tol=TOLERANCE[dtype], ok=err <= TOLERANCE[dtype]))
  bad = [r for r in rows if not r['ok']]
  out = dict(rows=rows, status='passed' if not bad else 'failed')
  if bad:
    out['error'] = f'{len(bad)} of {len(rows)} checks beyond tolerance'
  return out


def _bench_sgdc():
  sys.path.insert(0, BENCH_DIR)
  import bench_sgdc  # pylint: disable=g-import-not-at-top
  return bench_sgdc


def bench_sizes(cpu: bool):
  return ((1, 16, 16, 32),) if cpu else tuple(_bench_sgdc().SIZES)


def default_launch() -> str:
  """The kernel's default launch as THxTW/num_warps/num_stages."""
  from sgdc_jax.ops import pallas_aggregate as pa  # pylint: disable=g-import-not-at-top
  return f'{pa.TILE[0]}x{pa.TILE[1]}/{pa.NUM_WARPS}/{pa.NUM_STAGES}'


def _bench_rows(worker, impls, args, repeats) -> list[dict]:
  import jax  # pylint: disable=g-import-not-at-top
  rows = []
  interpret = jax.default_backend() == 'cpu'
  # The XLA rows first, at every size: a Pallas compile that crashes the process or runs out
  # of time cannot take them along (each row is saved as it comes).
  ordered = ([i for i in impls if not i.startswith('pallas')]
             + [i for i in impls if i.startswith('pallas')])
  for impl, dtype, size in itertools.product(ordered, ('float32', 'bfloat16'),
                                             bench_sizes(args.cpu)):
    row = dict(size='x'.join(map(str, size)), dtype=dtype, impl=impl)
    try:
      row.update(worker(impl, size, repeats, dtype, allow_interpret=True))
    except Exception as e:  # pylint: disable=broad-except  (one row, not the table)
      row['error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}'
    row.pop('peak_mb', None)  # one process for all rows: not this row's own peak
    if impl.startswith('pallas'):
      row['launch'] = impl.split('@', 1)[1] if '@' in impl else default_launch()
      if interpret:
        row['interpret'] = True
    add_row(args, rows, row)
  return rows


def do_bench_aggregate(args) -> dict:
  bench = _bench_sgdc()
  impls = ['unfold', 'shift', 'pallas'] + [f'pallas@{s}' for s in
                                           (LAUNCHES[:1] if args.cpu else LAUNCHES)]
  rows = _bench_rows(bench.worker_aggregate, impls, args, 1 if args.cpu else 5)
  return _table_status(rows)


def do_bench_block(args) -> dict:
  rows = _bench_rows(_bench_sgdc().worker_jax, ['shift', 'unfold', 'pallas'], args,
                     1 if args.cpu else 5)
  return _table_status(rows)


def _table_status(rows):
  errors = [r for r in rows if 'error' in r]
  out = dict(rows=rows, status='failed' if errors else 'passed')
  if errors:
    out['error'] = f'{len(errors)} of {len(rows)} rows failed: {errors[0]["error"]}'
  return out


def tfds_dir(args) -> str:
  return os.path.join(args.work, 'tfds')


def _synthetic_jpegs(dest: str, counts: dict[str, int], height: int = 48, width: int = 64):
  """A tiny ISIC-layout JPEG folder from the synthetic lesion generator."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sgdc_jax.data import synthetic
  for split, n in counts.items():
    os.makedirs(os.path.join(dest, f'{split}x'), exist_ok=True)
    os.makedirs(os.path.join(dest, f'{split}y'), exist_ok=True)
    for i in range(1, n + 1):
      ex = synthetic.generate(len(split), i, height, width)
      Image.fromarray(ex['image']).save(os.path.join(dest, f'{split}x', f'imgx{i}.jpg'))
      Image.fromarray(ex['mask'] * 255).save(os.path.join(dest, f'{split}y', f'imgy{i}.jpg'))


def _subset(src: str, dest: str, counts: dict[str, int]) -> None:
  for split, n in counts.items():
    for side in 'xy':
      os.makedirs(os.path.join(dest, f'{split}{side}'), exist_ok=True)
      for i in range(1, n + 1):
        shutil.copyfile(os.path.join(src, f'{split}{side}', f'img{side}{i}.jpg'),
                        os.path.join(dest, f'{split}{side}', f'img{side}{i}.jpg'))


def do_prepare(args) -> dict:
  counts = dict(train=16, validation=4, test=6)
  source = args.data
  if args.cpu:  # a handful of images: of --data if given, else synthetic
    source = os.path.join(args.work, 'jpegs')
    shutil.rmtree(source, ignore_errors=True)
    if args.data:
      _subset(args.data, source, counts)
    else:
      _synthetic_jpegs(source, counts)
  if not source or not os.path.isdir(source):
    raise RuntimeError(f'no JPEG folder: pass --data=DIR (got {source!r})')
  shutil.rmtree(tfds_dir(args), ignore_errors=True)
  cmd = [sys.executable, '-m', 'sgdc_jax.data.prepare', '--dataset=folder', f'--name={DATA_NAME}',
         f'--manual_dir={source}', f'--images={IMAGES}', f'--masks={MASKS}',
         '--mask_threshold=127', f'--data_dir={tfds_dir(args)}']
  start = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  print(proc.stdout[-4000:], proc.stderr[-4000:])
  if proc.returncode:
    raise RuntimeError(f'prepare failed ({proc.returncode}): '
                       f'{(proc.stdout + proc.stderr).strip().splitlines()[-1:]}')
  splits = {split: len(os.listdir(os.path.join(source, f'{split}x')))
            for split in ('train', 'validation', 'test')
            if os.path.isdir(os.path.join(source, f'{split}x'))}
  return dict(source=source, splits=splits, prepare_s=round(seconds, 1),
              output_tail=proc.stdout.strip().splitlines()[-6:])


def do_bench_train(args) -> dict:
  cmd = [sys.executable, os.path.join(BENCH_DIR, 'bench_train.py'),
         f'--workdir={os.path.join(args.work, "bench_train")}']
  # On the prepared ISIC 2017 copy when the prepare step made one, else synthetic lesions.
  if glob.glob(os.path.join(tfds_dir(args), DATA_NAME, '*', 'dataset_info.json')):
    cmd += [f'--name={DATA_NAME}', f'--data_dir={tfds_dir(args)}']
  if args.cpu:
    cmd += [f'--config={os.path.join(REPO, "configs", "demo.py")}',
            '--config.data.image_size=32', '--config.train.batch_size=2', '--rounds=1',
            '--windows=1', '--log_every=2']
  else:
    cmd += [f'--config={os.path.join(REPO, "configs", "default.py")}',
            '--config.model.dtype=bfloat16', '--config.data.image_size=256',
            '--config.train.batch_size=16', '--rounds=2', '--windows=3', '--log_every=20']
  shutil.rmtree(os.path.join(args.work, 'bench_train'), ignore_errors=True)
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  print(proc.stdout[-6000:], proc.stderr[-6000:])
  if proc.returncode:
    raise RuntimeError(f'bench_train failed ({proc.returncode}): '
                       f'{proc.stderr.strip().splitlines()[-1:]}')
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  return dict(result=result, command=' '.join(cmd[1:]))


def _train_config(args):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('isic2017_config',
                                                os.path.join(REPO, 'configs', 'isic2017.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('cpu' if args.cpu else '')
  config.data.data_dir = tfds_dir(args)
  config.train.num_steps = args.train_steps
  config.train.eval_every = 0
  config.train.checkpoint_every = 0
  config.train.log_every = max(1, min(50, args.train_steps // 4))
  config.optimizer.warmup_steps = max(1, args.train_steps // 5)
  config.eval.checkpoint = 'latest'
  config.eval.overlays = 4
  if args.cpu:
    config.data.image_size = 32
    config.train.batch_size = 2
    config.eval.batch_size = 2
  return config


def do_train(args) -> dict:
  import sgdc_jax  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  from sgdc_jax.run import experiment, train
  config = _train_config(args)
  experiment.enable_compilation_cache(config)
  workdir = os.path.join(args.work, 'train')
  shutil.rmtree(workdir, ignore_errors=True)
  # The loop saves and returns on SIGTERM: ask for that shortly before the budget runs out so
  # that a slow device still leaves a checkpoint to evaluate. Sent from the step callback, i.e.
  # from inside the loop while its handler is installed: an alarm could fire after the loop
  # has put the default handler back, and kill the process while it saves.
  deadline = time.monotonic() + args.stop_after if args.stop_after > 0 else math.inf

  def stop_at_deadline(step):
    del step
    if time.monotonic() >= deadline:
      os.kill(os.getpid(), signal.SIGTERM)

  result = train.train_and_evaluate(config, workdir, run_eval=False,
                                    step_callback=stop_at_deadline)
  batch = int(config.train.batch_size)
  done = int(result.step)
  return dict(steps_requested=args.train_steps, steps_done=done,
              stopped_early=bool(result.preempted), batch_size=batch,
              image_size=int(config.data.image_size), dtype=str(config.model.dtype),
              encoder=str(config.model.encoder), compile_s=round(result.compile_s, 1),
              loop_s=round(result.loop_s, 1),
              images_per_s=round(done * batch / result.loop_s, 2) if result.loop_s else None)


def do_evaluate(args) -> dict:
  import sgdc_jax  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  from sgdc_jax.run import evaluate, experiment
  config = _train_config(args)
  experiment.enable_compilation_cache(config)
  start = time.perf_counter()
  summary = evaluate.evaluate_checkpoint(config, os.path.join(args.work, 'train'))
  dice = summary['mean'].get('dice')
  out = dict(split=config.data.test_split, n_images=summary.get('n_images'),
             checkpoint_step=summary.get('checkpoint_step'), mean=summary['mean'],
             eval_s=round(time.perf_counter() - start, 1))
  if dice is None or not math.isfinite(dice):
    out.update(status='failed', error=f'no finite test Dice: {dice}')
  return out


def run_child(args) -> int:
  """`--step NAME`: runs one step, writes its result JSON; exit status 0 unless it raised."""
  fault = os.environ.get(FAULT_ENV, '')
  target, _, kind = fault.partition(':')
  result = {}
  try:
    if target == args.step and kind in ('hang', 'fail'):
      if kind == 'hang':
        time.sleep(10**6)
      raise RuntimeError(f'injected failure ({FAULT_ENV}={fault})')
    result = STEP_FUNCTIONS[args.step](args)
    rc = 0
  except Exception as e:  # pylint: disable=broad-except  (reported, not raised)
    traceback.print_exc()
    result = dict(result, status='failed', error=f'{type(e).__name__}: {e}'[:1000])
    rc = 1
  write_result(args.result, result)
  return rc


STEP_FUNCTIONS = dict(wheels=do_wheels, env=do_env, correctness=do_correctness,
                      bench_aggregate=do_bench_aggregate, bench_block=do_bench_block,
                      prepare=do_prepare, bench_train=do_bench_train, train=do_train,
                      evaluate=do_evaluate)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('outdir', help='where report.md, report.json and logs/ go')
  parser.add_argument('--cpu', action='store_true', help='tiny sizes on the CPU backend')
  parser.add_argument('--data', default='', help='ISIC 2017 JPEG folder ({split}x/imgx{id}.jpg)')
  parser.add_argument('--wheels', default='', help='folder of wheels to install first')
  parser.add_argument('--site', default=os.path.join(tempfile.gettempdir(), 'sgdc_device_site'),
                      help='pip --target folder for the wheels (on every step\'s PYTHONPATH)')
  parser.add_argument('--work', default='', help='scratch folder for data and checkpoints, '
                      'kept out of OUTDIR (default: $TMPDIR/sgdc_device_check_work)')
  parser.add_argument('--budget', type=float, default=0.0,
                      help='seconds for all steps (default 540 on a device, 900 with --cpu)')
  parser.add_argument('--train_steps', type=int, default=0,
                      help='training steps (default 600 on a device, 4 with --cpu)')
  parser.add_argument('--only', default='', help='comma-separated subset of the steps')
  parser.add_argument('--budgets', default='',
                      help='per-step base budgets, e.g. train=200,bench_train=90 (seconds)')
  parser.add_argument('--step', default='', help=argparse.SUPPRESS)
  parser.add_argument('--result', default='', help=argparse.SUPPRESS)
  parser.add_argument('--stop_after', type=float, default=0.0, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.outdir = os.path.abspath(args.outdir)
  args.work = os.path.abspath(args.work or os.path.join(
      tempfile.gettempdir(), 'sgdc_device_check_work'))
  args.site = os.path.abspath(args.site)
  args.data = os.path.abspath(args.data) if args.data else ''
  args.wheels = os.path.abspath(args.wheels) if args.wheels else ''
  if not args.budget:
    args.budget = CPU_BUDGET_S if args.cpu else DEVICE_BUDGET_S
  if not args.train_steps:
    args.train_steps = 4 if args.cpu else 600
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.step:
    if args.cpu:
      os.environ['JAX_PLATFORMS'] = 'cpu'
    return run_child(args)
  report = run_all(args)
  statuses = {n: s['status'] for n, s in report['steps'].items()}
  print(f'report: {os.path.join(args.outdir, "report.md")}; '
        f'{sum(v == "passed" for v in statuses.values())} of {len(statuses)} steps passed')
  return 0 if all(v == 'passed' for v in statuses.values()) else 1


if __name__ == '__main__':
  sys.exit(main())
