"""A prepared data set with a shard cut short, missing or corrupt inside: opening or reading
it names the shard, the data set and split, and the command that rebuilds it (issue 25.2);
before, eval ended in Grain's `TypeError: object of type 'NoneType' has no len()` and training
in a raw `RuntimeError: Corrupted Riegeli/records file`. The suggested command repairs it."""
import glob
import os
import shlex
import shutil
import subprocess
import sys

import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)
import pytest

from pipeline_helpers import small_config
from test_folder import write_plain
from test_prepare import _one_clear_line
from test_train import CACHE, REPO
from sgdc_jax.data import pipeline, shards
from sgdc_jax.data.prepare import prepare
from sgdc_jax.data.sources import rebuild_hint
from sgdc_jax.errors import DamagedDataError
from sgdc_jax.log import shown_path

NAME = 'tiny'
SIZES = {'train': 6, 'validation': 3, 'test': 3}


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """`(manual dir, data dir)` of a prepared `folder` data set (6 / 3 / 3 PNG pairs)."""
  root = tmp_path_factory.mktemp('prepared')
  write_plain(root / 'manual', SIZES)
  prepare('folder', str(root / 'manual'), str(root / 'data'), name=NAME)
  return root / 'manual', root / 'data'


@pytest.fixture
def data_dir(prepared, tmp_path):
  """A fresh copy of the prepared data dir, to damage."""
  shutil.copytree(prepared[1], tmp_path / 'data')
  return tmp_path / 'data'


def _shard(data_dir, split):
  (path,) = glob.glob(str(data_dir / NAME / '*' / f'{NAME}-{split}.array_record-*'))
  return path


def _config(data_dir, workers=0):
  config = small_config(size=16)
  config.name, config.data_dir, config.num_workers = NAME, str(data_dir), workers
  return config


def _truncate(path):
  os.truncate(path, os.path.getsize(path) // 2)


def _flip(path, offset=0x1000, count=16):
  """Corrupts bytes inside the data (records 1-2 of 6), leaving the index at the end intact."""
  with open(path, 'r+b') as f:
    f.seek(offset)
    data = bytearray(f.read(count))
    f.seek(offset)
    f.write(bytes(b ^ 0xFF for b in data))


def _assert_names_the_shard(error, path, split, *needles):
  text = str(error.value)
  assert '\n' not in text
  assert f"data set '{NAME}' split '{split}'" in text and path in text
  assert '--rebuild' in text and f'--name={NAME}' in text
  for needle in needles:
    assert needle in text, text


def test_truncated_shard_is_named_when_the_split_is_opened(data_dir):
  path = _shard(data_dir, 'train')
  _truncate(path)
  config = _config(data_dir)
  with pytest.raises(DamagedDataError) as err:
    pipeline.open_source(config, 'train')
  _assert_names_the_shard(err, path, 'train', '6 records expected', 'cut short')
  # The training and the evaluation input, and slices of the split, fail the same way.
  with pytest.raises(DamagedDataError, match='cut short'):
    pipeline.create_train_iterator(config, 2, seed=0, process_index=0, process_count=1)
  with pytest.raises(DamagedDataError, match='cut short'):
    list(pipeline.create_eval_iterator(config, 'train', 2, process_index=0, process_count=1))
  with pytest.raises(DamagedDataError, match='cut short'):
    pipeline.open_source(config, 'train[:50%]+test')
  # The other splits are intact and open as before.
  assert len(pipeline.open_source(config, 'test')) == 3


def test_missing_shard_is_named(data_dir):
  path = _shard(data_dir, 'test')
  os.remove(path)
  with pytest.raises(DamagedDataError) as err:
    pipeline.open_source(_config(data_dir), 'test')
  _assert_names_the_shard(err, path, 'test', 'is missing (3 records expected)')


@pytest.mark.parametrize('workers', [0, 1])
def test_corrupt_record_is_named_when_read(data_dir, workers):
  """Damage inside a shard whose index survived passes the opening check and shows at read
  time, also from a Grain worker process, as the same error naming the shard and record."""
  path = _shard(data_dir, 'train')
  _flip(path)
  config = _config(data_dir, workers)
  assert len(pipeline.open_source(config, 'train')) == 6
  with pytest.raises(DamagedDataError) as err:
    list(pipeline.create_eval_iterator(config, 'train', 2, process_index=0, process_count=1))
  _assert_names_the_shard(err, path, 'train', 'Corrupted Riegeli', 'reading its record')
  it = pipeline.create_train_iterator(config, 2, seed=0, process_index=0, process_count=1)
  try:
    with pytest.raises(DamagedDataError) as err:
      for _ in range(4):  # the 6 shuffled records: a damaged one within 3 batches
        next(it)
  finally:
    it.close()
  _assert_names_the_shard(err, path, 'train', 'Corrupted Riegeli')


def test_intact_data_reads_through_the_check(data_dir):
  config = _config(data_dir)
  source = pipeline.open_source(config, 'train')
  assert isinstance(source, shards.CheckedSource) and len(source) == 6
  assert source.dataset_info.name == NAME  # the TFDS source's attributes pass through
  batches = list(pipeline.create_eval_iterator(config, 'all', 4, process_index=0,
                                               process_count=1))
  assert sum(int(b['valid'].sum()) for b in batches) == sum(SIZES.values())


def _main(args, data_dir, workdir):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=CACHE,
             SGDC_NO_BAR='1')
  return subprocess.run(
      [sys.executable, '-m', 'sgdc_jax.main', '--config=configs/demo.py',
       f'--workdir={workdir}', f'--config.data.name={NAME}',
       f'--config.data.data_dir={data_dir}'] + args,
      capture_output=True, text=True, cwd=REPO, timeout=300, env=env)


