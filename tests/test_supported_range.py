"""The supported range: pyproject.toml's bounds hold both tested sets; the newest set's Python.

CI tests two dependency sets, the pins of requirements.txt (`make test`) and the newest
releases of requirements-newest.txt (`make test-newest`); pyproject.toml must admit both, and
requirements-newest.txt must stay exact so that CI is reproducible.
"""
import os
import re
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIND = os.path.join(REPO, '.ci', 'find-python312')


def _dependencies() -> dict[str, Requirement]:
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    deps = tomllib.load(f)['project']['dependencies']
  return {canonicalize_name(r.name): r for r in map(Requirement, deps)}


def _exact(path: str) -> dict[str, str]:
  """name -> version of the `name==version` lines of a requirements file."""
  out = {}
  for line in open(os.path.join(REPO, path)):
    line = line.split('#')[0].strip()
    if '==' in line:
      name, version = line.split('==')
      out[canonicalize_name(name)] = version.strip()
  return out


def test_newest_file_is_exact_and_holds_every_dependency():
  lines = [l.strip() for l in open(os.path.join(REPO, 'requirements-newest.txt'))
           if l.strip() and not l.startswith('#')]
  assert all(re.fullmatch(r'[A-Za-z0-9._-]+==[^=\s]+', l) for l in lines), lines
  newest = _exact('requirements-newest.txt')
  assert set(_dependencies()) | {'jaxlib', 'pytest', 'pytest-xdist'} <= set(newest)


@pytest.mark.parametrize('path', ['requirements.txt', 'requirements-newest.txt'])
def test_pyproject_bounds_admit_the_tested_set(path):
  versions = _exact(path)
  deps = _dependencies()
  tested = [name for name in deps if name in versions]
  # Both files pin the libraries the range is about.
  assert {'jax', 'flax', 'optax', 'orbax-checkpoint', 'grain', 'numpy'} <= set(tested)
  outside = {n: (versions[n], str(deps[n].specifier)) for n in tested
             if not deps[n].specifier.contains(versions[n], prereleases=True)}
  assert not outside, f'{path} tests versions pyproject.toml excludes: {outside}'


def test_the_two_sets_differ_in_jax():
  # Otherwise the second environment tests nothing the first does not.
  assert _exact('requirements.txt')['jax'] != _exact('requirements-newest.txt')['jax']


def _fake_python(path: str, body: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write('#!/bin/sh\n' + body + '\n')
  os.chmod(path, 0o755)


def _find(tmp_path, **env) -> subprocess.CompletedProcess:
  base = dict(PATH=f'{tmp_path}/bin:/usr/bin:/bin', HOME=str(tmp_path / 'home'),
              PYENV_ROOT=str(tmp_path / 'pyenv'))
  return subprocess.run(['bash', FIND], env=dict(base, **env), capture_output=True, text=True,
                        timeout=60, check=False)


def test_find_python312_skips_broken_shims_and_takes_pyenvs_version(tmp_path):
  # A pyenv shim on PATH that cannot run 3.12 (another version is global) does not count.
  _fake_python(str(tmp_path / 'bin' / 'python3.12'),
               'echo "pyenv: python3.12: command not found" >&2; exit 127')
  _fake_python(str(tmp_path / 'pyenv' / 'versions' / '3.12.1' / 'bin' / 'python3.12'),
               'echo /fake/3.12.1/bin/python3.12')
  proc = _find(tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == '/fake/3.12.1/bin/python3.12'


def test_find_python312_fails_loudly_without_one(tmp_path):
  # A Python that is not 3.12 fails the version check (exit 1, as the assert would).
  _fake_python(str(tmp_path / 'bin' / 'python3.12'), 'exit 1')
  proc = _find(tmp_path, NEWEST_PYTHON=str(tmp_path / 'missing'))
  assert proc.returncode == 1 and proc.stdout == ''
  assert 'no working Python 3.12' in proc.stderr and 'NEWEST_PYTHON' in proc.stderr
