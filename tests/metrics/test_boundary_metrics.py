"""NSD (surface Dice at a tolerance) and Boundary IoU against independent references: MONAI's
`compute_surface_dice`, brute-force all-pairs distances, and a NumPy Boundary IoU written from
the paper's definition (band = foreground pixels within distance d of the background)."""
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from sgdc_jax import metrics


def _blob(rng, h, w, sigma, frac):
  field = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma)
  return field > np.quantile(field, frac)


def _lesion(rng, h, w):
  """A lesion-like mask: an irregular ellipse with a wobbly outline, sometimes on the frame."""
  yy, xx = np.mgrid[:h, :w].astype(float)
  cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
  ry, rx = rng.uniform(0.15, 0.6) * h, rng.uniform(0.15, 0.6) * w
  angle = np.arctan2(yy - cy, xx - cx)
  wobble = 1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6)) + 0.08 * np.sin(7 * angle)
  return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < wobble ** 2


def _pairs(seed):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(3):
    a = _lesion(rng, 96, 128)
    out.append((a, np.roll(a, int(rng.integers(1, 6)), axis=int(rng.integers(0, 2)))))
    out.append((_lesion(rng, 96, 128), _lesion(rng, 96, 128)))
    out.append((_blob(rng, 64, 80, 2.0, 0.6), _blob(rng, 64, 80, 2.0, 0.6)))  # rough, many parts
  return out


def _brute_border(mask):
  padded = np.pad(mask, 1)
  inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
  return mask & ~inner


def _brute_nsd(pred, target, tol, spacing=(1.0, 1.0)):
  s = np.asarray(spacing, float)
  p = np.argwhere(_brute_border(pred)) * s
  t = np.argwhere(_brute_border(target)) * s
  d = cdist(p, t)
  return ((d.min(axis=1) <= tol).sum() + (d.min(axis=0) <= tol).sum()) / (len(p) + len(t))


def _monai_nsd(pred, target, tol, spacing=None):
  torch = pytest.importorskip('torch')
  monai_metrics = pytest.importorskip('monai.metrics')
  def onehot(m):
    return torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))
  with warnings.catch_warnings():  # MONAI 1.6 warns about its own deprecated internal argument
    warnings.simplefilter('ignore', FutureWarning)
    value = monai_metrics.compute_surface_dice(onehot(pred), onehot(target), [tol],
                                               include_background=False, spacing=spacing)
  return float(value.reshape(-1)[0])


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


@pytest.mark.parametrize('seed', [0, 1])
@pytest.mark.parametrize('tol', [0.0, 1.0, 2.0, 3.5])
def test_nsd_equals_monai_and_brute_force(seed, tol):
  for pred, target in _pairs(seed):
    got = metrics.surface_dice(pred, target, tol)
    assert got == pytest.approx(_brute_nsd(pred, target, tol), abs=1e-6)
    assert got == pytest.approx(_monai_nsd(pred, target, tol), abs=1e-6)
    assert metrics.image_metrics(pred, target, nsd_tolerance=tol)['nsd'] == pytest.approx(
        got, abs=1e-12)


def test_nsd_with_spacing_equals_monai():
  for pred, target in _pairs(5)[:4]:
    got = metrics.surface_dice(pred, target, 2.0, spacing=(0.8, 1.25))
    assert got == pytest.approx(_brute_nsd(pred, target, 2.0, (0.8, 1.25)), abs=1e-6)
    assert got == pytest.approx(_monai_nsd(pred, target, 2.0, spacing=(0.8, 1.25)), abs=1e-6)


def test_nsd_hand_computed():
  a = np.zeros((20, 20), bool)
  a[5:15, 5:15] = True
  b = np.roll(a, 3, axis=1)  # every border pixel of either mask is 0 or 3 px from the other
  assert metrics.surface_dice(a, a, 0.0) == 1.0
  assert metrics.surface_dice(a, b, 3.0) == 1.0
  # Within 2 px: the shared top/bottom rows (7 of 10 pixels on each side overlap).
  assert metrics.surface_dice(a, b, 2.0) == pytest.approx(_brute_nsd(a, b, 2.0))
  assert metrics.surface_dice(a, b, 2.0) < 1.0


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('ratio', [0.005, 0.02, 0.05])
def test_boundary_iou_equals_reference(seed, ratio):
  for pred, target in _pairs(seed):
    got = metrics.boundary_iou(pred, target, ratio)
    assert got == pytest.approx(_reference_boundary_iou(pred, target, ratio), abs=1e-6)
    assert metrics.image_metrics(pred, target, boundary_iou_ratio=ratio)['boundary_iou'] == (
        pytest.approx(got, abs=1e-12))


def test_boundary_band_equals_repeated_square_erosion():
  # The authors' mask_to_boundary: pad with background, erode d times with a 3x3 square.
  for pred, _ in _pairs(3):
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


@pytest.mark.parametrize('which', ['pred', 'target'])
def test_empty_masks_follow_the_hd95_policy(which):
  z = np.zeros((30, 40), bool)
  m = z.copy()
  m[5:12, 6:20] = True
  assert metrics.surface_dice(z, z) == 1.0 and metrics.boundary_iou(z, z) == 1.0
  both = metrics.image_metrics(z, z)
  assert both['nsd'] == 1.0 and both['boundary_iou'] == 1.0 and both['excluded'] == ()
  pred, target = (z, m) if which == 'pred' else (m, z)
  assert metrics.surface_dice(pred, target) == 0.0
  assert metrics.boundary_iou(pred, target) == 0.0
  assert math.isnan(metrics.surface_dice(pred, target, empty_policy='exclude'))
  assert math.isnan(metrics.boundary_iou(pred, target, empty_policy='exclude'))
  ex = metrics.image_metrics(pred, target, empty_policy='exclude')
  assert math.isnan(ex['nsd']) and math.isnan(ex['boundary_iou'])
  summary = metrics.summarize([ex, metrics.image_metrics(m, m, empty_policy='exclude')])
  assert summary['excluded']['nsd'] == 1 and summary['mean']['nsd'] == 1.0
  assert summary['n']['boundary_iou'] == 1


def test_multiclass_has_per_class_nsd_and_boundary_iou():
  rng = np.random.default_rng(7)
  pred = rng.integers(0, 3, size=(40, 50)).astype(np.uint8)
  target = np.roll(pred, 1, axis=0)
  out = metrics.image_metrics(pred, target, num_classes=3, nsd_tolerance=1.0)
  for c in (1, 2):
    assert out[f'nsd/{c}'] == pytest.approx(metrics.surface_dice(pred == c, target == c, 1.0))
    assert out[f'boundary_iou/{c}'] == pytest.approx(metrics.boundary_iou(pred == c,
                                                                          target == c))
  assert out['nsd'] == pytest.approx((out['nsd/1'] + out['nsd/2']) / 2)


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


def test_boundary_f_score_equals_brute_force():
  rng = np.random.default_rng(11)
  for pred, target in _pairs(11)[:5]:
    edge = _brute_border(pred) | (rng.random(pred.shape) < 0.01)  # a noisy edge map
    contour = _brute_border(target)
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
