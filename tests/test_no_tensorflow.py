"""The runtime without TensorFlow: `prepare`, the demo training (with a profiler window), eval
and predict run through the CLI in subprocesses where `import tensorflow` fails, as if it were
not installed, and none of them imports it; TensorBoard's own event reader, in such a process
too, reads back the scalars and hyper-parameters that training wrote.

The blocker is a `sitecustomize` module on PYTHONPATH (so every Python process started by the
commands has it): it wraps each finder of `sys.meta_path` so that `tensorflow` and its
submodules are never found. `import tensorflow` then raises ModuleNotFoundError and
`importlib.util.find_spec('tensorflow')` returns None, which is what the libraries probing for
TensorFlow (etils, TFDS, TensorBoard's compat layer) see when it is absent. Each process appends
a JSON line to a report file at exit: its command line, parent process and the `tensorflow`
modules it imported.
"""
import glob
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from test_folder import write_plain

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(tempfile.gettempdir(), 'sgdc_jax_test_xla_cache')

SITECUSTOMIZE = textwrap.dedent('''
    """Test blocker: TensorFlow cannot be found (see tests/test_no_tensorflow.py)."""
    import atexit, json, os, sys

    class _HideTensorFlow:
      def __init__(self, finder):
        self._finder = finder

      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'tensorflow':
          return None
        find = getattr(self._finder, 'find_spec', None)
        return find(name, path, target) if find else None

      def __getattr__(self, name):  # invalidate_caches, find_distributions, ...
        return getattr(self._finder, name)

    sys.meta_path[:] = [_HideTensorFlow(f) for f in sys.meta_path]

    def _report():
      loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow')
      with open(os.environ['SGDC_TF_REPORT'], 'a') as f:
        f.write(json.dumps({'argv': sys.argv, 'parent': os.getppid(), 'loaded': loaded}) + '\\n')

    atexit.register(_report)
''')

# TensorBoard's event reader (in a blocked process): {tag: [[step, value], ...]} of the tensor
# summaries under the logdir, and whether hparams came with the config's fields.
READ_EVENTS = textwrap.dedent('''
    import json, sys
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util
    acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.TENSORS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()['tensors']:
      out[tag] = [[e.step, tensor_util.make_ndarray(e.tensor_proto).tolist()]
                  for e in acc.Tensors(tag)]
    hp = plugin_data_pb2.HParamsPluginData.FromString(
        acc.SummaryMetadata('_hparams_/session_start_info').plugin_data.content)
    out['hparams'] = sorted(hp.session_start_info.hparams)
    out['loss_plugin'] = acc.SummaryMetadata('loss').plugin_data.plugin_name
    print('RESULT' + json.dumps(out))
''')


