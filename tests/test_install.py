"""`pip install .` (not editable) into a fresh venv outside the checkout, then train the demo.

The venv sees the running interpreter's site-packages through a `.pth` file, so the
dependencies are not downloaded again; pip installs only the package itself (`--no-deps
--no-build-isolation --no-index`), built from a copy of the checkout so that no build
output lands in it. Training then runs from an unrelated directory through the CLI only, so
the test holds whatever the config files import, as long as the installed package has it.
"""
import os
import shutil
import subprocess
import sys
import venv

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Checkout paths that play no part in building the package (and may be large).
_NOT_COPIED = ('.git', '.venv*', '.devcarry', 'runs', 'build', 'dist', '__pycache__',
               '.pytest_cache', '*.egg-info')


def _site_packages() -> list[str]:
  """The running interpreter's package folders (its venv's and, if enabled, the system's)."""
  return [p for p in sys.path
          if os.path.basename(p) in ('site-packages', 'dist-packages') and os.path.isdir(p)]


def _make_venv(path: str) -> str:
  """Creates a venv without pip that imports the running interpreter's packages; its python."""
  venv.EnvBuilder(with_pip=False, symlinks=os.name != 'nt').create(path)
  python = os.path.join(path, 'bin', 'python')
  purelib = subprocess.run(
      [python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
      capture_output=True, text=True, check=True).stdout.strip()
  # Plain path lines: the folders join sys.path after the venv's own site-packages, and their
  # .pth files (e.g. the checkout's editable install) are not executed.
  with open(os.path.join(purelib, 'running_env.pth'), 'w') as f:
    f.write('\n'.join(_site_packages()) + '\n')
  return python


def _run(cmd, cwd, timeout):
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
  env.update(JAX_PLATFORMS='cpu', PYTHONNOUSERSITE='1')
  proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, f'{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
  return proc.stdout


@pytest.mark.slow
def test_non_editable_install_trains_demo_from_elsewhere(tmp_path):
  python = _make_venv(str(tmp_path / 'venv'))
  source = tmp_path / 'source'
  shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*_NOT_COPIED))
  _run([python, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-index',
        '--ignore-installed', '--quiet', str(source)], cwd=str(tmp_path), timeout=600)
  shutil.rmtree(source)  # the installed package must not need its source tree

  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  location = _run([python, '-c', 'import sgdc_jax; print(sgdc_jax.__file__)'],
                  cwd=str(elsewhere), timeout=300).strip().splitlines()[-1]
  location = os.path.realpath(location)
  assert os.path.commonpath([location, os.path.realpath(REPO)]) != os.path.realpath(REPO), (
      f'sgdc_jax imported from the checkout: {location}')
  assert location.startswith(os.path.realpath(str(tmp_path / 'venv'))), location

  workdir = tmp_path / 'run'
  # Two steps (the warm-up must be shorter than the run); validation at the last step.
  _run([python, '-m', 'sgdc_jax.main', f'--config={REPO}/configs/demo.py', f'--workdir={workdir}',
        '--config.train.num_steps=2', '--config.optimizer.warmup_steps=1'],
       cwd=str(elsewhere), timeout=1200)
  # Orbax names checkpoint folders by step: the final (step 2) checkpoint was written.
  steps = [p for p in workdir.rglob('2') if p.is_dir()]
  assert steps, f'no step-2 checkpoint under {workdir}: {sorted(map(str, workdir.rglob("*")))}'
