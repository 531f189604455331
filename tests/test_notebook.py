"""notebooks/quickstart.ipynb: committed without outputs, and executed by `make notebook`.

The execution test runs the Makefile's own `notebook` recipe (so the command documented for
users and the one tested cannot drift) on a copy of the notebook in a temporary directory: the
kernel starts there, outside the checkout, so the notebook can only use the installed package,
not files of the repository. The kernel is the running interpreter's environment
(`VENV=sys.prefix`); `-o` marks the install stamp as done, so make installs nothing.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

nbformat = pytest.importorskip('nbformat')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'notebooks', 'quickstart.ipynb')
# Shared by repeated runs: the second execution skips most XLA compilation.
CACHE = os.path.join(tempfile.gettempdir(), 'sgdc_jax_notebook_xla_cache')
# Test Dice after the notebook's 30 steps of batch 4 on 64x64 synthetic lesions: 0.92 on its 16
# test images (CPU). Predicting all foreground scores ~0.4 and all background 0, so this bound
# only passes when the network learned to segment.
MIN_TEST_DICE = 0.7
# Code that reads files of the checkout would only work when started inside it.
REPO_PATHS = re.compile(r"configs/|docs/|notebooks/|tests/|\.\./|REPO|__file__")


def _code_cells(nb):
  return [c for c in nb.cells if c.cell_type == 'code']


def _text(cell) -> str:
  parts = []
  for out in cell.get('outputs', []):
    if out.get('output_type') == 'stream':
      parts.append(out.get('text', ''))
    elif 'data' in out and 'text/plain' in out['data']:
      parts.append(out['data']['text/plain'])
  return ''.join(parts)


def test_committed_notebook_has_no_outputs_and_no_repository_paths():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = _code_cells(nb)
  assert len(code) >= 7
  for cell in code:
    assert cell.outputs == [], f'stored outputs in cell starting {cell.source[:60]!r}'
    assert cell.execution_count is None
    assert not REPO_PATHS.search(cell.source), cell.source
  # The public API is taught first: `import sgdc_jax` opens the first code cell, before jax.
  assert code[0].source.startswith('import sgdc_jax')
  sources = '\n'.join(c.source for c in code)
  for name in ('sgdc_jax.SGE(', 'sgdc_jax.SGDC(', 'sgdc_jax.SGDCNet(',
               'sgdc_jax.pixel_adaptive_aggregate(', 'demo_config()', 'train_and_evaluate(',
               'evaluate_checkpoint('):
    assert name in sources, name


def test_makefile_notebook_target_writes_a_copy():
  """`make notebook` executes into runs/notebook/, never over the committed notebook."""
  make = shutil.which('make')
  assert make, 'make is needed to run the Makefile recipe'
  dry = subprocess.run([make, '-n', '-C', REPO, 'notebook', f'VENV={sys.prefix}'],
                       capture_output=True, text=True, check=True).stdout
  assert 'nbconvert --to notebook --execute' in dry, dry
  assert '--output-dir=runs/notebook notebooks/quickstart.ipynb' in dry, dry
  assert '--inplace' not in dry
  assert 'jupyter lab notebooks/quickstart.ipynb' in dry, dry


@pytest.mark.slow
def test_make_notebook_executes_outside_the_checkout(tmp_path):
  make = shutil.which('make')
  assert make, 'make is needed to run the Makefile recipe'
  pytest.importorskip('nbconvert')
  pytest.importorskip('ipykernel')
  nb_dir, out_dir, scratch = tmp_path / 'nb', tmp_path / 'out', tmp_path / 'tmp'
  nb_dir.mkdir()
  scratch.mkdir()
  shutil.copy(NOTEBOOK, nb_dir / 'quickstart.ipynb')
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=CACHE, TMPDIR=str(scratch),
             MPLBACKEND='module://matplotlib_inline.backend_inline', SGDC_NO_BAR='1')
  env.pop('PYTHONPATH', None)  # the package must come from the environment, not the checkout
  stamp = os.path.join(sys.prefix, '.installed-notebook')
  cmd = [make, '-C', REPO, 'notebook', f'VENV={sys.prefix}', '-o', stamp,
         f'NOTEBOOK={nb_dir / "quickstart.ipynb"}', f'NOTEBOOK_OUT={out_dir}']
  start = time.time()
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500, check=False)
  elapsed = time.time() - start
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
  assert 'pip install' not in proc.stdout.split('nbconvert')[0], proc.stdout  # nothing installed
  assert f'executed copy: {out_dir}/quickstart.ipynb' in proc.stdout, proc.stdout
  assert 'jupyter lab' in proc.stdout, proc.stdout
  # The notebook wrote nothing next to itself (its outputs go to a temporary directory).
  assert sorted(os.listdir(nb_dir)) == ['quickstart.ipynb']
  assert [p.name for p in scratch.iterdir() if p.name.startswith('sgdc_quickstart_')]

  nb = nbformat.read(str(out_dir / 'quickstart.ipynb'), as_version=4)
  code = _code_cells(nb)
  assert all(c.execution_count is not None for c in code), 'a code cell did not run'
  errors = [o for c in code for o in c.outputs if o.get('output_type') == 'error']
  assert not errors, errors
  text = '\n'.join(_text(c) for c in code)
  assert f'outputs in {scratch}' in text, text[:500]
  # The API cells: shapes of SGE, SGDC, the aggregation and SGDCNet.
  assert 'SGE edge_logits (2, 16, 16, 1) guidance (2, 16, 16, 16)' in text, text
  assert 'SGDC output (2, 16, 16, 64) (same as x: True )' in text, text
  assert "SGDC(kernel_source='pooled') output (2, 16, 16, 64)" in text, text
  assert 'aggregate (2, 16, 16, 64) | centre tap gives x back: True' in text, text
  assert 'equal weights give a box filter: True' in text, text
  assert ("SGDCNet outputs: {'edge_logits': (2, 64, 64, 1), 'logits': (2, 64, 64, 1)}"
          in text), text
  # Training and evaluation through the run API.
  assert 'trained 30 steps' in text, text[-3000:]
  assert 'metrics.json has the same mean dice: True' in text, text[-3000:]
  match = re.search(r'TEST dice ([0-9.]+) over 16 images', text)
  assert match, text[-3000:]
  dice = float(match.group(1))
  figures = sum('image/png' in o.get('data', {}) for c in code for o in c.outputs)
  assert figures >= 1, 'no figure was produced'
  print(f'notebook executed in {elapsed:.0f} s; test dice {dice:.3f}')
  assert MIN_TEST_DICE < dice <= 1.0, text[-3000:]
