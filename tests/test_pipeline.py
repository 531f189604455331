"""Tests of the Grain input pipeline and its per-example transforms."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import json

import numpy as np
import pytest

from sgdc_jax.boundary import boundary_target
from sgdc_jax.data import pipeline
from sgdc_jax.data import transforms as T

MEAN = np.array(T.IMAGENET_MEAN)
STD = np.array(T.IMAGENET_STD)


def _config(size=24, raw=(30, 40), n=(12, 10, 6)):
  config = pipeline.default_data_config()
  config.image_size = size
  config.read_threads = 0
  config.synthetic.update(dict(train_size=n[0], validation_size=n[1], test_size=n[2],
                               height=raw[0], width=raw[1]))
  return config


def _unnormalise(image):
  return image * STD + MEAN  # back to [0, 1] RGB


class PatternSource:
  """Dark textured background with one bright off-centre rectangle; mask = bright pixels.

  The mask is derived from the image (threshold), so any misalignment introduced by the
  augmentation shows up as a disagreement between the two.
  """

  def __init__(self, n, size=(40, 56)):
    self.n, self.size = n, size

  def __len__(self):
    return self.n

  def __getitem__(self, index):
    rng = np.random.default_rng(index)
    h, w = self.size
    image = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
    top, left = rng.integers(2, h // 3), rng.integers(2, w // 3)
    image[top:top + h // 3, left:left + w // 2] = rng.integers(200, 256, (h // 3, w // 2, 3))
    mask = (image.mean(-1) > 128).astype(np.uint8)
    return {'image': image, 'mask': mask, 'id': f'pattern_{index}'}


class IndexSource:
  """Example i is a constant image of grey level 10 * i (identifies the record)."""

  def __init__(self, n, size=(8, 8)):
    self.n, self.size = n, size

  def __len__(self):
    return self.n

  def __getitem__(self, index):
    image = np.full(self.size + (3,), 10 * index, np.uint8)
    mask = np.zeros(self.size, np.uint8)
    mask[: index % self.size[0]] = 1
    return {'image': image, 'mask': mask, 'id': str(index)}


def _decode_ids(batch):
  grey = _unnormalise(batch['image'])[..., 0].mean(axis=(1, 2)) * 255
  return [int(v) for v in np.round(grey / 10)]


# --- per-example transforms -------------------------------------------------------------


def test_pillow_geometry_matches_numpy_reference():
  ex = PatternSource(1)[0]
  rng = np.random.default_rng(0)
  for hflip in (False, True):
    for vflip in (False, True):
      for turns in range(4):
        box = T.random_crop_box(rng, 40, 56, (0.4, 1.0))
        resized = T.resize_pair(ex['image'], ex['mask'], (20, 28), box)
        want = T.flip_rotate(*resized, hflip, vflip, turns)
        got = T.crop_flip_rotate(ex['image'], ex['mask'], (20, 28), box, hflip, vflip, turns)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[0].shape[:2] == ((28, 20) if turns % 2 else (20, 28))


def test_flip_rotate_against_index_arithmetic():
  image = np.arange(2 * 3 * 3).reshape(2, 3, 3)
  mask = image[..., 0]
  out, out_mask = T.flip_rotate(image, mask, True, False, 1)
  # hflip: (r, c) <- (r, W-1-c); rot90 ccw: (r, c) <- (c, W'-1-r) of the flipped image.
  flipped = image[:, ::-1]
  for r in range(3):
    for c in range(2):
      np.testing.assert_array_equal(out[r, c], flipped[c, 2 - r])
  np.testing.assert_array_equal(out_mask, out[..., 0])


def test_random_crop_box_bounds():
  rng = np.random.default_rng(1)
  for _ in range(200):
    x0, y0, x1, y1 = T.random_crop_box(rng, 30, 50, (0.3, 0.9), (0.5, 2.0))
    assert 0 <= x0 < x1 <= 50 and 0 <= y0 < y1 <= 30
    assert (x1 - x0) * (y1 - y0) <= 0.9 * 1500 + 1e-6
  with pytest.raises(ValueError, match='scale'):
    T.random_crop_box(rng, 10, 10, (0.0, 1.0))


def test_normalise_matches_reference():
  image = np.random.default_rng(2).integers(0, 256, (5, 7, 3)).astype(np.uint8)
  want = (image / 255.0 - MEAN) / STD
  np.testing.assert_allclose(T.normalise(image), want, atol=1e-5)
  np.testing.assert_allclose(T.normalise(image / 255.0), want, atol=1e-5)
  assert T.normalise(image).dtype == np.float32


def test_colour_jitter_reference_cases():
  rng = np.random.default_rng(3)
  image = rng.uniform(0.2, 0.6, (6, 9, 3)).astype(np.float32)
  np.testing.assert_allclose(T.colour_jitter(image, rng), image, atol=1e-6)
  # Brightness only: one common factor.
  out = T.colour_jitter(image, rng, brightness=0.3)
  ratio = out / image
  assert np.ptp(ratio) < 1e-5 and 0.7 <= ratio.mean() <= 1.3
  # Hue only: luma (Y of YIQ) is unchanged.
  luma = np.array([0.299, 0.587, 0.114])
  out = T.colour_jitter(image * 0.8 + 0.1, rng, hue=0.05)
  np.testing.assert_allclose(out @ luma, (image * 0.8 + 0.1) @ luma, atol=1e-5)
  assert np.abs(out - (image * 0.8 + 0.1)).max() > 1e-3
  # Contrast only: the mean luma stays, deviations from it scale by one factor.
  out = T.colour_jitter(image, np.random.default_rng(4), contrast=0.5)
  m = (image @ luma).mean()
  factor = (out - m) / (image - m)
  assert np.ptp(factor) < 1e-3 and abs(factor.mean() - 1) > 1e-3


def test_check_example_errors():
  ex = PatternSource(1)[0]
  with pytest.raises(ValueError, match="missing field 'mask'"):
    T.check_example({'image': ex['image']}, 'x')
  with pytest.raises(ValueError, match='differs'):
    T.check_example({'image': ex['image'], 'mask': ex['mask'][1:]}, 'x')
  with pytest.raises(ValueError, match='uint8'):
    T.check_example({'image': ex['image'].astype(np.float32), 'mask': ex['mask']}, 'x')
  image, mask = T.check_example({'image': ex['image'], 'mask': ex['mask'][..., None]}, 'x')
  assert mask.shape == ex['mask'].shape


# --- training pipeline -----------------------------------------------------------------


def test_train_batches_format():
  config = _config()
  it = pipeline.create_train_iterator(config, 4, seed=0, process_index=0, process_count=1)
  batch = next(it)
  assert batch['image'].shape == (4, 24, 24, 3) and batch['image'].dtype == np.float32
  assert batch['mask'].shape == (4, 24, 24) and batch['mask'].dtype == np.int32
  assert batch['edge'].dtype == np.uint8
  np.testing.assert_array_equal(batch['edge'], boundary_target(batch['mask'], 2))
  assert 0 < batch['mask'].mean() < 1


def test_augmentation_keeps_image_and_mask_aligned(monkeypatch):
  monkeypatch.setattr(pipeline, 'open_source', lambda config, split: PatternSource(16))
  config = _config(size=32)
  it = pipeline.create_train_iterator(config, 8, seed=1, process_index=0, process_count=1)
  checked = 0
  for _ in range(4):
    batch = next(it)
    for image, mask in zip(_unnormalise(batch['image']), batch['mask']):
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


def test_two_processes_see_disjoint_examples_covering_the_split(monkeypatch):
  monkeypatch.setattr(pipeline, 'open_source', lambda config, split: IndexSource(12))
  config = _config(size=8)
  config.augment.enabled = False
  seen = []
  for process in (0, 1):
    it = pipeline.create_train_iterator(config, 4, seed=7, process_index=process, process_count=2)
    ids = [i for _ in range(3) for i in _decode_ids(next(it))]  # 3 batches of 2 = 6 = 12 / 2
    assert len(ids) == 6
    seen.append(ids)
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(12))
  assert seen[0] + seen[1] != list(range(12))  # shuffled


def test_shuffle_changes_between_epochs_and_seeds(monkeypatch):
  monkeypatch.setattr(pipeline, 'open_source', lambda config, split: IndexSource(8))
  config = _config(size=8)
  config.augment.enabled = False
  it = pipeline.create_train_iterator(config, 8, seed=3, process_index=0, process_count=1)
  first, second = _decode_ids(next(it)), _decode_ids(next(it))
  assert sorted(first) == sorted(second) == list(range(8)) and first != second
  other = pipeline.create_train_iterator(config, 8, seed=4, process_index=0, process_count=1)
  assert _decode_ids(next(other)) != first


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_iterator_state_resumes_at_the_exact_next_batch():
  config = _config()
  it = pipeline.create_train_iterator(config, 4, seed=5, process_index=1, process_count=2)
  for _ in range(3):  # crosses the epoch boundary (12 examples / 2 processes / 2 per batch)
    next(it)
  state = it.get_state()
  json.dumps(state)  # checkpointable as JSON
  after = [next(it) for _ in range(4)]
  it.set_state(state)
  _assert_batches_equal([next(it) for _ in range(4)], after)
  fresh = pipeline.create_train_iterator(config, 4, seed=5, process_index=1, process_count=2)
  fresh.set_state(state)
  _assert_batches_equal([next(fresh) for _ in range(4)], after)


def test_worker_processes_give_the_same_batches_and_resume():
  config = _config()
  reference = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
  want = [next(reference) for _ in range(5)]
  config.num_workers = 2
  it = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
  try:
    got = [next(it) for _ in range(2)]
    state = it.get_state()
    got += [next(it) for _ in range(3)]
    _assert_batches_equal(got, want)
    it.set_state(state)
    _assert_batches_equal([next(it) for _ in range(3)], want[2:])
  finally:
    it.close()
  # Evaluation keeps its order with workers too.
  got = list(pipeline.create_eval_iterator(config, 'validation', 4, process_index=0,
                                           process_count=1))
  config.num_workers = 0
  want = list(pipeline.create_eval_iterator(config, 'validation', 4, process_index=0,
                                            process_count=1))
  _assert_batches_equal(got, want)


def test_train_errors():
  config = _config()
  with pytest.raises(ValueError, match='not divisible'):
    pipeline.create_train_iterator(config, 5, seed=0, process_index=0, process_count=2)
  with pytest.raises(ValueError, match='process_index'):
    pipeline.create_train_iterator(config, 4, seed=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='seed'):
    pipeline.create_train_iterator(config, 4, seed=-1, process_index=0, process_count=1)


# --- evaluation pipeline -----------------------------------------------------------------


def test_eval_sees_every_example_once_with_padding():
  config = _config(size=16)  # validation split: 10 records; 10 % 4 != 0
  source = pipeline.open_source(config, 'validation')
  per_process = []
  for process in (0, 1):
    batches = list(pipeline.create_eval_iterator(config, 'validation', 4, process_index=process,
                                                 process_count=2))
    assert len(batches) == 3  # ceil(10 / 4), the same on every process
    for b in batches:
      assert b['image'].shape == (2, 16, 16, 3) and b['valid'].dtype == bool
      assert b['index'].dtype == np.int32
      assert np.array_equal(b['valid'], b['index'] >= 0)
      assert not b['image'][~b['valid']].any() and not b['mask'][~b['valid']].any()
    per_process.append(batches)
  indices = [int(i) for p in per_process for b in p for i in b['index'][b['valid']]]
  assert sorted(indices) == list(range(10))
  padding = sum(int((~b['valid']).sum()) for p in per_process for b in p)
  assert padding == 2
  # Global batch k = records 4k..4k+3: process 0 holds the first half, process 1 the second.
  np.testing.assert_array_equal(per_process[0][1]['index'], [4, 5])
  np.testing.assert_array_equal(per_process[1][2]['index'], [-1, -1])
  # Content is the resized record, the same on every run.
  first = per_process[0][0]
  _, mask = T.resize_pair(source[1]['image'], source[1]['mask'], (16, 16))
  np.testing.assert_array_equal(first['mask'][1], mask)
  again = next(pipeline.create_eval_iterator(config, 'validation', 4, process_index=0,
                                             process_count=2))
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])


def test_eval_indices_single_process():
  assert pipeline.eval_indices(5, 4, 0, 1) == [0, 1, 2, 3, 4, -1, -1, -1]
  assert pipeline.eval_indices(4, 4, 0, 1) == [0, 1, 2, 3]


# --- sources ---------------------------------------------------------------------------------


def test_unprepared_tfds_dataset_names_dir_and_command(tmp_path):
  config = _config()
  config.name = 'isic2016'
  config.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError) as err:
    pipeline.open_source(config, 'train')
  assert str(tmp_path) in str(err.value)
  assert 'python -m sgdc_jax.data.prepare --dataset=isic2016' in str(err.value)


def _write_tiny_isic2016(root, rng):
  """A few JPEG/PNG pairs in the ISIC 2016 layout (folder names from the builder)."""
  from PIL import Image
  from sgdc_jax.data.builders import Isic2016
  masks = {}
  for split, count in (('train', 3), ('test', 3)):
    image_dir, mask_dir = (root / f for f in Isic2016.SPLIT_FOLDERS[split])
    image_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for k in range(count):
      name = f'ISIC_{len(masks):07d}'
      h, w = 30 + 2 * k, 40
      image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
      mask = np.zeros((h, w), np.uint8)
      mask[5:20, 8 + k:30] = 255
      Image.fromarray(image).save(image_dir / f'{name}.jpg', quality=95)
      Image.fromarray(mask).save(mask_dir / f'{name}{Isic2016.MASK_SUFFIX}.png')
      masks[name] = mask // 255
  return masks


def test_tfds_isic2016_through_the_pipeline(tmp_path):
  from sgdc_jax.data.prepare import prepare
  masks = _write_tiny_isic2016(tmp_path / 'manual', np.random.default_rng(0))
  prepare('isic2016', str(tmp_path / 'manual'), str(tmp_path / 'data'))
  config = _config(size=16)
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
