"""Tests of sgdc_jax.metrics.inputs: bad arguments raise ValueError naming the metric and
the argument, through every public function that takes them."""
import numpy as np
import pytest

from sgdc_jax import metrics

def test_bad_inputs_raise():
  a = np.zeros((4, 4), np.int32)
  with pytest.raises(ValueError, match='shapes differ'):
    metrics.image_metrics(a, np.zeros((4, 5), np.int32))
  with pytest.raises(ValueError, match='labels must lie'):
    metrics.image_metrics(a + 3, a, num_classes=3)
  with pytest.raises(ValueError, match='empty_policy'):
    metrics.image_metrics(a, a, empty_policy='zero')
  with pytest.raises(ValueError, match='spacing'):
    metrics.hd95(a, a, spacing=(1.0, -1.0))
  with pytest.raises(ValueError, match='probabilities'):
    metrics.image_metrics(np.full((4, 4), 0.3), a)
  with pytest.raises(ValueError, match='probabilities'):
    metrics.hd95(a, np.full((4, 4), 0.7))
  with pytest.raises(ValueError, match='non-empty'):
    metrics.surface_distances(a, a)


def test_bad_tolerance_and_ratio_raise():
  a = np.ones((4, 4), bool)
  with pytest.raises(ValueError, match='tolerance'):
    metrics.surface_dice(a, a, -1.0)
  with pytest.raises(ValueError, match='tolerance'):
    metrics.image_metrics(a, a, nsd_tolerance=float('nan'))
  with pytest.raises(ValueError, match='dilation ratio'):
    metrics.boundary_iou(a, a, 0.0)
  with pytest.raises(ValueError, match='shapes differ'):
    metrics.boundary_iou(a, np.ones((4, 5), bool))


def test_checks_return_the_normalised_values():
  from sgdc_jax.metrics import inputs
  pred, target = inputs.as_bool_pair([0, 2, 1], np.array([1.0, 0.0, 1.0]), 'x')
  assert pred.dtype == bool and target.tolist() == [True, False, True]
  assert pred.tolist() == [False, True, True]
  np.testing.assert_array_equal(inputs.normalize_spacing(0.5, 3, 'x'), [0.5, 0.5, 0.5])
  assert inputs.normalize_spacing(None, 2, 'x') is None
  assert inputs.check_tolerance(np.int64(2), 'x') == 2.0
  assert inputs.check_ratio(0.02, 'x') == 0.02
  with pytest.raises(ValueError, match=r'^metrics\.hd95: spacing'):
    inputs.normalize_spacing((1.0, 2.0, 3.0), 2, 'hd95')
  with pytest.raises(ValueError, match='tolerance'):
    inputs.check_tolerance(float('inf'), 'x')
  with pytest.raises(ValueError, match='empty_policy'):
    inputs.check_policy('zero', 'x')
