"""Random-access sources of raw examples: the synthetic splits or a prepared TFDS data set.

`open_source(data_config, split)` opens one split with the checks that name what is wrong
(unknown data set or split, not prepared yet: the command that prepares it; a shard missing,
cut short or corrupt: the command that rebuilds it, see `sgdc_jax.data.shards`);
`undecoded_images` keeps a TFDS source's images as their stored bytes for the transforms.
"""
from __future__ import annotations

import dataclasses
import os
import shlex

from sgdc_jax.data import builders
from sgdc_jax.data import shards
from sgdc_jax.data.synthetic import SyntheticLesions

SYNTHETIC = 'synthetic_lesions'
SYNTHETIC_SPLITS = ('train', 'validation', 'test')


def synthetic_split_seed(seed: int, split: str) -> int:
  """Seed of a synthetic split: `4 * seed + k`, k = 0/1/2 for train/validation/test.

  Distinct for every (seed, split) pair, so the splits are disjoint example streams.
  """
  if split not in SYNTHETIC_SPLITS:
    raise ValueError(f'{SYNTHETIC}: unknown split {split!r}; splits are {SYNTHETIC_SPLITS}')
  return 4 * int(seed) + SYNTHETIC_SPLITS.index(split)


def prepare_hint(name: str, data_dir: str) -> str:
  """The command that prepares data set `name` in `data_dir` ('' = the TFDS default)."""
  data_dir_arg = f' --data_dir={data_dir}' if data_dir else ''
  return (f'prepare it with: python -m sgdc_jax.data.prepare --dataset={name} '
          f'--manual_dir=DIR{data_dir_arg}')


def rebuild_hint(name: str, data_dir: str, metadata: dict | None = None) -> str:
  """The command that prepares data set `name` again, for a `folder` data set with the
  pairing options stored in its `metadata` (so the rebuilt files pair as before)."""
  data_dir_arg = f' --data_dir={shlex.quote(data_dir)}' if data_dir else ''
  if name.split('/')[0] in builders.BUILDERS:
    dataset = f'--dataset={name}'
  else:
    pairing = (metadata or {}).get('pairing') or {}
    dataset = f'--dataset=folder --name={name}'
    for key in ('images', 'masks', 'rois'):
      if pairing.get(key):
        dataset += f' --{key}={shlex.quote(pairing[key])}'
    for key, sep, pairs in (('split_folders', ':', pairing.get('split_folders')),
                            ('split_ratios', '=', pairing.get('split_ratios')),
                            ('mask_classes', ':', pairing.get('mask_classes'))):
      if pairs:
        dataset += f' --{key}=' + ','.join(f'{a}{sep}{b}' for a, b in pairs)
    if pairing.get('mask_threshold') is not None:
      dataset += f' --mask_threshold={pairing["mask_threshold"]}'
  return (f'rebuild it with: python -m sgdc_jax.data.prepare {dataset} --manual_dir=DIR'
          f'{data_dir_arg} --rebuild')


def prepared_names(data_dir: str | None) -> list[str]:
  """Names of the data sets prepared in `data_dir` (None: TFDS's default data dir)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  root = os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)
  if not os.path.isdir(root):
    return []
  names = []
  for name in sorted(os.listdir(root)):
    folder = os.path.join(root, name)
    if os.path.isdir(folder) and any(
        os.path.isfile(os.path.join(folder, v, 'dataset_info.json')) for v in os.listdir(folder)
        if os.path.isdir(os.path.join(folder, v))):
      names.append(name)
  return names


def tfds_builder(name: str, data_config):
  """The TFDS builder of one of our data sets, or of a `folder` data set prepared as `name`.

  Raises:
    ValueError: `name` is neither (lists ours and the ones prepared in data_dir).
    FileNotFoundError: one of ours, not prepared in data_dir.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = data_config.data_dir or None
  ours = name.split('/')[0] in builders.BUILDERS
  if not ours and name not in prepared_names(data_dir):
    known = sorted(builders.DATASET_NAMES + [SYNTHETIC])
    prepared = ', '.join(prepared_names(data_dir)) or 'none'
    raise ValueError(
        f'unknown dataset {name!r} (data.name): expected one of {", ".join(known)}, or a data '
        f'set prepared with python -m sgdc_jax.data.prepare --dataset=folder --name=NAME in '
        f'data.data_dir={data_config.data_dir!r} (prepared there: {prepared})')
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for an unknown name / config
    raise ValueError(f'unknown dataset {name!r} (data.name): {e}') from e
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'dataset {name!r} is not prepared in data_dir={str(builder.data_dir)!r} '
        f'(data.data_dir={data_config.data_dir!r}); {prepare_hint(name, data_config.data_dir)}')
  return builder


