"""`python -m sgdc_jax.data.prepare` as a user meets it: one-line errors, changed manual dirs,
runs killed mid-way, two runs at once."""
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import types

import sgdc_jax  # noqa: F401  (sets XLA flags before anything imports jax)
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from sgdc_jax.data import prepare as prepare_lib
from sgdc_jax.data.builders import folder as folder_lib
from sgdc_jax.data.prepare import prepare
from sgdc_jax import cli
from test_builders import write_ph2
from test_folder import write_plain
from test_folder import write_with_rois

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(args, env=None):
  return subprocess.run([sys.executable, '-m', 'sgdc_jax.data.prepare'] + args,
                        capture_output=True, text=True, cwd=REPO, timeout=300,
                        env=dict(os.environ, **(env or {})))


def _one_clear_line(run, *needles):
  # The convention of every entry point (sgdc_jax.cli): exit 2, one `error: ...` line.
  assert run.returncode == cli.EXIT_USER_ERROR, (run.returncode, run.stderr[-2000:])
  assert 'Traceback' not in run.stderr, run.stderr[-3000:]
  failed = [line for line in run.stderr.splitlines() if line.startswith('error: ')]
  assert len(failed) == 1, run.stderr[-3000:]
  for needle in needles:
    assert needle in run.stderr, run.stderr[-3000:]


# ----------------------------------------------------------------------------- one-line errors


def test_unknown_dataset_lists_ours_including_folder():
  run = _cli(['--dataset=isic2019'])
  _one_clear_line(run, 'conic/semantic', 'folder', 'isic2018', 'ph2')
  assert len(run.stderr) < 1000  # ours only, not the TFDS catalogue


def test_missing_dataset_is_one_line():
  _one_clear_line(_cli([]), '--dataset is required: one of conic')


def test_unwritable_data_dir_is_one_line(tmp_path):
  manual = tmp_path / 'm'
  write_ph2(str(manual), np.random.default_rng(0))
  (tmp_path / 'a_file').write_text('x')
  run = _cli(['--dataset=ph2', f'--manual_dir={manual}', f'--data_dir={tmp_path / "a_file"}'])
  _one_clear_line(run, 'a_file')


@pytest.mark.parametrize('args,needle', [
    (['--dataset=ph2', '--mask_threshold=127'], 'apply to --dataset=folder only'),
    (['--dataset=ph2', 'extra'], 'unexpected arguments'),
    (['--dataset=folder', '--name=x'], 'needs --manual_dir'),
])
def test_other_cli_errors_are_one_line(args, needle):
  _one_clear_line(_cli(args), needle)


# Wide enough for the error line in full: pytest's temporary paths (longer under xdist) are
# part of it.
TERMINAL_COLS = 400


