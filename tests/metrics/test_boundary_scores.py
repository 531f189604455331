"""Tests of sgdc_jax.metrics.boundary_scores: Boundary IoU against a NumPy reference written
from the paper's definition (band = foreground pixels within distance d of the
background), the authors' repeated 3x3 erosion, and the boundary F-score by all pairs."""
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from mask_examples import brute_border, mask_pairs
from sgdc_jax import metrics

def _reference_band(mask, d):
  """Foreground pixels whose chessboard distance to a background pixel (the frame counts as
  background) is at most d, by all pairs."""
  padded = np.pad(mask, 1)
  fg = np.argwhere(padded)
  bg = np.argwhere(~padded)
  dist = cdist(fg, bg, metric='chebyshev').min(axis=1)
  band = np.zeros_like(padded)
  band[tuple(fg[dist <= d].T)] = True
  return band[1:-1, 1:-1]


def _reference_boundary_iou(pred, target, ratio):
  h, w = pred.shape
  d = max(1, int(round(ratio * math.sqrt(h * h + w * w))))
  bp, bt = _reference_band(pred, d), _reference_band(target, d)
  return (bp & bt).sum() / (bp | bt).sum()


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('ratio', [0.005, 0.02, 0.05])
def test_boundary_iou_equals_reference(seed, ratio):
  for pred, target in mask_pairs(seed):
    got = metrics.boundary_iou(pred, target, ratio)
    assert got == pytest.approx(_reference_boundary_iou(pred, target, ratio), abs=1e-6)
    assert metrics.image_metrics(pred, target, boundary_iou_ratio=ratio)['boundary_iou'] == (
        pytest.approx(got, abs=1e-12))


def test_boundary_band_equals_repeated_square_erosion():
  # The authors' mask_to_boundary: pad with background, erode d times with a 3x3 square.
  for pred, _ in mask_pairs(3):
    for d in (1, 2, 5):
      eroded = ndimage.binary_erosion(np.pad(pred, 1), np.ones((3, 3)), iterations=d)
      assert np.array_equal(metrics.boundary_band(pred, d), pred & ~eroded[1:-1, 1:-1])
  full = np.ones((7, 9), bool)  # touches the frame everywhere: the frame is background
  assert np.array_equal(metrics.boundary_band(full, 1), _reference_band(full, 1))


def test_boundary_iou_is_not_plain_iou_and_sees_outline_errors():
  # A large mask with a notch: plain IoU barely changes, Boundary IoU clearly drops.
  a = np.zeros((200, 200), bool)
  a[20:180, 20:180] = True
  b = a.copy()
  b[20:26, 60:140] = False
  iou = metrics.image_metrics(b, a)['iou']
  biou = metrics.boundary_iou(b, a)
  assert iou > 0.98 and biou < 0.9


def test_boundary_f_score_equals_brute_force():
  rng = np.random.default_rng(11)
  for pred, target in mask_pairs(11)[:5]:
    edge = brute_border(pred) | (rng.random(pred.shape) < 0.01)  # a noisy edge map
    contour = brute_border(target)
    for tol in (0.0, 1.5, 3.0):
      got = metrics.boundary_f_score(edge, contour, tol)
      d = cdist(np.argwhere(edge), np.argwhere(contour))
      p = np.mean(d.min(axis=1) <= tol)
      r = np.mean(d.min(axis=0) <= tol)
      assert got['precision'] == pytest.approx(p, abs=1e-12)
      assert got['recall'] == pytest.approx(r, abs=1e-12)
      assert got['f'] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=1e-12)
  z = np.zeros((5, 5), bool)
  one = z.copy()
  one[2, 2] = True
  assert metrics.boundary_f_score(z, z, 1.0)['f'] == 1.0
  assert metrics.boundary_f_score(one, z, 1.0) == {'precision': 0.0, 'recall': 0.0, 'f': 0.0}
