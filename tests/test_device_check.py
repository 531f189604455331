"""benchmarks/device_check.py (the GPU check) in --cpu mode, and benchmarks/device_wheels.py.

The full --cpu run has one step made to hang after its first row (SGDC_DEVICE_CHECK_FAULT) with
a 20 s budget: it must be reported as a timeout that keeps that row, while every other step
passes with real numbers. A short run injects a failure into `prepare`: the steps that need it
are skipped, the others run. The recommendation, the process-group kill, the result files and
the wheel-folder checks are tested on made-up inputs (no network).
"""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import device_check  # noqa: E402
import device_wheels  # noqa: E402

SCRIPT = os.path.join(REPO, 'benchmarks', 'device_check.py')


def _run(outdir, *flags, fault='', timeout=1200):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop(device_check.FAULT_ENV, None)
  if fault:
    env[device_check.FAULT_ENV] = fault
  proc = subprocess.run([sys.executable, SCRIPT, str(outdir), '--cpu',
                         f'--work={outdir}_work', f'--site={outdir}_site', *flags],
                        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
                        check=False)
  with open(os.path.join(outdir, 'report.json'), encoding='utf-8') as f:
    report = json.load(f)
  with open(os.path.join(outdir, 'report.md'), encoding='utf-8') as f:
    md = f.read()
  return proc, report, md


def _positive(v):
  return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


@pytest.mark.slow  # the whole check at tiny sizes: ~3 min on the 2-core machine
def test_cpu_run_reports_every_step_and_a_hung_one(tmp_path):
  out = tmp_path / 'report'
  # bench_block hangs after its first row: a timeout that keeps the row it measured.
  proc, report, md = _run(out, '--budgets=bench_block=20', fault='bench_block:hang_after_row')
  steps = report['steps']
  assert list(steps) == list(device_check.STEP_NAMES), proc.stdout
  statuses = {name: s['status'] for name, s in steps.items()}
  assert statuses.pop('bench_block') == 'timeout', proc.stdout
  assert set(statuses.values()) == {'passed'}, (statuses, proc.stdout, proc.stderr[-3000:])
  assert proc.returncode == 1  # not every step passed
  # Earlier steps' unused time may extend a budget, at most to twice its base (20 s here).
  hung = steps['bench_block']
  assert 20 <= hung['budget_s'] <= 40, hung
  assert f'ran past its budget of {hung["budget_s"]:.0f} s' in hung['error']
  assert hung['seconds'] < hung['budget_s'] + 25  # killed, not waited for
  for name in device_check.STEP_NAMES:  # every step in the markdown table with its status
    assert re.search(rf'^\| {name} \| {steps[name]["status"]} \|', md, re.M), name
    assert os.path.isfile(out / steps[name]['log'])

  env = steps['env']
  assert env['backend'] == 'cpu' and env['device_count'] >= 1
  assert env['versions']['jax'] and env['versions']['flax']
  assert set(env['entry_points']) == set(device_check.ENTRY_POINTS)

  rows = steps['correctness']['rows']
  assert {r['dtype'] for r in rows} == {'float32', 'bfloat16'}
  assert {r['check'].split()[0] for r in rows} == {'pallas', 'SGDC'}
  for r in rows:
    assert r['ok'] and math.isfinite(r['max_err']) and r['max_err'] < r['tol'], r

  agg = steps['bench_aggregate']['rows']
  assert {r['impl'] for r in agg} >= {'unfold', 'shift', 'pallas', 'pallas@16x8/4/2'}
  for r in agg:
    assert _positive(r['fwd']) and _positive(r['fwd_bwd']) and _positive(r['fwd_bytes']), r
    assert math.isfinite(r['max_err']) and r['max_err'] < 0.05, r
  # The hung step's one row (shift, float32: the XLA impls come first) is in both reports.
  assert [(r['impl'], r['dtype']) for r in hung['rows']] == [('shift', 'float32')], hung
  assert _positive(hung['rows'][0]['fwd_bwd'])
  assert '## SGDC block' in md
  rec = report['recommendation']
  assert rec['impl'] == 'shift' and rec['launch'] in ('8x8/4/2', '16x8/4/2')
  assert any('interpret mode' in reason for reason in rec['reasons'])

  bench = steps['bench_train']['result']
  for key in ('e2e_images_per_s', 'step_images_per_s', 'pipeline_images_per_s',
              'gflop_per_image', 'mfu_e2e', 'mfu_step'):
    assert _positive(bench[key]), (key, bench)
  assert bench['data'] == device_check.DATA_NAME  # the prepared copy, not synthetic

  assert steps['prepare']['splits'] == dict(train=16, validation=4, test=6)
  train = steps['train']
  assert train['steps_done'] == train['steps_requested'] == 4 and not train['stopped_early']
  assert _positive(train['images_per_s']) and train['encoder'] == 'resnet18'
  ev = steps['evaluate']
  assert ev['n_images'] == 6 and ev['checkpoint_step'] == 4
  assert 0 < ev['mean']['dice'] <= 1
  assert f'Dice {ev["mean"]["dice"]:.4f}' in md
  assert '## Recommendation' in md and '| timeout |' in md


