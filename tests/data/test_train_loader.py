"""Tests of sgdc_jax.data.train_loader: batch format, aligned augmentation, the reference
path, shuffling and how processes share the stream (transforms: test_transforms.py)."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import numpy as np
import pytest

from image_examples import PatternSource
from pipeline_helpers import IndexSource, decode_ids, small_config, unnormalise
from sgdc_jax.data import pipeline, sources
from sgdc_jax.ops.boundary import boundary_target


def test_train_batches_format():
  config = small_config()
  it = pipeline.create_train_iterator(config, 4, seed=0, process_index=0, process_count=1)
  batch = next(it)
  assert batch['image'].shape == (4, 24, 24, 3) and batch['image'].dtype == np.float32
  assert batch['mask'].shape == (4, 24, 24) and batch['mask'].dtype == np.int32
  assert batch['edge'].dtype == np.uint8
  np.testing.assert_array_equal(batch['edge'], boundary_target(batch['mask'], 2))
  assert 0 < batch['mask'].mean() < 1


def test_augmentation_keeps_image_and_mask_aligned(monkeypatch):
  monkeypatch.setattr(sources, 'open_source', lambda config, split: PatternSource(16))
  config = small_config(size=32)
  it = pipeline.create_train_iterator(config, 8, seed=1, process_index=0, process_count=1)
  checked = 0
  for _ in range(4):
    batch = next(it)
    for image, mask in zip(unnormalise(batch['image']), batch['mask']):
      grey = image.mean(-1)
      bright = grey > (grey.min() + grey.max()) / 2
      if not mask.any():
        assert not bright.any()
        continue
      # Disagreement only within ~2 px of the mask boundary (resampling blur).
      band = boundary_target(mask, width=4).astype(bool)
      assert not np.any((bright != mask.astype(bool)) & ~band)
      iou = (bright & (mask > 0)).sum() / (bright | (mask > 0)).sum()
      assert iou > 0.75
      checked += 1
  assert checked >= 20


def test_fast_path_matches_the_reference_path():
  """uint8 colour jitter: the same geometry as the float32 reference, colours within 1/2 level."""
  config = small_config()
  kwargs = dict(global_batch_size=4, seed=3, process_index=0, process_count=1)
  fast = iter(pipeline.create_train_dataset(config, **kwargs))
  reference = iter(pipeline.create_train_dataset(config, reference=True, **kwargs))
  for _ in range(3):
    got, want = next(fast), next(reference)
    np.testing.assert_array_equal(got['mask'], want['mask'])
    np.testing.assert_array_equal(got['edge'], want['edge'])
    diff = np.abs(unnormalise(got['image']) - unnormalise(want['image'])) * 255
    assert diff.max() <= 0.5 + 1e-3
  config.augment.update(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
  got = next(iter(pipeline.create_train_dataset(config, **kwargs)))
  want = next(iter(pipeline.create_train_dataset(config, reference=True, **kwargs)))
  np.testing.assert_allclose(got['image'], want['image'], atol=1e-5)  # no jitter: same pixels


def test_two_processes_see_disjoint_examples_covering_the_split(monkeypatch):
  monkeypatch.setattr(sources, 'open_source', lambda config, split: IndexSource(12))
  config = small_config(size=8)
  config.augment.enabled = False
  seen = []
  for process in (0, 1):
    it = pipeline.create_train_iterator(config, 4, seed=7, process_index=process, process_count=2)
    ids = [i for _ in range(3) for i in decode_ids(next(it))]  # 3 batches of 2 = 6 = 12 / 2
    assert len(ids) == 6
    seen.append(ids)
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(12))
  assert seen[0] + seen[1] != list(range(12))  # shuffled


def test_shuffle_changes_between_epochs_and_seeds(monkeypatch):
  monkeypatch.setattr(sources, 'open_source', lambda config, split: IndexSource(8))
  config = small_config(size=8)
  config.augment.enabled = False
  it = pipeline.create_train_iterator(config, 8, seed=3, process_index=0, process_count=1)
  first, second = decode_ids(next(it)), decode_ids(next(it))
  assert sorted(first) == sorted(second) == list(range(8)) and first != second
  other = pipeline.create_train_iterator(config, 8, seed=4, process_index=0, process_count=1)
  assert decode_ids(next(other)) != first


def test_train_errors():
  config = small_config()
  with pytest.raises(ValueError, match='not divisible'):
    pipeline.create_train_iterator(config, 5, seed=0, process_index=0, process_count=2)
  with pytest.raises(ValueError, match='process_index'):
    pipeline.create_train_iterator(config, 4, seed=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='seed'):
    pipeline.create_train_iterator(config, 4, seed=-1, process_index=0, process_count=1)
