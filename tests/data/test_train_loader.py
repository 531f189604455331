"""Tests of sgdc_jax.data.train_loader: batch format, aligned augmentation, the reference
path, shuffling and how processes share the stream (transforms: test_transforms.py)."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import numpy as np
import pytest

from image_examples import PatternSource
from pipeline_helpers import (IndexSource, assert_batches_equal, decode_ids, small_config,
                              unnormalise)
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


class MixedSizeSource:
  """Examples of several stored sizes: larger, smaller and equal to a 32 x 64 window,
  non-square, one of a single pixel. Dark noise with a bright rectangle; mask = bright."""
  SIZES = ((40, 80), (20, 90), (32, 64), (70, 30), (1, 1), (24, 24))

  def __len__(self):
    return len(self.SIZES)

  def __getitem__(self, index):
    h, w = self.SIZES[index]
    rng = np.random.default_rng(index)
    image = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
    image[h // 4:h // 4 + max(1, h // 2), w // 3:w // 3 + max(1, w // 2)] = 230
    mask = (image.mean(-1) > 128).astype(np.uint8)
    return {'image': image, 'mask': mask, 'id': f'mixed_{index}'}


def _patch_config(**fields):
  config = small_config()
  config.update(dict(train_mode='patch', crop_size=(32, 64), **fields))
  return config


def test_patch_mode_batches_mixed_sizes_at_the_crop_size_and_resume(monkeypatch):
  monkeypatch.setattr(sources, 'open_source', lambda config, split: MixedSizeSource())
  config = _patch_config(scale_jitter=(0.75, 1.25))
  it = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
  batches = [next(it) for _ in range(3)]
  for batch in batches:
    assert batch['image'].shape == (4, 32, 64, 3) and batch['image'].dtype == np.float32
    assert batch['mask'].shape == batch['edge'].shape == (4, 32, 64)
    np.testing.assert_array_equal(batch['edge'], boundary_target(batch['mask'], 2))
  state = it.get_state()
  want = next(it)
  resumed = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
  resumed.set_state(state)
  assert_batches_equal([next(resumed)], [want])
  again = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
  assert_batches_equal([next(again) for _ in range(3)], batches)  # same seed, same crops
  half = pipeline.create_train_iterator(config, 4, seed=2, process_index=1, process_count=2)
  assert next(half)['image'].shape == (2, 32, 64, 3)  # per-process batch: global / processes


def test_patch_mode_crops_change_between_steps_and_seeds(monkeypatch):
  monkeypatch.setattr(sources, 'open_source', lambda config, split: PatternSource(1, (90, 120)))
  config = _patch_config()
  config.augment.enabled = False
  it = pipeline.create_train_iterator(config, 2, seed=0, process_index=0, process_count=1)
  crops = [image for _ in range(3) for image in next(it)['image']]  # one example, 6 steps
  assert all(not np.array_equal(a, b) for k, a in enumerate(crops) for b in crops[k + 1:])
  other = pipeline.create_train_iterator(config, 2, seed=1, process_index=0, process_count=1)
  assert not np.array_equal(next(other)['image'][0], crops[0])


def test_patch_mode_keeps_image_and_mask_aligned(monkeypatch):
  monkeypatch.setattr(sources, 'open_source', lambda config, split: MixedSizeSource())
  config = _patch_config(scale_jitter=(0.8, 1.2))
  it = pipeline.create_train_iterator(config, 6, seed=5, process_index=0, process_count=1)
  padded = 0
  for _ in range(2):
    batch = next(it)
    for image, mask in zip(batch['image'], batch['mask']):
      content = np.abs(image).sum(-1) > 0  # padding is exactly 0
      padded += int(not content.all())
      bright = content & (unnormalise(image).mean(-1) > 0.5)
      assert mask.any() and not mask[~content].any()
      assert not np.any((bright != (mask > 0)) & ~boundary_target(mask, width=4).astype(bool))
  assert padded >= 6  # the smaller examples were padded
