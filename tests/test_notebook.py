"""Executes notebooks/quickstart.ipynb top to bottom with nbclient, so the notebook never rots.

The kernel is this very interpreter (the project's virtual environment): the test writes a
kernel spec pointing at `sys.executable` into a temporary directory, so nothing needs to be
registered with Jupyter beforehand.
"""

import json
import os
import re
import signal
import sys
import tempfile
import time

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')
from jupyter_client.kernelspec import KernelSpecManager  # pylint: disable=g-import-not-at-top
from jupyter_client.manager import KernelManager  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'notebooks', 'quickstart.ipynb')
KERNEL = 'sgdc-jax-test-venv'
# Shared by repeated runs: the second execution skips most XLA compilation.
CACHE = os.path.join(tempfile.gettempdir(), 'sgdc_jax_notebook_xla_cache')
# Dice after the notebook's 30 steps of batch 4 on 64x64 synthetic lesions: 0.915 (structure) and
# 0.925 (pooled) on the 16 test images (CPU). Predicting all foreground scores ~0.4 and all
# background 0, so these bounds only pass when both networks learned to segment.
MIN_STRUCTURE_DICE = 0.7
MIN_POOLED_DICE = 0.6


def _kernel_manager(tmp_path) -> KernelManager:
  """A KernelManager whose only kernel spec runs ipykernel with `sys.executable`."""
  kernels = tmp_path / 'kernels'
  spec_dir = kernels / KERNEL
  spec_dir.mkdir(parents=True)
  spec = {'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
          'display_name': 'sgdc_jax test (venv)', 'language': 'python'}
  (spec_dir / 'kernel.json').write_text(json.dumps(spec))
  ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
  return KernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm)


def _kill_leftovers(marker: str) -> None:
  """Terminates processes (by pid) whose command line mentions `marker`: the notebook's
  background `sgdc_jax.main` run when a cell failed before waiting for it."""
  if not os.path.isdir('/proc'):
    return
  for pid in os.listdir('/proc'):
    if not pid.isdigit() or int(pid) == os.getpid():
      continue
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        cmdline = f.read().decode(errors='replace')
    except OSError:
      continue
    if marker in cmdline and 'sgdc_jax.main' in cmdline:
      try:
        os.kill(int(pid), signal.SIGKILL)
      except OSError:
        pass


def _text(cell) -> str:
  parts = []
  for out in cell.get('outputs', []):
    if out.get('output_type') == 'stream':
      parts.append(out.get('text', ''))
    elif 'data' in out and 'text/plain' in out['data']:
      parts.append(out['data']['text/plain'])
  return ''.join(parts)


def test_committed_notebook_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert len(code) >= 8
  for cell in code:
    assert cell.outputs == [], f'stored outputs in cell starting {cell.source[:60]!r}'
    assert cell.execution_count is None


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom(tmp_path, monkeypatch):
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', CACHE)
  monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
  # The notebook's work directory (tempfile.mkdtemp) lands under tmp_path, which is how a
  # background command-line run it started is found again if a cell fails.
  monkeypatch.setenv('TMPDIR', str(tmp_path))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      nb, km=_kernel_manager(tmp_path), timeout=900, allow_errors=False,
      resources={'metadata': {'path': os.path.join(REPO, 'notebooks')}})
  start = time.time()
  try:
    client.execute()  # raises CellExecutionError, with the traceback, on the first failing cell
  finally:
    _kill_leftovers(str(tmp_path))
  elapsed = time.time() - start

  code = [c for c in nb.cells if c.cell_type == 'code']
  assert all(c.execution_count is not None for c in code), 'a code cell did not run'
  errors = [o for c in code for o in c.outputs if o.get('output_type') == 'error']
  assert not errors, errors
  text = '\n'.join(_text(c) for c in code)
  figures = sum('image/png' in o.get('data', {}) for c in code for o in c.outputs)
  # untrained kernels, loss, trained kernels, loss comparison, structure-vs-pooled figure
  assert figures >= 5, f'only {figures} figures were produced'
  assert 'sums to 1: True' in text
  assert 'captured blocks: [\'sgdc0\']' in text
  restored = re.search(r'restored step (\d+) - state step (\d+)', text)
  assert restored and restored.group(1) == restored.group(2), text[-2000:]
  structure = float(re.search(r'FINAL structure dice ([0-9.]+)', text).group(1))
  pooled = float(re.search(r'FINAL pooled dice ([0-9.]+)', text).group(1))
  print(f'notebook executed in {elapsed:.0f} s; dice structure {structure:.3f}, '
        f'pooled {pooled:.3f}')
  assert structure > MIN_STRUCTURE_DICE, text[-3000:]
  assert pooled > MIN_POOLED_DICE, text[-3000:]