def _run_on_terminal(args, cols=TERMINAL_COLS):
  """Runs prepare with stdout and stderr on a pseudo-terminal `cols` wide; returns the bytes
  written there, decoded (the terminal turns '\\n' into '\\r\\n')."""
  master, slave = pty.openpty()
  fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, cols, 0, 0))
  proc = subprocess.Popen([sys.executable, '-m', 'sgdc_jax.data.prepare'] + args, cwd=REPO,
                          stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
  os.close(slave)
  out = b''
  while True:
    try:
      chunk = os.read(master, 1 << 16)
    except OSError:  # the child closed the terminal
      break
    if not chunk:
      break
    out += chunk
  os.close(master)
  assert proc.wait(timeout=300) == cli.EXIT_USER_ERROR
  return out.decode(errors='replace')


def _screen(text, cols=TERMINAL_COLS):
  """The rows a terminal shows for `text`: '\\r', '\\n', cursor up (ESC [ n A), erase to the
  end of the line (ESC [ K), wrapping at `cols`; other escape codes are ignored."""
  rows, r, c = [[]], 0, 0
  for token in re.findall(r'\x1b\[[0-9;?]*[A-Za-z]|.', text, re.S):
    if token == '\r':
      c = 0
    elif token == '\n':
      r, c = r + 1, 0
    elif token.startswith('\x1b'):
      if token[-1] == 'A':
        r = max(0, r - int(token[2:-1] or 1))
      elif token[-1] == 'K' and r < len(rows):
        del rows[r][c:]
    else:
      if c >= cols:
        r, c = r + 1, 0
      rows.extend([] for _ in range(r + 1 - len(rows)))
      rows[r].extend(' ' for _ in range(c + 1 - len(rows[r])))
      rows[r][c] = token
      c += 1
  return [''.join(row).rstrip() for row in rows]


def test_error_mid_preparation_is_on_a_clean_line(tmp_path):
  """A bad mask found while the progress bars are drawn on a terminal: the bars are closed
  first, so the error starts its own row and no bar is redrawn over or after it."""
  manual = tmp_path / 'm'
  write_plain(str(manual), {'train': 3, 'test': 2})
  Image.fromarray(np.zeros((20, 23), np.uint8)).save(manual / 'train' / 'masks' / 'tr2.png')
  text = _run_on_terminal(['--dataset=folder', '--name=mine', f'--manual_dir={manual}',
                           f'--data_dir={tmp_path / "d"}'])
  assert 'Generating splits' in text  # the bars were on the terminal
  rows = _screen(text)
  failed = [row for row in rows if 'error:' in row]
  assert len(failed) == 1 and failed[0].startswith('error: mask '), rows
  assert 'tr2.png has size 23x20' in failed[0]
  before, after = text[:text.index('error:')], text[text.index('error:'):]
  assert before.endswith('\n'), repr(before[-300:])  # its own line, also in a captured log
  assert '\x1b' not in after and 'it/s' not in after and '%|' not in after, repr(after)


def test_open_progress_bars_are_closed_before_the_error(capsys):
  import tqdm  # pylint: disable=import-outside-toplevel
  bars = [tqdm.tqdm(total=10, desc='Generating splits'),
          tqdm.tqdm(total=5, desc='Generating train examples', position=1, leave=False)]
  bars[1].update(2)
  prepare_lib._end_progress_output()  # pylint: disable=protected-access
  assert all(bar.disable for bar in bars)  # what close() sets: never redrawn
  assert not [b for b in tqdm.tqdm._instances if b in bars]  # pylint: disable=protected-access
  assert capsys.readouterr().err.endswith('\n')


def test_debug_env_shows_the_traceback():
  run = _cli(['--dataset=isic2019'], env={cli.DEBUG_ENV: '1'})
  assert run.returncode == cli.EXIT_USER_ERROR and 'Traceback' in run.stderr
  assert run.stderr.rstrip().splitlines()[-1].startswith('error: unknown dataset')


# ----------------------------------------------------------------------------- changed files


def test_changed_manual_dir_is_detected_and_rebuild_offered(tmp_path):
  manual, data_dir = tmp_path / 'm', str(tmp_path / 'd')
  write_plain(str(manual), {'train': 3, 'test': 2})
  first = prepare('folder', str(manual), data_dir, name='mine')
  assert first['mine']['status'] == 'prepared'
  again = prepare('folder', str(manual), data_dir, name='mine')
  assert again['mine']['status'].startswith('reused; the manual dir holds the same files')
  write_plain(str(manual), {'train': 4, 'test': 2}, seed=1)  # one pair more, others rewritten
  with pytest.raises(ValueError, match=r'prepared from 10 files .* now holds 12 files'
                     r'.*--rebuild'):
    prepare('folder', str(manual), data_dir, name='mine')
  rebuilt = prepare('folder', str(manual), data_dir, name='mine', rebuild=True)
  assert rebuilt['mine']['status'] == 'rebuilt'
  assert rebuilt['mine']['splits'] == {'test': 2, 'train': 4}
  assert len(tfds.data_source('mine', split='train', data_dir=data_dir)) == 4


def test_same_names_other_sizes_are_detected_for_published_sets(tmp_path):
  manual, data_dir = tmp_path / 'm', str(tmp_path / 'd')
  write_ph2(str(manual), np.random.default_rng(0))
  prepare('ph2', str(manual), data_dir)
  txt = manual / 'PH2Dataset' / 'PH2_dataset.txt'
  txt.write_text(txt.read_text() + 'one more line\n')
  with pytest.raises(ValueError, match='files were added, removed or changed'):
    prepare('ph2', str(manual), data_dir)
  # Without a manual dir the prepared data is reused as before.
  assert prepare('ph2', None, data_dir)['ph2']['status'].startswith('reused; no --manual_dir')


def test_changed_pairing_options_are_detected(tmp_path):
  manual, data_dir = tmp_path / 'm', str(tmp_path / 'd')
  write_plain(str(manual), {'train': 3, 'test': 2})
  prepare('folder', str(manual), data_dir, name='mine')
  options = folder_lib.FolderOptions(images='{split}/images/{id}.png',
                                     masks='{split}/masks/{id}.png')
  with pytest.raises(ValueError, match='was prepared with the pairing options .*--rebuild'):
    prepare('folder', str(manual), data_dir, name='mine', folder_options=options)


def test_changed_manual_dir_on_the_command_line(tmp_path):
  manual, data_dir = tmp_path / 'm', tmp_path / 'd'
  write_plain(str(manual), {'train': 3})
  args = ['--dataset=folder', '--name=mine', f'--manual_dir={manual}', f'--data_dir={data_dir}']
  assert _cli(args).returncode == 0
  os.remove(manual / 'train' / 'images' / 'tr0.png')
  os.remove(manual / 'train' / 'masks' / 'tr0.png')
  _one_clear_line(_cli(args), 'files were added, removed or changed', '--rebuild')
  run = _cli(args + ['--rebuild'])
  assert run.returncode == 0, run.stderr[-2000:]
  assert 'mine: train=2' in run.stdout and 'rebuilt' in run.stdout


# ----------------------------------------------------------------------------- killed runs


_KILL_AT_THIRD_PAIR = """
import os, signal, sys
from sgdc_jax.data.builders import _base
from sgdc_jax.data import prepare
original = _base.SegmentationBuilder._load_pair
calls = []
def load(self, *args):
  calls.append(1)
  if len(calls) == 3:
    os.kill(os.getpid(), signal.SIGKILL)
  return original(self, *args)
_base.SegmentationBuilder._load_pair = load
prepare.prepare('ph2', sys.argv[1], sys.argv[2])
"""


def test_killed_run_leaves_nothing_behind_after_the_rerun(tmp_path):
  manual, data_dir = tmp_path / 'm', tmp_path / 'd'
  truth = write_ph2(str(manual), np.random.default_rng(0))
  killed = subprocess.run([sys.executable, '-c', _KILL_AT_THIRD_PAIR, str(manual), str(data_dir)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
  assert killed.returncode == -9, killed.stderr[-2000:]
  leftovers = [e for e in os.listdir(data_dir / 'ph2') if e.startswith('incomplete.')]
  assert leftovers  # what kill -9 leaves
  result = prepare('ph2', str(manual), str(data_dir))
  assert [os.path.basename(p) for p in result['ph2']['removed_leftovers']] == leftovers
  assert 'left by an interrupted run' in prepare_lib.format_report(result)
  assert not [e for e in os.listdir(data_dir / 'ph2') if e.startswith('incomplete.')]
  source = tfds.data_source('ph2', split='all', data_dir=str(data_dir))
  assert sorted(source[i]['id'] for i in range(len(source))) == sorted(truth)


def test_second_run_on_the_same_data_set_is_refused(tmp_path):
  manual, data_dir = tmp_path / 'm', tmp_path / 'd'
  write_plain(str(manual), {'train': 2})
  lock_dir = data_dir / 'mine'
  lock_dir.mkdir(parents=True)
  with open(lock_dir / prepare_lib.LOCK_FILE, 'w') as held:
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running prepare holds it
    with pytest.raises(ValueError, match='another prepare of this data set is running'):
      prepare('folder', str(manual), str(data_dir), name='mine')
  # Released (as when that run ends or is killed): it proceeds.
  assert prepare('folder', str(manual), str(data_dir), name='mine')['mine']['splits'] == {
      'train': 2}


# ----------------------------------------------------------------------------- split folders, rois


def _flags(**kwargs):
  """Parsed flags as `prepare.run` reads them (every flag None unless given)."""
  names = ('dataset', 'manual_dir', 'data_dir', 'name') + prepare_lib._FOLDER_FLAGS
  return types.SimpleNamespace(**dict(dict.fromkeys(names), rebuild=False, **kwargs))


def test_rois_and_split_folders_flags_reach_the_folder_builder(tmp_path):
  manual = tmp_path / 'm'
  write_with_rois(str(manual), {'fit': 4, 'eval': 2})
  report = prepare_lib.run(_flags(
      dataset='folder', name='fov', manual_dir=str(manual), data_dir=str(tmp_path / 'd'),
      images='{split}/img/{id}.png', masks='{split}/gt/{id}.png', rois='{split}/fov/{id}_fov.gif',
      split_folders='fit:train,eval:test'))
  assert 'fov: test=2, train=3, validation=1' in report
  assert 'region-of-interest files: test=2, train=3, validation=1' in report
  # Other pairing options on a rerun: detected, as for the older options.
  options = folder_lib.FolderOptions(images='{split}/img/{id}.png', masks='{split}/gt/{id}.png',
                                     split_folders=(('fit', 'train'), ('eval', 'test')))
  with pytest.raises(ValueError, match='was prepared with the pairing options .*--rebuild'):
    prepare('folder', str(manual), str(tmp_path / 'd'), name='fov', folder_options=options)


@pytest.mark.parametrize('flags,match', [
    (dict(dataset='ph2', split_folders='a:train'), 'apply to --dataset=folder only$'),
    (dict(dataset='drive', rois='x/{id}.gif'),
     r'--rois apply to --dataset=folder only \(--dataset=drive takes --split_ratios only\)'),
])
def test_folder_flags_elsewhere_are_refused(flags, match):
  with pytest.raises(ValueError, match=match):
    prepare_lib.run(_flags(**flags))