def test_failed_step_skips_its_dependents_only(tmp_path):
  out = tmp_path / 'report'
  proc, report, md = _run(out, '--only=wheels,prepare,train,evaluate', fault='prepare:fail',
                          timeout=300)
  steps = report['steps']
  assert list(steps) == ['wheels', 'prepare', 'train', 'evaluate']
  assert steps['wheels']['status'] == 'passed'
  assert steps['prepare']['status'] == 'failed'
  assert 'injected failure' in steps['prepare']['error']
  assert 'injected failure' in steps['prepare']['log_tail']  # the traceback's last lines
  assert steps['train']['status'] == 'skipped' and 'prepare' in steps['train']['error']
  assert steps['evaluate']['status'] == 'skipped' and 'train' in steps['evaluate']['error']
  assert proc.returncode == 1 and '| prepare | failed |' in md


def _row(impl, size, dtype, fwd, fwd_bwd, launch=None):
  row = dict(impl=impl, size=size, dtype=dtype, fwd=fwd, fwd_bwd=fwd_bwd, max_err=1e-4)
  if launch:
    row['launch'] = launch
  return row


def _tables(pallas_factor, slow_at=None):
  """Aggregation (default launch + one sweep launch) and block rows; pallas = factor x shift."""
  agg, block = [], []
  for size in ('4x64x64x256', '2x128x128x256'):
    for dtype in ('float32', 'bfloat16'):
      f = 1.2 if (size, dtype) == slow_at else pallas_factor
      agg += [_row('shift', size, dtype, 1.0, 2.0), _row('unfold', size, dtype, 3.0, 6.0),
              _row('pallas', size, dtype, f, 2 * f, '8x8/4/2'),
              _row('pallas@16x8/8/3', size, dtype, 0.9 * f, 1.8 * f, '16x8/8/3')]
      block += [_row('shift', size, dtype, 1.0, 2.0), _row('pallas', size, dtype, f, 2 * f)]
  return agg, block


def test_recommend_pallas_only_if_faster_everywhere():
  agg, block = _tables(0.5)
  rec = device_check.recommend(agg, block)
  assert rec['impl'] == 'pallas' and rec['launch'] == '16x8/8/3'
  assert rec['launch_scores'] == {'16x8/8/3': 1.0, '8x8/4/2': pytest.approx(1 / 0.9, abs=1e-3)}
  # Slower than shift at one size and dtype: shift.
  agg, block = _tables(0.5, slow_at=('2x128x128x256', 'bfloat16'))
  rec = device_check.recommend(agg, block)
  assert rec['impl'] == 'shift' and rec['launch'] == '16x8/8/3'
  assert any('not faster' in r for r in rec['reasons'])
  # Interpret mode (CPU) never recommends pallas; no timed rows: nothing to recommend.
  agg, block = _tables(0.5)
  assert device_check.recommend([dict(r, interpret=True) for r in agg], block)['impl'] == 'shift'
  assert device_check.recommend([], []) == dict(launch=None, impl='shift', reasons=[
      'aggregate, default launch: no pallas/shift pair timed',
      'block: no pallas/shift pair timed'])


