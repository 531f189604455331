r"""Prepares a manually downloaded dataset, or your own folder, as TFDS ArrayRecord files.

Usage:
  python -m sgdc_jax.data.prepare --dataset=isic2018 --manual_dir=DIR [--data_dir=DIR]
  python -m sgdc_jax.data.prepare --dataset=folder --name=NAME --manual_dir=DIR \
      [--images=TEMPLATE --masks=TEMPLATE] [--rois=TEMPLATE] [--split_folders=F:S,...] \
      [--split_ratios=...] [--mask_threshold=T | --mask_classes=V:C,...] [--data_dir=DIR]

`--dataset` is one of isic2016, isic2018, ph2, conic (both configs), conic/binary,
conic/semantic, drive, folder. `folder` pairs images, masks and optional regions of interest
by path templates (see `sgdc_jax.data.builders.folder`); training then reads it with
`--config.data.name=NAME`. `drive` is a preset of it (`sgdc_jax.data.builders.drive`; takes
`--split_ratios` too).
`--data_dir` defaults to TFDS's (`$TFDS_DATA_DIR` or ~/tensorflow_datasets).

Running it again reuses the prepared data, after checking that the manual dir still holds the
same files (names and sizes, fingerprinted at preparation) and, for `folder`, that the pairing
options are the same; otherwise it stops and asks for `--rebuild`. Folders `incomplete.*` left
by an interrupted run are removed (a lock file keeps two runs on one data set apart). At the
end it prints the split sizes, colour conversions, ignored files and, for thresholded masks,
the ambiguous mask pixels per split.

Paths may start with `~` or hold `$VARS` (`sgdc_jax.paths`; expanded when the flags are
parsed). Errors as every entry point (`sgdc_jax.cli`): one line `error: ...`, exit status 2
for a user error, 130 when interrupted; set SGDC_DEBUG=1 for the traceback.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import sys
from typing import Sequence

from absl import app
from absl import flags
import tensorflow_datasets as tfds

from sgdc_jax import cli
from sgdc_jax.data import builders
from sgdc_jax.data import image_io
from sgdc_jax.data.builders import _common
from sgdc_jax.data.builders import drive as drive_lib
from sgdc_jax.data.builders import folder as folder_lib

FOLDER = 'folder'
DRIVE = 'drive'
DATASET_NAMES = sorted(builders.DATASET_NAMES + [FOLDER])
LOCK_FILE = '.prepare.lock'
INTERRUPTED = ('prepare interrupted; nothing was marked prepared, and the next run removes the '
               'partial output')


def _builders_for(dataset: str, data_dir: str | None, name: str | None,
                  folder_options: folder_lib.FolderOptions | None) -> list:
  """Builder instances for `dataset` (every config when none is named)."""
  if dataset == FOLDER:
    name = folder_lib.check_name(name)
    taken = set(builders.BUILDERS) | {'synthetic_lesions', FOLDER}
    if name in taken or name in tfds.list_builders(with_community_datasets=False):
      raise ValueError(f'--name={name!r} is already the name of a data set '
                       f'({"ours" if name in taken else "in the TFDS catalogue"}); choose another')
    return [folder_lib.builder_class(name)(data_dir=data_dir, options=folder_options)]
  if dataset == DRIVE:
    if name is not None:
      raise ValueError("--name is for --dataset=folder; DRIVE's data set is named 'drive'")
    return [builders.Drive(data_dir=data_dir, options=folder_options)]
  if name is not None or folder_options is not None:
    raise ValueError(f'--name and the pairing options are for --dataset=folder, not {dataset!r}')
  base, _, config = dataset.partition('/')
  if base not in builders.BUILDERS:
    raise ValueError(f'unknown dataset {dataset!r}; expected one of {", ".join(DATASET_NAMES)}')
  cls = builders.BUILDERS[base]
  known = [c.name for c in cls.BUILDER_CONFIGS]
  if config and config not in known:
    raise ValueError(f'unknown config {config!r} for {base}; expected one of {known}')
  configs = [config] if config else (known or [None])
  return [cls(config=c, data_dir=data_dir) if c else cls(data_dir=data_dir) for c in configs]


@contextlib.contextmanager
def _exclusive(folder: str, full_name: str):
  """Holds an exclusive lock on `folder/.prepare.lock` (released by the OS if killed).

  Raises:
    ValueError: another `prepare` of the same data set holds the lock.
  """
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, LOCK_FILE), 'w') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise ValueError(f'{full_name}: another prepare of this data set is running '
                       f'(lock {os.path.join(folder, LOCK_FILE)}); wait for it to finish') from None
    yield


def remove_leftovers(folder: str) -> list[str]:
  """Deletes `folder/incomplete.*` (TFDS's temporary output of runs that were killed).

  Call only while holding the lock: then no other run can be writing there.
  """
  removed = []
  if os.path.isdir(folder):
    for entry in sorted(os.listdir(folder)):
      if entry.startswith('incomplete.'):
        path = os.path.join(folder, entry)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        removed.append(path)
  return removed


def _check_unchanged(builder, full_name: str, manual_dir: str,
                     folder_options: folder_lib.FolderOptions | None) -> str:
  """Compares a prepared data set with the manual dir (and pairing options, for `folder`
  builders and their presets) given now.

  Returns:
    A note for the report.

  Raises:
    ValueError: files or options differ (names what differs and offers --rebuild).
  """
  metadata = builder.info.metadata or {}
  named = folder_options is not None and type(builder).name != DRIVE  # --name applies
  rebuild = (f'; rerun with --rebuild to prepare it again from {manual_dir}, or use another '
             f'--data_dir' + (' or --name' if named else ''))
  if folder_options is not None and metadata.get('pairing') != folder_options.as_dict():
    raise ValueError(f'{full_name} in {builder.data_dir} was prepared with the pairing options '
                     f'{metadata.get("pairing")}, not {folder_options.as_dict()}{rebuild}')
  stored = metadata.get('manual_dir_fingerprint')
  if stored is None:
    return 'reused; prepared without a fingerprint, so the manual dir was not compared'
  now = _common.fingerprint(manual_dir)
  if now != stored:
    raise ValueError(
        f'{full_name} in {builder.data_dir} was prepared from {stored["num_files"]} files '
        f'({stored["num_bytes"]} bytes), but {manual_dir} now holds {now["num_files"]} files '
        f'({now["num_bytes"]} bytes): files were added, removed or changed{rebuild}')
  if folder_options is not None and 'ignored_files' in metadata:
    # Same files, same options: only other pairing rules (an older version) leave out another
    # number of files, e.g. pairs in subfolders it skipped.
    _, ignored = folder_lib.find_pairs(manual_dir, folder_options)
    if len(ignored) != len(metadata['ignored_files']):
      raise ValueError(f'{full_name} in {builder.data_dir} left out '
                       f'{len(metadata["ignored_files"])} file(s) of {manual_dir}, the pairing '
                       f'rules now leave out {len(ignored)} (e.g. pairs in subfolders are read '
                       f'now){rebuild}')
  return 'reused; the manual dir holds the same files (names and sizes)'


def prepare(dataset: str,
            manual_dir: str | None,
            data_dir: str | None = None,
            *,
            name: str | None = None,
            folder_options: folder_lib.FolderOptions | None = None,
            rebuild: bool = False) -> dict[str, dict]:
  """Prepares `dataset` (all configs when none is named) and returns what was built.

  Already prepared data is reused, without reading `manual_dir` when it is None; when given,
  its fingerprint must match the one stored at preparation (else ValueError, or `rebuild`).

  Args:
    dataset: 'isic2016', 'isic2018', 'ph2', 'conic', 'conic/binary', 'conic/semantic',
      'drive' or 'folder'.
    manual_dir: folder with the downloaded files in the layout of the builder's
      `MANUAL_DOWNLOAD_INSTRUCTIONS` (for 'folder': your images and masks).
    data_dir: TFDS data dir; None for TFDS's default.
    name: data set name, for 'folder' only.
    folder_options: pairing and mask options for 'folder' (None: the plain layout) or 'drive'
      (None: `drive.DRIVE_OPTIONS`).
    rebuild: delete and prepare again even when already prepared.

  Returns:
    `{'name[/config]': {'splits': {split: num_examples}, 'data_dir': path, 'metadata': dict,
    'status': str, 'removed_leftovers': [paths]}}`.

  Raises:
    ValueError: unknown dataset or config; missing, empty or wrong manual dir (the message
      lists the expected layout); bad input files (the message names the file); changed
      manual dir; another prepare of the same data set running.
  """
  if dataset == FOLDER and folder_options is None and manual_dir:
    folder_options = folder_lib.folder_options_from_flags(manual_dir, None, None, None, None, None)
  results = {}
  for builder in _builders_for(dataset, data_dir, name, folder_options):
    full_name = builder.info.full_name.rsplit('/', 1)[0]  # 'name[/config]' without version
    folder = os.path.dirname(os.fspath(builder.data_dir))
    with _exclusive(folder, full_name):
      removed = remove_leftovers(folder)
      mode = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
      if builder.is_prepared() and not rebuild:
        options = getattr(builder, 'options', None)  # the folder builders' pairing options
        status = (_check_unchanged(builder, full_name, manual_dir, options)
                  if manual_dir else 'reused; no --manual_dir given, so it was not compared')
      else:
        if not manual_dir:
          why = 'to rebuild it' if rebuild else f'not prepared yet in {folder}'
          raise ValueError(f'{full_name}: {why}; pass --manual_dir')
        type(builder).check_manual_dir(manual_dir)
        if rebuild and builder.is_prepared():
          mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS  # deletes the old version
          status = 'rebuilt'
        else:
          status = 'prepared'
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir, download_mode=mode,
          compute_stats=tfds.download.ComputeStatsMode.SKIP))
    results[full_name] = {
        'splits': {
            split: info.num_examples for split, info in sorted(builder.info.splits.items())
        },
        'data_dir': builder.data_dir,
        'metadata': dict(builder.info.metadata or {}),
        'status': status,
        'removed_leftovers': removed,
    }
  return results


def format_report(results: dict[str, dict]) -> str:
  """Human-readable summary of `prepare`'s result: split sizes, conversions, ignored files,
  ambiguous mask pixels, removed leftovers."""
  lines = []
  for full_name, r in results.items():
    sizes = ', '.join(f'{s}={n}' for s, n in r['splits'].items())
    lines.append(f'{full_name}: {sizes}  ({r["data_dir"]})')
    if r.get('status'):
      lines.append(f'  {r["status"]}')
    for path in r.get('removed_leftovers', []):
      lines.append(f'  removed {path} (left by an interrupted run)')
    pairing = r['metadata'].get('pairing')
    if pairing:
      line = f'  pairing: --images={pairing["images"]!r} --masks={pairing["masks"]!r}'
      if pairing.get('rois'):
        line += f' --rois={pairing["rois"]!r}'
      if pairing.get('split_folders'):
        line += f' --split_folders={folder_lib.split_folders_text(pairing["split_folders"])}'
      lines.append(line)
    conversions = {s: c for s, c in r['metadata'].get('conversions', {}).items() if c}
    lines.append(f'  colour conversions: {conversions if conversions else "none"}')
    lines.extend(folder_lib.roi_lines(r['metadata']))
    lines.extend(folder_lib.ambiguity_lines(r['metadata']))
    lines.extend(_ignored_lines(r['metadata'].get('ignored_files', [])))
  return '\n'.join(lines)


def _ignored_lines(ignored: Sequence[str]) -> list[str]:
  """Report lines for the files not read: image files by name (they may be data the layout
  missed), the rest counted."""
  images = [p for p in ignored if p.lower().endswith(image_io.IMAGE_EXTENSIONS)]
  others = [p for p in ignored if not p.lower().endswith(image_io.IMAGE_EXTENSIONS)]
  lines = []
  if images:
    shown = ', '.join(images[:5]) + (f' and {len(images) - 5} more' if len(images) > 5 else '')
    lines.append(f'  skipped {len(images)} image file(s) that pair with nothing: {shown}')
  if others:
    lines.append(f'  ignored {len(others)} non-image file(s), e.g. {others[0]}')
  return lines


def define_flags() -> None:
  """Defines the command-line flags (only when run as a script, so importing `prepare` never
  clashes with other absl flags of the same names)."""
  flags.DEFINE_string('dataset', None, ' | '.join(DATASET_NAMES))
  flags.DEFINE_string('manual_dir', None, 'folder holding the downloaded, unzipped files')
  flags.DEFINE_string('data_dir', None,
                      'TFDS data dir for the prepared dataset (default: TFDS default)')
  flags.DEFINE_bool('rebuild', False, 'prepare again even if already prepared')
  flags.DEFINE_string('name', None, 'folder: the data set name (read with data.name=NAME)')
  flags.DEFINE_string('images', None,
                      "folder: image path template under manual_dir, e.g. '{split}/images/{id}.*'"
                      ' ({id}, {split}, *)')
  flags.DEFINE_string('masks', None, "folder: mask path template, e.g. '{split}/masks/{id}.png'")
  flags.DEFINE_string('rois', None,
                      "folder: region-of-interest path template, e.g. '{split}/fov/{id}.png' "
                      '(optional; examples then carry roi)')
  flags.DEFINE_string('split_folders', None,
                      'folder: renames the {split} folders, e.g. training:train,test:test '
                      '(carves validation out of train when none is mapped)')
  flags.DEFINE_string('split_ratios', None,
                      'folder: e.g. train=0.8,validation=0.1,test=0.1 (hashed, seeded split)')
  flags.DEFINE_integer('mask_threshold', None,
                       'folder: lossy (JPEG) masks: label 1 where value > T (e.g. 127)')
  flags.DEFINE_string('mask_classes', None,
                      'folder: multi-class masks: VALUE:CLASS,... e.g. 0:0,128:1,255:2')


_FOLDER_FLAGS = ('images', 'masks', 'split_ratios', 'mask_threshold', 'mask_classes', 'rois',
                 'split_folders')


def run(flag_values) -> str:
  """Runs `prepare` from parsed flags and returns the report.

  Raises:
    ValueError: any user error (see `prepare`).
  """
  if not flag_values.dataset:
    raise ValueError(f'--dataset is required: one of {", ".join(DATASET_NAMES)}')
  folder_options = None
  given = [f for f in _FOLDER_FLAGS if getattr(flag_values, f) is not None]
  if flag_values.dataset == FOLDER:
    if not flag_values.manual_dir:
      raise ValueError('--dataset=folder needs --manual_dir=DIR (your images and masks)')
    folder_options = folder_lib.folder_options_from_flags(
        flag_values.manual_dir, *(getattr(flag_values, f) for f in _FOLDER_FLAGS))
  elif flag_values.dataset == DRIVE and given == ['split_ratios']:
    folder_options = dataclasses.replace(
        drive_lib.DRIVE_OPTIONS,
        split_ratios=folder_lib.parse_split_ratios(flag_values.split_ratios))
  elif given:
    also = ' (--dataset=drive takes --split_ratios only)' if flag_values.dataset == DRIVE else ''
    raise ValueError(f'--{", --".join(given)} apply to --dataset=folder only{also}')
  tfds.display_progress_bar(True)
  try:
    results = prepare(flag_values.dataset, flag_values.manual_dir, flag_values.data_dir,
                      name=flag_values.name, folder_options=folder_options,
                      rebuild=flag_values.rebuild)
  except BaseException:
    _end_progress_output()
    raise
  return format_report(results)


def _end_progress_output() -> None:
  """Closes the progress bars an error left open and ends the row they were drawn on.

  A bar is redrawn in place ('\\r', cursor moves) and cleared without a line break, so
  without this the error message would follow bar output on the same line (or a bar left
  open would be redrawn over or after it).
  """
  tqdm = sys.modules.get('tqdm')
  if tqdm is not None:
    for bar in sorted(getattr(tqdm.tqdm, '_instances', ()), key=lambda b: -b.pos):
      bar.close()  # innermost first
  sys.stderr.write('\n')
  sys.stderr.flush()


def main(argv: Sequence[str]) -> None:  # pylint: disable=unused-argument
  """Entry point of `python -m sgdc_jax.data.prepare` (`cli.parse_flags` refuses extra
  arguments and expands the path flags)."""
  cli.run(lambda: print(run(flags.FLAGS)), interrupted=INTERRUPTED)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
