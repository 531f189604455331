"""The deprecation finder (`sgdc_jax._moved`): every old flat module name still imports, as
the very module now holding its code, with a DeprecationWarning naming the new one; the split
`sgdc_jax.reporting` serves the names of its parts; `python -m <old name>` still runs.

Each check runs in a fresh interpreter: the finder acts only on names not imported yet, and
pytest's own `filterwarnings` would hide the warnings."""
import json
import os
import subprocess
import sys

from sgdc_jax import _moved

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHECK_MOVED = r'''
import importlib, json, sys, warnings
import sgdc_jax
from sgdc_jax import _moved
out = {}
for old, new in sorted(_moved.MOVED.items()):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    module = importlib.import_module(old)
  out[old] = {'same': module is importlib.import_module(new) and sys.modules[old] is module,
              'warnings': [str(w.message) for w in caught
                           if issubclass(w.category, DeprecationWarning)]}
with warnings.catch_warnings(record=True) as caught:
  warnings.simplefilter('always')
  from sgdc_jax import reporting
from sgdc_jax.run import hooks, outputs, writers
from sgdc_jax import log
out['sgdc_jax.reporting'] = {
    'same': (reporting.log is log.log and reporting.create_writer is writers.create_writer
             and reporting.eval_dir is outputs.eval_dir
             and reporting.ReportProgress is hooks.ReportProgress),
    'warnings': [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]}
print(json.dumps(out))
'''


def _python(*args, timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def test_every_old_name_is_the_new_module_with_a_warning():
  result = _python('-c', _CHECK_MOVED)
  assert result.returncode == 0, result.stderr[-3000:]
  found = json.loads(result.stdout.strip().splitlines()[-1])
  assert set(found) == set(_moved.MOVED) | set(_moved.SPLIT)
  for old, new in _moved.MOVED.items():
    assert found[old]['same'], f'{old} is not {new}'
    assert any(old in w and f'use {new}' in w for w in found[old]['warnings']), (
        old, found[old]['warnings'])
  reporting = found['sgdc_jax.reporting']
  assert reporting['same'], 'sgdc_jax.reporting does not serve log, create_writer, ...'
  assert any('sgdc_jax.run.writers' in w for w in reporting['warnings']), reporting


def test_old_command_name_still_runs_and_says_it_moved():
  # absl's --helpshort exits with status 1 after printing the help; the old name must behave
  # exactly as the new one, plus one deprecation line (it crashed in absl when sys.argv[0]
  # was None, the origin of a spec without a location).
  old = _python('-m', 'sgdc_jax.ablation', '--helpshort')
  new = _python('-m', 'sgdc_jax.analysis.ablation', '--helpshort')
  assert old.returncode == new.returncode, old.stderr[-3000:]
  assert 'Traceback' not in old.stderr, old.stderr[-3000:]
  assert ('python -m sgdc_jax.ablation is deprecated: use python -m sgdc_jax.analysis.ablation'
          in old.stderr), old.stderr[-3000:]
  assert '--workdir' in old.stdout + old.stderr  # the new command's own flags
  assert old.stdout == new.stdout


def test_finder_knows_only_old_names():
  # No old name is also a live module (the finder would shadow nothing, but the table would
  # lie), and every new name is one.
  import importlib.util
  for old, new in _moved.MOVED.items():
    assert importlib.util.find_spec(new) is not None, new
    assert not os.path.exists(os.path.join(ROOT, *old.split('.')) + '.py'), old
  for parts in _moved.SPLIT.values():
    assert all(importlib.util.find_spec(p) is not None for p in parts), parts