def open_source(data_config, split: str):
  """Random-access source of the raw, full-resolution examples of one split.

  Args:
    data_config: a `default_data_config()`-like ConfigDict; `name` is 'synthetic_lesions',
      one of the `sgdc_jax.data.builders` data sets, or the `--name` of a data set prepared
      with `python -m sgdc_jax.data.prepare --dataset=folder` in `data_dir`.
    split: split name ('train', 'validation', 'test', ...; TFDS slicing such as
      'train[:10%]' passes through for TFDS datasets).

  Returns:
    An object with `__len__` and `__getitem__(i) -> {'image': uint8 (H, W, 3),
    'mask': uint8 (H, W) (TFDS image features may carry a trailing 1), 'id': str or bytes}`,
    plus `'roi': uint8 (H, W)` (1 inside, 0 outside) for data sets prepared with a region of
    interest (`drive`, `folder` with `--rois`; TFDS decodes every stored feature), absent
    otherwise.

  Raises:
    ValueError: unknown split or dataset name (the message lists the known ones).
    FileNotFoundError: the TFDS dataset is not prepared in `data_dir` (the message names the
      directory and the command that prepares it).
    DamagedDataError: a shard of the split is missing or cut short (its ArrayRecord index
      does not hold the records `dataset_info.json` recorded); reads that fail later raise it
      too, naming the shard (`shards.CheckedSource`). The message names the rebuild command.
  """
  name = data_config.name
  if name == SYNTHETIC:
    syn = data_config.synthetic
    sizes = {'train': syn.train_size, 'validation': syn.validation_size, 'test': syn.test_size}
    seed = synthetic_split_seed(syn.seed, split)
    return SyntheticLesions(sizes[split], (syn.height, syn.width), seed=seed)

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds_builder(name, data_config)
  base = split.split('[')[0]
  # 'all' is TFDS's union of every split (PH2 documents it for all 200 images).
  if '+' not in split and base != 'all' and base not in builder.info.splits:
    raise ValueError(f'dataset {name!r} has no split {split!r}; '
                     f"splits are {sorted(builder.info.splits)} (or 'all')")
  where = f'data set {name!r} split {split!r}'
  hint = rebuild_hint(name, data_config.data_dir, builder.info.metadata)
  return shards.checked_source(
      lambda: tfds.data_source(name, split=split, data_dir=data_config.data_dir or None,
                               download=False),
      builder.info, split, where, hint)


def undecoded_images(source):
  """A TFDS source whose records keep 'image' as the stored JPEG/PNG bytes; others as given.

  The transforms decode the bytes themselves, at reduced size where the format allows.
  """
  if isinstance(source, shards.CheckedSource):
    return source.with_source(undecoded_images(source.source))
  if not (dataclasses.is_dataclass(source) and hasattr(source, 'dataset_info')
          and hasattr(source, 'decoders')):
    return source
  # TFDS is heavy and only TFDS-backed sources get here (open_source imported it already).
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = source.dataset_info.features
  if 'image' not in features or not isinstance(features['image'], tfds.features.Image):
    return source
  decoders = dict(source.decoders or {}, image=tfds.decode.SkipDecoding())
  return dataclasses.replace(source, decoders=decoders)