def _replace(rows, impl, size, dtype, **changes):
  return [dict(r, **changes) if (r['impl'], r['size'], r['dtype']) == (impl, size, dtype)
          else r for r in rows]


def test_recommend_needs_pallas_correct_and_timed_everywhere():
  agg, block = _tables(0.5)
  # A Pallas failure at one size: not faster 'everywhere' although faster where it ran.
  failed = [dict({k: v for k, v in r.items() if k not in ('fwd', 'fwd_bwd')},
                 error='XlaRuntimeError: Triton') if (r['impl'], r['size'], r['dtype']) == (
                     'pallas', '2x128x128x256', 'bfloat16') else r for r in block]
  rec = device_check.recommend(agg, failed)
  assert rec['impl'] == 'shift' and any('block: pallas not faster' in r for r in rec['reasons'])
  # A point benchmarked for shift only (the Pallas rows never ran): not faster everywhere.
  missing = [r for r in block if not (r['impl'] == 'pallas' and r['size'] == '4x64x64x256')]
  assert device_check.recommend(agg, missing)['impl'] == 'shift'
  # The fastest launch gives wrong results at one point: neither it nor pallas is chosen.
  wrong = _replace(agg, 'pallas@16x8/8/3', '4x64x64x256', 'float32', max_err=0.2)
  rec = device_check.recommend(wrong, block)
  assert rec['launch'] == '8x8/4/2' and rec['impl'] == 'shift'
  assert any('pallas@16x8/8/3' in r and 'tolerance' in r for r in rec['reasons'])
  # Fast and within tolerance, but the correctness step did not pass: shift.
  rec = device_check.recommend(agg, block, correctness_passed=False)
  assert rec['impl'] == 'shift' and 'the correctness step did not pass' in rec['reasons']
  assert device_check.recommend(agg, block, correctness_passed=True)['impl'] == 'pallas'


def test_kill_group_leaves_no_process_that_ignores_sigterm(tmp_path):
  # A step whose child goes on after SIGTERM (as a benchmark that saves and continues would).
  pid_file = tmp_path / 'child.pid'
  script = ('import os, signal, subprocess, sys, time\n'
            'child = subprocess.Popen([sys.executable, "-c", "import signal, time; '
            'signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])\n'
            f'open({str(pid_file)!r}, "w").write(str(child.pid))\n'
            'time.sleep(600)\n')
  proc = subprocess.Popen([sys.executable, '-c', script], start_new_session=True)
  for _ in range(200):
    if pid_file.exists() and pid_file.read_text():
      break
    time.sleep(0.05)
  child = int(pid_file.read_text())
  os.killpg(proc.pid, signal.SIGTERM)  # the step process dies, its child does not
  proc.wait(timeout=10)
  os.kill(child, 0)  # still alive
  device_check.kill_group(proc.pid)
  for _ in range(100):  # reaped by init once killed
    try:
      os.kill(child, 0)
    except ProcessLookupError:
      break
    time.sleep(0.05)
  else:
    raise AssertionError(f'process {child} of the step survived kill_group')


def test_result_files_are_atomic_and_torn_ones_read_as_empty(tmp_path):
  path = str(tmp_path / 'r.json')
  device_check.write_result(path, dict(rows=[1, float('nan')], status='passed'))
  assert device_check.read_result(path) == dict(rows=[1, None], status='passed')
  assert not os.path.exists(path + '.tmp')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('{"rows": [1, ')
  assert device_check.read_result(path) == {}
  assert device_check.read_result(str(tmp_path / 'absent.json')) == {}


def test_step_timeout_takes_slack_up_to_double_and_keeps_the_reserve():
  timeout = device_check.step_timeout
  assert timeout(5, 0, 500, 100) == 5
  assert timeout(5, 260, 500, 100) == 10  # slack capped at the base budget again
  assert timeout(50, 20, 500, 100) == 70
  assert timeout(50, 40, 170, 100) == 70  # only what the later steps' reserve leaves
  assert timeout(50, 40, 120, 100) == 50  # the base budget even when the reserve is short
  assert timeout(50, 40, 30, 0) == 30  # never past the end of the run


