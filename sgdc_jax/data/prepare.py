r"""Prepares a manually downloaded dataset as TFDS ArrayRecord files.

Usage:
  python -m sgdc_jax.data.prepare --dataset=isic2018 --manual_dir=DIR [--data_dir=DIR]

`--dataset` is one of isic2016, isic2018, ph2, conic (both configs), conic/binary,
conic/semantic. `--data_dir` defaults to TFDS's (`$TFDS_DATA_DIR` or ~/tensorflow_datasets).
Running it again reuses the prepared data. At the end it prints the split sizes and the colour
conversions that were applied. The README (Datasets) describes the layouts.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

from absl import app
from absl import flags
import tensorflow_datasets as tfds


def prepare(dataset: str, manual_dir: str | None, data_dir: str | None = None) -> dict[str, dict]:
  """Prepares `dataset` (all configs when none is named) and returns what was built.

  Already prepared data is reused without reading `manual_dir` (which may then be None).

  Args:
    dataset: 'isic2016', 'isic2018', 'ph2', 'conic', 'conic/binary' or 'conic/semantic'.
    manual_dir: folder with the downloaded files in the layout of the builder's
      `MANUAL_DOWNLOAD_INSTRUCTIONS`.
    data_dir: TFDS data dir; None for TFDS's default.

  Returns:
    `{'name/config': {'splits': {split: num_examples}, 'data_dir': path, 'metadata': dict}}`.

  Raises:
    ValueError: unknown dataset or config; missing, empty or wrong manual dir (the message
      lists the expected layout); bad input files (the message names the file).
  """
  # Imported here so that `--help` stays fast; importing registers the builders.
  from sgdc_jax.data import builders  # pylint: disable=g-import-not-at-top

  name, _, config = dataset.partition('/')
  if name not in builders.BUILDERS:
    raise ValueError(f'unknown dataset {dataset!r}; expected one of {sorted(builders.BUILDERS)}')
  cls = builders.BUILDERS[name]
  known = [c.name for c in cls.BUILDER_CONFIGS]
  if config and config not in known:
    raise ValueError(f'unknown config {config!r} for {name}; expected one of {known}')
  configs = [config] if config else (known or [None])
  manual_dir = os.path.expanduser(manual_dir) if manual_dir else manual_dir
  data_dir = os.path.expanduser(data_dir) if data_dir else data_dir
  results = {}
  for cfg in configs:
    builder = cls(config=cfg, data_dir=data_dir) if cfg else cls(data_dir=data_dir)
    if not builder.is_prepared():
      if not manual_dir:
        raise ValueError(
            f'{builder.name}: not prepared yet in {builder.data_dir_root}; pass --manual_dir')
      cls.check_manual_dir(manual_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, compute_stats=tfds.download.ComputeStatsMode.SKIP))
    full_name = f'{name}/{cfg}' if cfg else name
    results[full_name] = {
        'splits': {
            split: info.num_examples for split, info in sorted(builder.info.splits.items())
        },
        'data_dir': builder.data_dir,
        'metadata': dict(builder.info.metadata or {}),
    }
  return results


def format_report(results: dict[str, dict]) -> str:
  """Human-readable summary of `prepare`'s result: split sizes, conversions, ignored files."""
  lines = []
  for full_name, r in results.items():
    sizes = ', '.join(f'{s}={n}' for s, n in r['splits'].items())
    lines.append(f'{full_name}: {sizes}  ({r["data_dir"]})')
    conversions = {s: c for s, c in r['metadata'].get('conversions', {}).items() if c}
    lines.append(f'  colour conversions: {conversions if conversions else "none"}')
    ignored = r['metadata'].get('ignored_files', [])
    if ignored:
      lines.append(f'  ignored {len(ignored)} non-image file(s), e.g. {ignored[0]}')
  return '\n'.join(lines)


def define_flags() -> None:
  """Defines --dataset, --manual_dir, --data_dir (only when run as a script, so importing
  `prepare` never clashes with other absl flags of the same names)."""
  flags.DEFINE_string('dataset', None,
                      'isic2016 | isic2018 | ph2 | conic | conic/binary | conic/semantic')
  flags.DEFINE_string('manual_dir', None, 'folder holding the downloaded, unzipped files')
  flags.DEFINE_string('data_dir', None,
                      'TFDS data dir for the prepared dataset (default: TFDS default)')


def main(argv: Sequence[str]) -> None:
  """Entry point of `python -m sgdc_jax.data.prepare`."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  flag_values = flags.FLAGS
  if not flag_values.dataset:
    raise app.UsageError('--dataset is required')
  tfds.display_progress_bar(True)
  try:
    results = prepare(flag_values.dataset, flag_values.manual_dir, flag_values.data_dir)
  except ValueError as e:
    sys.exit(f'prepare failed: {e}')
  print(format_report(results))


if __name__ == '__main__':
  define_flags()
  app.run(main)
