"""Tests of sgdc_jax.data.preprocess: one example's eval preprocessing equals the eval
pipeline's, and the training transform without augmentation is the same resize."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import io

import ml_collections
import numpy as np
import pytest
from PIL import Image

from pipeline_helpers import small_config
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