def _run(args, env, what):
  proc = subprocess.run([sys.executable] + args, env=env, cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, f'{what}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}'
  return proc


@pytest.mark.slow
def test_prepare_train_eval_predict_without_tensorflow(tmp_path):
  site = tmp_path / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(SITECUSTOMIZE)
  report = tmp_path / 'report.jsonl'
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), REPO]),
             SGDC_TF_REPORT=str(report), JAX_PLATFORMS='cpu', SGDC_NO_BAR='1',
             JAX_COMPILATION_CACHE_DIR=CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')

  # The blocker works: TensorFlow is neither importable nor found.
  probe = _run(['-c', 'import importlib.util\n'
                'print(importlib.util.find_spec("tensorflow"))\n'
                'try:\n  import tensorflow\nexcept ModuleNotFoundError:\n  print("blocked")'],
               env, 'probe')
  assert probe.stdout.split() == ['None', 'blocked'], probe.stdout

  manual, data_dir, work = tmp_path / 'manual', tmp_path / 'tfds', tmp_path / 'run'
  write_plain(str(manual), {'train': 2, 'test': 3})
  _run(['-m', 'sgdc_jax.data.prepare', '--dataset=folder', '--name=notf_folder',
        f'--manual_dir={manual}', f'--data_dir={data_dir}'], env, 'prepare')

  # The demo config, shortened: 4 steps, metrics every 2, validation + checkpoint at 4, a
  # profiler window from step 2.
  base = ['-m', 'sgdc_jax.main', '--config=configs/demo.py', f'--workdir={work}',
          '--config.train.num_steps=4', '--config.optimizer.warmup_steps=1',
          '--config.train.log_every=2', '--config.train.eval_every=4',
          '--config.train.checkpoint_every=4', '--config.data.synthetic.train_size=16',
          '--config.data.synthetic.validation_size=4', '--config.data.synthetic.test_size=4',
          '--config.eval.overlays=1']
  train = _run(base + ['--config.train.profile_steps=1', '--config.train.profile_first_step=2'],
               env, 'train')
  assert 'step 4/4: loss' in train.stdout, train.stdout
  assert 'Setting work unit notes:' in train.stderr and 'ETA:' in train.stderr  # progress
  _run(base + ['--mode=eval'], env, 'eval')
  _run(base + ['--mode=eval', '--config.data.name=notf_folder',
               f'--config.data.data_dir={data_dir}'], env, 'eval on the prepared folder data set')
  inputs = tmp_path / 'in'
  inputs.mkdir()
  Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(inputs / 'a.png')
  _run(base + ['--mode=predict', f'--config.predict.input_dir={inputs}',
               f'--config.predict.output_dir={tmp_path / "pred"}'], env, 'predict')
  read = _run(['-c', READ_EVENTS, str(work)], env, 'event reader')

  # No process imported TensorFlow, and every command reported.
  reports = [json.loads(l) for l in report.read_text().splitlines()]
  assert not [r for r in reports if r['loaded']], reports
  # The commands' own processes (their workers, forked or spawned, report too when they exit
  # through Python).
  scripts = [os.path.basename(r['argv'][0]) for r in reports if r['parent'] == os.getpid()]
  assert scripts == ['-c', 'prepare.py'] + ['main.py'] * 4 + ['-c'], scripts

  # Outputs as with TensorFlow: one event file, history, curve, eval folders, profile, masks.
  assert len(glob.glob(str(work / 'events.out.tfevents.*.v2'))) == 1
  assert (work / 'training_curve.png').exists()
  for name in ('synthetic_lesions', 'notf_folder'):
    summary = json.loads((work / 'eval' / name / 'test' / 'step_4' / 'metrics.json').read_text())
    assert summary['n_images'] == (4 if name == 'synthetic_lesions' else 3), summary
  assert glob.glob(str(work / 'plugins' / 'profile' / '*' / '*.xplane.pb'))
  assert os.listdir(tmp_path / 'pred')

  history = [json.loads(l) for l in (work / 'history.jsonl').read_text().splitlines()]
  events = json.loads([l for l in read.stdout.splitlines() if l.startswith('RESULT')][-1][6:])
  assert events['loss_plugin'] == 'scalars'
  assert {'train.num_steps', 'model.encoder', 'data.image_size'} <= set(events['hparams'])
  expected = {}  # tag -> steps, from history.jsonl
  for row in history:
    for key in row:
      if key != 'step':
        expected.setdefault(key, []).append(row['step'])
  assert {'loss', 'learning_rate', 'grad_norm', 'steps_per_sec', 'uptime', 'val_dice',
          'val_hd95'} <= set(expected)
  assert expected['loss'] == [2, 4] and expected['val_dice'] == [4]
  assert {tag: [s for s, _ in v] for tag, v in events.items()
          if tag in expected} == expected
  assert '_hparams_/session_start_info' in events
  for row in history:
    for key, value in row.items():
      if key != 'step':
        (got,) = [v for s, v in events[key] if s == row['step']]
        np.testing.assert_allclose(got, value, rtol=1e-6)  # float32 in the events


# Distributions that are (or bundle) TensorFlow itself; TFDS's own tensorflow-datasets and
# tensorflow-metadata are not.
_TENSORFLOW = {'tensorflow', 'tensorflow-cpu', 'tensorflow-gpu', 'tensorflow-intel',
               'tensorflow-macos', 'tensorflow-aarch64', 'tf-nightly', 'tf-nightly-cpu',
               'tensorflow-io-gcs-filesystem', 'tensorflow-text'}


def _runtime_closure(dist_name):
  """Names of every distribution the installed `dist_name` needs at run time, transitively.

  Walks the installed metadata (Requires-Dist with environment markers evaluated, extras left
  out), as `pip install .` resolves it; a requirement that is not installed is kept by name.
  """
  seen, todo = set(), [dist_name]
  while todo:
    name = canonicalize_name(todo.pop())
    if name in seen:
      continue
    seen.add(name)
    try:
      requires = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
      continue
    for line in requires:
      req = Requirement(line)
      if req.marker is None or req.marker.evaluate({'extra': ''}):
        todo.append(req.name)
  return seen


def test_runtime_dependencies_hold_no_tensorflow():
  closure = _runtime_closure('sgdc_jax')
  assert {'jax', 'flax', 'tensorflow-datasets', 'tensorboard', 'clu'} <= closure, closure
  assert not closure & _TENSORFLOW, sorted(closure & _TENSORFLOW)
  with open(os.path.join(REPO, 'requirements.txt'), encoding='utf-8') as f:
    pinned = {canonicalize_name(Requirement(l.split('#')[0].strip()).name) for l in f
              if l.split('#')[0].strip()}
  assert not pinned & _TENSORFLOW, sorted(pinned & _TENSORFLOW)