def test_training_and_evaluation_end_in_one_line_and_the_hint_repairs(prepared, data_dir,
                                                                      tmp_path):
  manual = prepared[0]
  train_shard, test_shard = _shard(data_dir, 'train'), _shard(data_dir, 'test')
  _truncate(train_shard)
  _truncate(test_shard)
  run = _main(['--mode=train'], data_dir, tmp_path / 'work')
  _one_clear_line(run, f"data set '{NAME}' split 'train'", train_shard, 'cut short')
  run = _main(['--mode=eval'], data_dir, tmp_path / 'work')
  _one_clear_line(run, f"data set '{NAME}' split 'test'", test_shard, 'cut short')
  # The command in the message, with the manual dir filled in, rebuilds the data set.
  (line,) = [l for l in run.stderr.splitlines() if l.startswith('error: ')]
  command = line.split('rebuild it with: ', 1)[1].replace('--manual_dir=DIR',
                                                          f'--manual_dir={manual}')
  args = shlex.split(command)
  assert args[:3] == ['python', '-m', 'sgdc_jax.data.prepare'], command
  rebuilt = subprocess.run([sys.executable] + args[1:], capture_output=True, text=True,
                           cwd=REPO, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
  assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
  config = _config(data_dir)
  assert [len(pipeline.open_source(config, s)) for s in SIZES] == list(SIZES.values())


def test_rebuild_hint_carries_the_pairing_options():
  pairing = {'images': 'img/{id}.jpg', 'masks': 'gt/{id}.png', 'split_ratios': [
      ['train', 0.8], ['test', 0.2]], 'mask_threshold': 127, 'mask_classes': None}
  hint = rebuild_hint('mine', '/d ata', {'pairing': pairing})
  assert hint == ("rebuild it with: python -m sgdc_jax.data.prepare --dataset=folder "
                  "--name=mine --images='img/{id}.jpg' --masks='gt/{id}.png' "
                  "--split_ratios=train=0.8,test=0.2 --mask_threshold=127 --manual_dir=DIR "
                  "--data_dir='/d ata' --rebuild")
  assert rebuild_hint('isic2016', '', {}) == (
      'rebuild it with: python -m sgdc_jax.data.prepare --dataset=isic2016 --manual_dir=DIR '
      '--rebuild')


def test_shard_names_are_shown_escaped():
  assert shown_path(os.fsdecode(b'/data/bad\xfe-train.array_record')) == (
      '/data/bad\\xfe-train.array_record')
