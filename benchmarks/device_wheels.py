"""Prepares what a lent GPU machine (no network) needs besides its image: wheels and the data.

  python benchmarks/device_wheels.py [--out=.devcarry] [--data=JPEG_DIR] [--max_train=N]
  python benchmarks/device_wheels.py --check [--out=.devcarry]   # sizes and versions only

The GPU image has jax[cuda], flax, optax, orbax-checkpoint and tensorboard (and what they
depend on: numpy, scipy, pillow, protobuf, absl-py, etils, ...) but not the data stack of
`requirements.txt` (Grain, CLU, TFDS, ml-collections), matplotlib, tqdm or safetensors, nor the
few packages those import at run time. `WHEELS` lists them, at the
versions the project pins (`requirements.txt`) and the versions seen working with them here;
they are downloaded for CPython 3.12 on manylinux x86_64 into `OUT/wheels` (`.devcarry/` is
ignored by git and carried to the device). A package published only as a source archive
(`promise`) is built into a wheel here. Installed on the device, without network, by
`benchmarks/device_check.py --wheels=OUT/wheels` (pip --no-index --no-deps --target).

`--data=DIR` copies an ISIC 2017 JPEG folder (`{split}x/imgx{id}.jpg`, `{split}y/imgy{id}.jpg`)
to `OUT/isic2017` (`--max_train` keeps the first N training pairs), so that it travels too.
The end checks that the wheel folder holds exactly one version of each package in `WHEELS`,
weighs less than `WHEEL_LIMIT_MIB`, and that the wheels, the data and the tracked files together
stay under `CARRY_LIMIT_MIB` (what a device call carries); it exits 1 when not.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (distribution, version, why it is needed on the device). Versions: the pins of
# requirements.txt for the first four; the rest are what those import at run time (train,
# eval, predict, prepare) and the GPU image lacks.
WHEELS = (
    ('grain', '0.2.18', 'input pipeline (requirements.txt pin)'),
    ('clu', '0.0.12', 'clu.metrics (requirements.txt pin)'),
    ('tensorflow-datasets', '4.9.10', 'data sets and prepare (requirements.txt pin)'),
    ('ml-collections', '1.1.0', 'configs (requirements.txt: >=1.0,<2)'),
    ('array-record', '0.8.6', 'TFDS/Grain file format'),
    ('immutabledict', '4.3.1', 'imported by TFDS'),
    ('promise', '2.3', 'imported by TFDS (source archive only: built here)'),
    ('six', '1.17.0', 'imported by promise'),
    ('tensorflow-metadata', '1.21.0', 'imported by TFDS'),
    ('googleapis-common-protos', '1.76.0', 'imported by tensorflow-metadata'),
    ('toml', '0.10.2', 'imported by TFDS'),
    ('termcolor', '3.3.0', 'imported by TFDS when preparing'),
    ('dm-tree', '0.1.10', 'imported by TFDS when reading'),
    ('portpicker', '1.6.0', 'imported by Grain'),
    ('cloudpickle', '3.1.3', 'imported by Grain'),
    ('wrapt', '2.5.2', 'imported by TFDS'),
    # Not in an image of jax[cuda] + flax + optax + orbax-checkpoint + tensorboard alone
    # (checked in a venv holding just those): figures, progress bars, .safetensors weights.
    # Versions of requirements-newest.txt (Python 3.12, as on the device).
    ('matplotlib', '3.11.2', 'overlays and training curves (sgdc_jax.reporting)'),
    ('contourpy', '1.4.0', 'imported by matplotlib'),
    ('cycler', '0.12.1', 'imported by matplotlib'),
    ('fonttools', '4.69.1', 'imported by matplotlib (pure-Python wheel: 1.3 vs 6.7 MiB)'),
    ('kiwisolver', '1.5.1', 'imported by matplotlib'),
    ('pyparsing', '3.3.3', 'imported by matplotlib'),
    ('python-dateutil', '4.0.0', 'imported by matplotlib'),
    ('tqdm', '4.70.1', 'progress bars of prepare and eval'),
    ('safetensors', '0.8.0', 'pretrained weights as .safetensors'),
)
PLATFORMS = ('manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_17_x86_64',
             'manylinux2014_x86_64', 'manylinux1_x86_64')
PYTHON_VERSION = '3.12'
WHEEL_LIMIT_MIB = 30
CARRY_LIMIT_MIB = 64
SOURCE_ONLY = ('promise',)
# Taken as the py3-none-any wheel: the compiled one only speeds up font subsetting.
PURE_PYTHON = ('fonttools',)
SPLITS = ('train', 'validation', 'test')


def normalize(name: str) -> str:
  """PEP 503 name as wheel file names spell it: 'ml-collections' -> 'ml_collections'."""
  return re.sub(r'[-_.]+', '_', name).lower()


def wheel_name_version(filename: str) -> tuple[str, str]:
  """('array_record', '0.8.6') for 'array_record-0.8.6-cp312-cp312-manylinux....whl'."""
  parts = filename[:-len('.whl')].split('-')
  return normalize(parts[0]), parts[1]


def check_wheels(folder: str, wheels=WHEELS, limit_mib: float = WHEEL_LIMIT_MIB) -> list[str]:
  """Problems of a wheel folder: missing, extra or duplicate packages, wrong versions, size."""
  files = sorted(f for f in os.listdir(folder) if f.endswith('.whl')) if os.path.isdir(
      folder) else []
  found: dict[str, list[str]] = {}
  for f in files:
    name, version = wheel_name_version(f)
    found.setdefault(name, []).append(version)
  want = {normalize(n): v for n, v, _ in wheels}
  problems = []
  for name, version in want.items():
    if name not in found:
      problems.append(f'missing: {name}=={version}')
    elif found[name] != [version]:
      problems.append(f'{name}: found {", ".join(found[name])}, want exactly {version}')
  problems += [f'not in the list: {name} {", ".join(v)}' for name, v in found.items()
               if name not in want]
  size = folder_mib(folder)
  if size > limit_mib:
    problems.append(f'wheels weigh {size:.1f} MiB > {limit_mib} MiB')
  return problems


def folder_mib(path: str) -> float:
  """Size of the files under `path` in MiB (0 if absent)."""
  total = 0
  for root, _, names in os.walk(path):
    total += sum(os.path.getsize(os.path.join(root, n)) for n in names
                 if not os.path.islink(os.path.join(root, n)))
  return total / 2**20


def tracked_mib(repo: str = REPO) -> float:
  """Size of the files git tracks plus untracked, not ignored ones (what a device call copies)."""
  out = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                       cwd=repo, capture_output=True, check=True).stdout
  paths = [p for p in out.decode().split('\0') if p]
  return sum(os.path.getsize(os.path.join(repo, p)) for p in paths
             if os.path.isfile(os.path.join(repo, p))) / 2**20


def download_command(name: str, version: str, dest: str) -> list[str]:
  """`pip download` of one wheel for CPython 3.12 / manylinux x86_64, without dependencies."""
  cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--only-binary=:all:',
         '--python-version', PYTHON_VERSION]
  if name in PURE_PYTHON:
    cmd += ['--implementation', 'py', '--abi', 'none', '--platform', 'any']
  else:
    cmd += ['--implementation', 'cp']
    for platform in PLATFORMS:
      cmd += ['--platform', platform]
  return cmd + ['-d', dest, f'{name}=={version}']


def download(dest: str) -> None:
  """Fills `dest` with the wheels of `WHEELS` (existing right versions are kept)."""
  os.makedirs(dest, exist_ok=True)
  have = {wheel_name_version(f) for f in os.listdir(dest) if f.endswith('.whl')}
  for name, version, _ in WHEELS:
    if (normalize(name), version) in have:
      continue
    if name in SOURCE_ONLY:  # pure Python, published as an sdist: build the wheel here
      subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', dest,
                      f'{name}=={version}'], check=True)
    else:
      subprocess.run(download_command(name, version, dest), check=True)


def copy_data(src: str, dest: str, max_train: int = 0) -> dict[str, int]:
  """Copies the `{split}x/imgx{id}.jpg` / `{split}y/imgy{id}.jpg` pairs of `src` to `dest`.

  Returns pairs per split. `max_train` > 0 keeps the training pairs with the smallest ids.
  """
  counts = {}
  for split in SPLITS:
    ids = sorted(int(f[len('imgx'):-len('.jpg')]) for f in os.listdir(os.path.join(src, f'{split}x'))
                 if re.fullmatch(r'imgx\d+\.jpg', f)
                 and os.path.exists(os.path.join(src, f'{split}y', f'imgy{f[4:]}')))
    if split == 'train' and max_train > 0:
      ids = ids[:max_train]
    for side in 'xy':
      folder = os.path.join(dest, f'{split}{side}')
      os.makedirs(folder, exist_ok=True)
      for i in ids:
        shutil.copyfile(os.path.join(src, f'{split}{side}', f'img{side}{i}.jpg'),
                        os.path.join(folder, f'img{side}{i}.jpg'))
    counts[split] = len(ids)
  for extra in ('LICENSE', 'README.md'):
    if os.path.isfile(os.path.join(src, extra)):
      shutil.copyfile(os.path.join(src, extra), os.path.join(dest, extra))
  return counts


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default=os.path.join(REPO, '.devcarry'))
  parser.add_argument('--data', default='', help='ISIC 2017 JPEG folder to copy along')
  parser.add_argument('--max_train', type=int, default=0, help='> 0: first N training pairs')
  parser.add_argument('--check', action='store_true', help='only check what is there')
  args = parser.parse_args(argv)
  wheels = os.path.join(args.out, 'wheels')
  if not args.check:
    with tempfile.TemporaryDirectory() as tmp:  # a failed download leaves no partial folder
      if os.path.isdir(wheels):
        shutil.copytree(wheels, tmp, dirs_exist_ok=True)
      download(tmp)
      shutil.rmtree(wheels, ignore_errors=True)
      shutil.copytree(tmp, wheels)
    if args.data:
      data = os.path.join(args.out, 'isic2017')
      shutil.rmtree(data, ignore_errors=True)
      counts = copy_data(args.data, data, args.max_train)
      print(f'data: {counts} pairs copied to {data}')
  problems = check_wheels(wheels)
  wheel_mib, carry_mib, tree_mib = folder_mib(wheels), folder_mib(args.out), tracked_mib()
  print(f'wheels: {len(os.listdir(wheels)) if os.path.isdir(wheels) else 0} files, '
        f'{wheel_mib:.1f} MiB (limit {WHEEL_LIMIT_MIB}) in {wheels}')
  print(f'carry: {args.out} {carry_mib:.1f} MiB + working tree {tree_mib:.1f} MiB = '
        f'{carry_mib + tree_mib:.1f} MiB (limit {CARRY_LIMIT_MIB})')
  if carry_mib + tree_mib > CARRY_LIMIT_MIB:
    problems.append(f'carry {carry_mib + tree_mib:.1f} MiB > {CARRY_LIMIT_MIB} MiB: use '
                    '--max_train')
  for p in problems:
    print(f'problem: {p}')
  return 1 if problems else 0


if __name__ == '__main__':
  sys.exit(main())
