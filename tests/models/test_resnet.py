"""Tests of sgdc_jax.models.resnet: feature strides and channels (weights: test_resnet_convert)."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import pytest

from sgdc_jax.models import resnet


def test_stage_channels():
  assert resnet.stage_channels(18) == (64, 128, 256, 512)
  assert resnet.stage_channels(50) == (256, 512, 1024, 2048)
  with pytest.raises(ValueError, match='depth'):
    resnet.stage_channels(20)


def test_features_at_strides_4_to_32_with_ceil_division():
  model = resnet.ResNet(depth=18)
  x = jnp.zeros((1, 70, 64, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  feats = jax.eval_shape(model.apply, variables, x)
  assert [f.shape for f in feats] == [(1, 18, 16, 64), (1, 9, 8, 128), (1, 5, 4, 256),
                                      (1, 3, 2, 512)]
