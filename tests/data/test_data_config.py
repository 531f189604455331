"""Tests of sgdc_jax.data.data_config: the default data section and the input size."""
import ml_collections
import pytest

from sgdc_jax.data import data_config, sources, workers
from sgdc_jax.data import transforms as T


def test_default_data_config_is_the_synthetic_set_with_auto_sized_workers():
  config = data_config.default_data_config()
  assert config.name == sources.SYNTHETIC
  assert (config.train_split, config.eval_split, config.test_split) == (
      'train', 'validation', 'test')
  assert config.num_workers == config.read_threads == workers.AUTO
  assert tuple(config.mean) == T.IMAGENET_MEAN and tuple(config.std) == T.IMAGENET_STD
  assert config.augment.scale_min < config.augment.scale_max <= 1.0
  workers.validate_data_config(config)  # the defaults pass their own checks
  assert data_config.default_data_config() is not config  # a fresh copy each call


def _with_size(size):
  """The default config with `image_size=size`, via a dict: its int field refuses a tuple."""
  config = data_config.default_data_config().to_dict()
  return ml_collections.ConfigDict(dict(config, image_size=size))


def test_image_size_takes_one_side_or_a_pair():
  assert data_config.image_size(data_config.default_data_config()) == (256, 256)
  assert data_config.image_size(_with_size(96)) == (96, 96)
  assert data_config.image_size(_with_size((96, 128))) == (96, 128)
  for bad in ((0, 5), (4, 4, 4), -3):
    with pytest.raises(ValueError, match='data.image_size'):
      data_config.image_size(_with_size(bad))
