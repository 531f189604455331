"""Tests of sgdc_jax.data.sources: unprepared data sets name the command that prepares them;
a prepared TFDS data set through the whole pipeline, its JPEGs decoded at reduced size."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import itertools

import numpy as np
import pytest

from pipeline_helpers import (assert_batches_equal, small_config, unnormalise,
                              write_tiny_isic2016)
from sgdc_jax.data import pipeline
from sgdc_jax.data import transforms as T


def test_unprepared_tfds_dataset_names_dir_and_command(tmp_path):
  config = small_config()
  config.name = 'isic2016'
  config.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError) as err:
    pipeline.open_source(config, 'train')
  assert str(tmp_path) in str(err.value)
  assert 'python -m sgdc_jax.data.prepare --dataset=isic2016' in str(err.value)


def test_tfds_isic2016_through_the_pipeline(tmp_path):
  from sgdc_jax.data.prepare import prepare
  masks = write_tiny_isic2016(tmp_path / 'manual', np.random.default_rng(0))
  prepare('isic2016', str(tmp_path / 'manual'), str(tmp_path / 'data'))
  config = small_config(size=16)
  config.name, config.data_dir = 'isic2016', str(tmp_path / 'data')
  source = pipeline.open_source(config, 'test')
  assert len(source) == 3
  with pytest.raises(ValueError, match='no split'):
    pipeline.open_source(config, 'validation')
  # TFDS's 'all' (used for PH2's 200 images) is the union of the splits.
  assert len(pipeline.open_source(config, 'all')) == len(source) + len(
      pipeline.open_source(config, 'train'))
  batch = next(pipeline.create_train_iterator(config, 2, seed=0, process_index=0, process_count=1))
  assert batch['image'].shape == (2, 16, 16, 3) and batch['mask'].max() == 1
  batches = list(pipeline.create_eval_iterator(config, 'test', 2, process_index=0, process_count=1))
  assert [list(b['index']) for b in batches] == [[0, 1], [2, -1]]
  for b in batches:
    for index, mask in zip(b['index'][b['valid']], b['mask'][b['valid']]):
      record = source[int(index)]
      ident = record['id'].decode() if isinstance(record['id'], bytes) else record['id']
      want = T.resize_pair(T.check_example(record)[0], masks[ident], (16, 16))[1]
      np.testing.assert_array_equal(mask, want)
  # The JPEG bytes are decoded in the transform: record 0 (30x40 -> 16x16, shrink < 2) in
  # full, so exactly as the reference path; records 1, 2 (32x40, 34x40) at half size.
  reference = list(pipeline.create_eval_dataset(config, 'test', 2, process_index=0,
                                                process_count=1, reference=True))
  for key in batches[0]:
    np.testing.assert_array_equal(batches[0][key][0], reference[0][key][0])
  for got, want in zip(batches, reference):
    np.testing.assert_array_equal(got['mask'], want['mask'])


def _assert_close_to_full_decode(got, want):
  """Draft-decoded batches vs full decode: same masks, images within the stated tolerance."""
  np.testing.assert_array_equal(got['mask'], want['mask'])
  np.testing.assert_array_equal(got['edge'], want['edge'])
  diff = (unnormalise(got['image']) - unnormalise(want['image'])) * 255
  # Looser than test_transforms' per-image bound: 16x16 outputs of 96x128 JPEGs are tiny.
  assert np.abs(diff).mean() <= 2.0 and abs(diff.mean()) <= 0.5


def test_tfds_jpegs_decode_at_reduced_size_deterministically(tmp_path):
  from sgdc_jax.data.prepare import prepare
  write_tiny_isic2016(tmp_path / 'manual', None, lesions=True)
  prepare('isic2016', str(tmp_path / 'manual'), str(tmp_path / 'data'))
  config = small_config(size=16)   # 96x128 -> 16x16: JPEGs decoded at 1/4 (eval), 1/2-1/4 (train)
  config.name, config.data_dir = 'isic2016', str(tmp_path / 'data')
  kwargs = dict(global_batch_size=3, process_index=0, process_count=1)
  train = list(itertools.islice(pipeline.create_train_dataset(config, seed=1, **kwargs), 2))
  reference = list(itertools.islice(
      pipeline.create_train_dataset(config, seed=1, reference=True, **kwargs), 2))
  for got, want in zip(train, reference):
    _assert_close_to_full_decode(got, want)
  evaluated = list(pipeline.create_eval_iterator(config, 'test', **kwargs))
  reference = list(pipeline.create_eval_iterator(config, 'test', reference=True, **kwargs))
  _assert_close_to_full_decode(evaluated[0], reference[0])
  assert np.abs(evaluated[0]['image'] - reference[0]['image']).max() > 0  # drafted indeed
  # Deterministic: again, and with threads computing the examples.
  assert_batches_equal(list(pipeline.create_eval_iterator(config, 'test', **kwargs)), evaluated)
  config.read_threads = 2
  assert_batches_equal(list(pipeline.create_eval_iterator(config, 'test', **kwargs)), evaluated)
  # data.jpeg_draft=False decodes in full: the reference result exactly.
  config.jpeg_draft = False
  assert_batches_equal(list(pipeline.create_eval_iterator(config, 'test', **kwargs)), reference)
