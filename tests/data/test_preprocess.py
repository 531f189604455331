"""Tests of sgdc_jax.data.preprocess: one example's eval preprocessing equals the eval
pipeline's, and the training transform without augmentation is the same resize."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import io

import ml_collections
import numpy as np
import pytest
from PIL import Image

from pipeline_helpers import small_config, unnormalise
from sgdc_jax.data import pipeline, preprocess
from sgdc_jax.data import transforms as T
from sgdc_jax.ops.boundary import boundary_target


def _example(h=30, w=40, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
  mask = np.zeros((h, w), np.uint8)
  mask[5:20, 8:30] = 1
  return image, mask


def test_preprocess_eval_equals_the_eval_pipeline():
  config = small_config(size=16)
  source = pipeline.open_source(config, 'validation')
  batch = next(pipeline.create_eval_iterator(config, 'validation', 2, process_index=0,
                                             process_count=1))
  for row in range(2):
    record = source[row]
    got = pipeline.preprocess_eval(record['image'], record['mask'], config)
    assert set(got) == {'image', 'mask', 'edge'}
    for key in got:
      np.testing.assert_array_equal(got[key], batch[key][row])


def test_preprocess_eval_resizes_normalises_and_makes_the_edge_target():
  image, mask = _example()
  config = small_config()
  config = ml_collections.ConfigDict(dict(config.to_dict(), image_size=(12, 20)))  # (H, W)
  out = preprocess.preprocess_eval(image, mask, config)
  want_image, want_mask = T.resize_pair(image, mask, (12, 20))
  assert out['image'].shape == (12, 20, 3) and out['image'].dtype == np.float32
  np.testing.assert_allclose(out['image'], T.normalise(want_image, config.mean, config.std))
  assert out['mask'].dtype == np.int32
  np.testing.assert_array_equal(out['mask'], want_mask)
  np.testing.assert_array_equal(out['edge'], boundary_target(want_mask, config.boundary_width))


def test_preprocess_eval_without_a_mask_and_from_encoded_bytes():
  image, _ = _example()
  config = small_config(size=16)
  out = preprocess.preprocess_eval(image, None, config)
  assert not out['mask'].any() and not out['edge'].any()
  np.testing.assert_array_equal(
      out['image'], preprocess.preprocess_eval(image, np.zeros((30, 40), np.uint8),
                                               config)['image'])
  png = io.BytesIO()
  Image.fromarray(image).save(png, format='PNG')  # lossless: the same pixels once decoded
  from_bytes = preprocess.preprocess_eval(png.getvalue(), None, config)
  np.testing.assert_allclose(from_bytes['image'], out['image'], atol=1e-6)
  with pytest.raises(ValueError, match='predict: mask size'):
    preprocess.preprocess_eval(image, np.zeros((30, 41), np.uint8), config, where='predict')


def test_train_transform_without_augmentation_is_the_eval_resize():
  image, mask = _example(seed=1)
  config = small_config(size=16)
  config.augment.enabled = False
  got = preprocess.TrainTransform(config).random_map(
      {'image': image, 'mask': mask, 'id': 'x'}, np.random.default_rng(0))
  want = preprocess.preprocess_eval(image, mask, config)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key])


def test_eval_transform_pads_index_minus_one_with_zeros():
  image, mask = _example()
  config = small_config(size=8)
  transform = preprocess.EvalTransform([{'image': image, 'mask': mask}], config)
  pad, real = transform.map(-1), transform.map(0)
  assert set(pad) == set(real) == {'image', 'mask', 'edge', 'valid', 'index'}
  assert not pad['valid'] and pad['index'] == -1 and not pad['image'].any()
  assert real['valid'] and real['index'] == 0
  for key in ('image', 'mask', 'edge'):
    assert pad[key].shape == real[key].shape and pad[key].dtype == real[key].dtype


# --- patch training (data.train_mode='patch') --------------------------------------------


def _patch_config(crop=32, jitter=(1.0, 1.0), augment=False):
  config = small_config()
  config.train_mode = 'patch'
  config.crop_size = crop
  config.scale_jitter = jitter
  config.augment.enabled = augment
  return config


def _coordinates(h, w):
  """uint8 (h, w, 3) image whose pixel (y, x) is (y, x, 7): each pixel names its position."""
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  return np.stack([yy, xx, np.full_like(yy, 7)], -1).astype(np.uint8)


def _patch(config, image, mask, seed=0):
  return preprocess.TrainTransform(config).random_map(
      {'image': image, 'mask': mask, 'id': 'x'}, np.random.default_rng(seed))


@pytest.mark.parametrize('stored,crop', [((50, 70), 32), ((32, 32), 32), ((20, 9), 32),
                                         ((40, 100), (64, 32)), ((100, 40), (32, 64)),
                                         ((1, 1), 32)])
def test_patch_is_a_sub_window_of_the_stored_image_padded_to_the_crop(stored, crop):
  config = _patch_config(crop)
  ch, cw = (crop, crop) if np.ndim(crop) == 0 else crop
  image, mask = _coordinates(*stored), np.ones(stored, np.uint8)  # mask 0 only in the padding
  for seed in range(3):
    out = _patch(config, image, mask, seed)
    assert out['image'].shape == (ch, cw, 3) and out['image'].dtype == np.float32
    assert out['mask'].shape == out['edge'].shape == (ch, cw)
    np.testing.assert_array_equal(out['edge'], boundary_target(out['mask'], 2))
    rows, cols = np.nonzero(out['mask'])
    top, left, h, w = rows.min(), cols.min(), np.ptp(rows) + 1, np.ptp(cols) + 1
    assert (h, w) == (min(ch, stored[0]), min(cw, stored[1])) and out['mask'].sum() == h * w
    assert not out['image'][out['mask'] == 0].any()  # padding: 0 = the normalisation mean
    pixels = np.round(unnormalise(out['image'][top:top + h, left:left + w]) * 255)
    y0, x0 = int(pixels[0, 0, 0]), int(pixels[0, 0, 1])
    np.testing.assert_array_equal(pixels, image[y0:y0 + h, x0:x0 + w])


def test_patch_padding_follows_flips_and_turns_and_stays_out_of_the_colour_jitter():
  config = _patch_config(32, augment=True)
  config.augment.update(brightness=0.4, contrast=0.4)
  image, mask = _coordinates(12, 20), np.ones((12, 20), np.uint8)
  shapes = set()
  for seed in range(12):
    out = _patch(config, image, mask, seed)
    rows, cols = np.nonzero(out['mask'])
    shapes.add((np.ptp(rows) + 1, np.ptp(cols) + 1))
    assert out['mask'].sum() == 12 * 20  # one solid block of the content, turned or not
    assert not out['image'][out['mask'] == 0].any()
    assert out['image'][out['mask'] == 1].std() > 0
  assert shapes == {(12, 20), (20, 12)}  # odd turns of the square window happen


def test_patch_scale_jitter_resizes_the_example_within_its_range():
  config = _patch_config(64, jitter=(0.75, 1.25))
  image, mask = _coordinates(16, 24), np.ones((16, 24), np.uint8)
  heights = set()
  for seed in range(30):
    out = _patch(config, image, mask, seed)
    rows, cols = np.nonzero(out['mask'])
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert 12 <= height <= 20 and 18 <= width <= 30
    assert abs(width / 24 - height / 16) < 0.1  # one factor for both sides
    heights.add(height)
  assert len(heights) >= 4
  off = _patch(_patch_config(64), image, mask)
  assert off['mask'].sum() == 16 * 24  # (1, 1): the stored resolution


def test_patch_is_deterministic_per_generator_and_varies_between_draws():
  config = _patch_config(32, jitter=(0.8, 1.2), augment=True)
  image, mask = _example(60, 80, seed=3)
  first, again, other = (_patch(config, image, mask, seed) for seed in (5, 5, 6))
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first['image'], other['image'])


def test_resize_mode_ignores_the_patch_fields():
  image, mask = _example(seed=2)
  config = small_config(size=16)
  want = _patch(config, image, mask, seed=4)
  config.crop_size = (64, 96)
  config.scale_jitter = (0.5, 2.0)
  got = _patch(config, image, mask, seed=4)
  assert got['image'].shape == (16, 16, 3)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.parametrize('field,value', [('train_mode', 'tiles'), ('crop_size', 100),
                                         ('crop_size', (64, 48)), ('crop_size', 0),
                                         ('scale_jitter', (1.25, 0.75)),
                                         ('scale_jitter', (0.0, 1.0)),
                                         ('scale_jitter', (1.0,))])
def test_bad_patch_fields_are_named(field, value):
  config = _patch_config()
  config[field] = value
  with pytest.raises(ValueError, match=f'data.{field}: expected'):
    preprocess.TrainTransform(config)
  from sgdc_jax.run import config as config_lib  # pylint: disable=g-import-not-at-top
  full = config_lib.get_config()
  full.data[field] = value
  with pytest.raises(config_lib.ConfigError, match=f'data.{field}: expected .*, got'):
    config_lib.validate_config(full, device_count=1, process_count=1)


def test_patch_fields_accept_the_values_a_config_record_holds():
  config = _patch_config(crop=[32, 64], jitter=[1, 1])  # config.json stores tuples as lists
  out = _patch(config, *_example())
  assert out['image'].shape == (32, 64, 3) and out['mask'].shape == (32, 64)