def test_step_budgets_and_unknown_names():
  args = device_check.parse_args(['out', '--cpu', '--budgets=train=7,env=3'])
  budgets = device_check.step_budgets(args)
  assert budgets['train'] == 7 and budgets['env'] == 3 and args.budget == 900
  assert device_check.parse_args(['out']).budget == 540
  # The device base budgets leave the reserve of the 9 minutes for process start-ups and kills.
  assert sum(s.budget_s for s in device_check.STEPS) <= (
      device_check.DEVICE_BUDGET_S - device_check.STARTUP_RESERVE_S)
  with pytest.raises(SystemExit, match='unknown step'):
    device_check.step_budgets(device_check.parse_args(['out', '--budgets=nope=1']))


def test_wheel_list_pins_match_requirements():
  pins = {}
  with open(os.path.join(REPO, 'requirements.txt'), encoding='utf-8') as f:
    for line in f:
      m = re.match(r'^([A-Za-z0-9_.-]+)==([^\s#]+)', line)
      if m:
        pins[device_wheels.normalize(m.group(1))] = m.group(2)
  listed = {device_wheels.normalize(n): v for n, v, _ in device_wheels.WHEELS}
  assert len(listed) == len(device_wheels.WHEELS)  # one version of each
  for name in ('grain', 'clu', 'tensorflow_datasets'):
    assert listed[name] == pins[name], name
  # Never a package the GPU image has (it would shadow the image's on PYTHONPATH).
  assert not set(listed) & {'jax', 'jaxlib', 'flax', 'optax', 'orbax_checkpoint', 'numpy',
                            'protobuf', 'tensorboard', 'scipy', 'pillow'}


def test_check_wheels_finds_missing_duplicate_extra_and_size(tmp_path):
  wheels = (('grain', '0.2.18', ''), ('ml-collections', '1.1.0', ''))

  def touch(name, size=10):
    (tmp_path / name).write_bytes(b'x' * size)

  touch('grain-0.2.18-cp312-cp312-manylinux_2_28_x86_64.whl')
  assert device_wheels.check_wheels(str(tmp_path), wheels) == ['missing: ml_collections==1.1.0']
  touch('ml_collections-1.1.0-py3-none-any.whl')
  assert device_wheels.check_wheels(str(tmp_path), wheels) == []
  touch('grain-0.2.17-cp312-cp312-manylinux_2_28_x86_64.whl')
  touch('six-1.17.0-py2.py3-none-any.whl', 2**20)
  assert device_wheels.check_wheels(str(tmp_path), wheels, limit_mib=0.5) == [
      'grain: found 0.2.17, 0.2.18, want exactly 0.2.18', 'not in the list: six 1.17.0',
      'wheels weigh 1.0 MiB > 0.5 MiB']
  assert device_wheels.wheel_name_version('tensorflow_datasets-4.9.10-py3-none-any.whl') == (
      'tensorflow_datasets', '4.9.10')
  cmd = device_wheels.download_command('grain', '0.2.18', 'D')
  assert cmd[-3:] == ['-d', 'D', 'grain==0.2.18'] and '--no-deps' in cmd
  assert cmd[cmd.index('--python-version') + 1] == '3.12'


def test_copy_data_keeps_pairs_and_caps_train(tmp_path):
  src, dest = tmp_path / 'src', tmp_path / 'dest'
  for split, n in (('train', 5), ('validation', 2), ('test', 3)):
    for side in 'xy':
      (src / f'{split}{side}').mkdir(parents=True)
      for i in range(1, n + 1):
        (src / f'{split}{side}' / f'img{side}{i}.jpg').write_bytes(b'j')
  (src / 'trainx' / 'imgx9.jpg').write_bytes(b'j')  # no mask: not a pair
  (src / 'LICENSE').write_text('L')
  counts = device_wheels.copy_data(str(src), str(dest), max_train=3)
  assert counts == dict(train=3, validation=2, test=3)
  assert sorted(os.listdir(dest / 'trainx')) == ['imgx1.jpg', 'imgx2.jpg', 'imgx3.jpg']
  assert sorted(os.listdir(dest / 'trainy')) == ['imgy1.jpg', 'imgy2.jpg', 'imgy3.jpg']
  assert (dest / 'LICENSE').read_text() == 'L'
