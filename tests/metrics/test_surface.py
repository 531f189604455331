"""Tests of sgdc_jax.metrics.surface: HD95, ASSD and NSD by hand, against brute-force
all-pairs references, MedPy and MONAI."""
import warnings

import numpy as np
import pytest
from scipy import ndimage

from mask_examples import (brute_distances, brute_hd95_assd, brute_nsd, mask_pairs,
                           square_blob)
from sgdc_jax import metrics

# ----------------------------------------------------------------------------- hand-computed


@pytest.mark.parametrize('k', [1, 2, 3, 5])
def test_square_shifted_by_k_has_hd95_k(k):
  pred = np.zeros((48, 48), bool)
  pred[10:30, 10:30] = True
  target = np.roll(pred, k, axis=1)
  assert metrics.hd95(pred, target) == pytest.approx(k, abs=1e-12)
  # ASSD by hand, per direction over the 76 border pixels of a 20x20 square: the column facing
  # away from the shift (20 px, corners included) is at distance k; on the top and bottom rows
  # the next k-1 pixels are at k-1, ..., 1; the opposite column's 18 inner pixels (row i in
  # 0..17) are at min(k, i + 1, 18 - i) (k <= 9); every other pixel is at 0.
  one_dir = 20 * k + 2 * sum(range(1, k))
  one_dir += sum(min(k, i + 1, 18 - i) for i in range(18))
  assert metrics.assd(pred, target) == pytest.approx(one_dir / 76, abs=1e-12)


def test_parallel_lines_with_spacing():
  pred = np.zeros((20, 30), bool)
  target = np.zeros((20, 30), bool)
  pred[5, 3:25] = True
  target[9, 3:25] = True
  assert metrics.hd95(pred, target) == pytest.approx(4.0)
  assert metrics.assd(pred, target) == pytest.approx(4.0)
  assert metrics.hd95(pred, target, spacing=(2.5, 1.0)) == pytest.approx(10.0)
  assert metrics.assd(pred, target, spacing=(2.5, 1.0)) == pytest.approx(10.0)
  assert metrics.hd95(pred, target, spacing=0.5) == pytest.approx(2.0)


def test_single_pixels_three_four_five():
  pred = np.zeros((10, 10), bool)
  target = np.zeros((10, 10), bool)
  pred[1, 1] = True
  target[4, 5] = True
  assert metrics.hd95(pred, target) == pytest.approx(5.0)
  assert metrics.assd(pred, target) == pytest.approx(5.0)


def test_hd95_is_the_percentile_of_the_union_not_the_max_of_directed():
  # pred = target + a separate 15x15 false positive: the union's 95th percentile is below
  # MONAI's max of the directed 95th percentiles; check against the definition.
  target = np.zeros((64, 64), bool)
  target[10:40, 10:40] = True
  pred = target.copy()
  pred[45:60, 45:60] = True
  d_pt, d_tp = metrics.surface_distances(pred, target)
  union = np.concatenate([d_pt, d_tp])
  assert metrics.hd95(pred, target) == pytest.approx(np.percentile(union, 95))
  assert metrics.assd(pred, target) == pytest.approx(union.mean())
  monai = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
  assert monai > metrics.hd95(pred, target) + 1.0


def test_border_matches_scipy_erosion_3d_and_2d():
  rng = np.random.default_rng(0)
  for shape in [(17, 23), (5, 6, 7)]:
    m = rng.random(shape) < 0.7
    fp = ndimage.generate_binary_structure(len(shape), 1)
    np.testing.assert_array_equal(metrics.border(m), m ^ ndimage.binary_erosion(m, fp))


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize('method', ['edt', 'kdtree', 'auto'])
@pytest.mark.parametrize('spacing', [None, (0.7, 1.3)])
def test_against_brute_force_reference(method, spacing):
  rng = np.random.default_rng(1)
  sp = (1.0, 1.0) if spacing is None else spacing
  for _ in range(6):
    pred = square_blob(rng, 40, sigma=3)
    target = square_blob(rng, 40, sigma=3)
    ref_hd, ref_sd = brute_hd95_assd(pred, target, sp)
    d_pt, d_tp = metrics.surface_distances(pred, target, spacing, method=method)
    ref_pt, ref_tp = brute_distances(pred, target, sp)
    np.testing.assert_allclose(np.sort(d_pt), np.sort(ref_pt), atol=1e-9)
    np.testing.assert_allclose(np.sort(d_tp), np.sort(ref_tp), atol=1e-9)
    assert metrics.hd95(pred, target, spacing) == pytest.approx(ref_hd, abs=1e-9)
    assert metrics.assd(pred, target, spacing) == pytest.approx(ref_sd, abs=1e-9)


def test_masks_touching_the_frame_and_tiny_crop():
  # The bounding-box crop must not change anything when masks touch the image frame.
  pred = np.zeros((30, 30), bool)
  target = np.zeros((30, 30), bool)
  pred[0:12, 0:30] = True
  target[0:15, 3:30] = True
  ref = brute_hd95_assd(pred, target)
  for method in ('edt', 'kdtree'):
    d = np.concatenate(metrics.surface_distances(pred, target, method=method))
    assert np.percentile(d, 95) == pytest.approx(ref[0], abs=1e-12)
    assert d.mean() == pytest.approx(ref[1], abs=1e-12)


@pytest.mark.parametrize('size', [256, 512])
def test_equals_medpy(size):
  medpy_binary = pytest.importorskip('medpy.metric.binary')
  rng = np.random.default_rng(size)
  cases = [(square_blob(rng, size), square_blob(rng, size)) for _ in range(2)]
  # Rough (noise-like) borders exercise the EDT path of method='auto'.
  cases.append((square_blob(rng, size, sigma=2, frac=0.6),
                square_blob(rng, size, sigma=2, frac=0.6)))
  a = square_blob(rng, size)
  cases.append((a, np.roll(a, 3, axis=0)))  # near-identical pair
  for pred, target in cases:
    for spacing in (None, (0.8, 1.25)):
      want_hd = medpy_binary.hd95(pred, target, voxelspacing=spacing)
      want_sd = medpy_binary.assd(pred, target, voxelspacing=spacing)
      for method in ('auto', 'edt', 'kdtree'):
        d = np.concatenate(metrics.surface_distances(pred, target, spacing, method=method))
        assert abs(np.percentile(d, 95) - want_hd) < 1e-6
        assert abs(d.mean() - want_sd) < 1e-6
      got = metrics.image_metrics(pred, target, spacing=spacing)
      assert abs(got['hd95'] - want_hd) < 1e-6
      assert abs(got['assd'] - want_sd) < 1e-6


def test_equals_medpy_3d_with_spacing():
  medpy_binary = pytest.importorskip('medpy.metric.binary')
  rng = np.random.default_rng(7)
  for _ in range(2):
    fields = [ndimage.gaussian_filter(rng.normal(size=(12, 40, 40)), 3) for _ in range(2)]
    pred, target = (f > np.quantile(f, 0.8) for f in fields)
    spacing = (2.5, 0.7, 0.7)
    assert abs(metrics.hd95(pred, target, spacing)
               - medpy_binary.hd95(pred, target, voxelspacing=spacing)) < 1e-6
    assert abs(metrics.assd(pred, target, spacing)
               - medpy_binary.assd(pred, target, voxelspacing=spacing)) < 1e-6


# ----------------------------------------------------------------------------- surface Dice (NSD)


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


@pytest.mark.parametrize('seed', [0, 1])
@pytest.mark.parametrize('tol', [0.0, 1.0, 2.0, 3.5])
def test_nsd_equals_monai_and_brute_force(seed, tol):
  for pred, target in mask_pairs(seed):
    got = metrics.surface_dice(pred, target, tol)
    assert got == pytest.approx(brute_nsd(pred, target, tol), abs=1e-6)
    assert got == pytest.approx(_monai_nsd(pred, target, tol), abs=1e-6)
    assert metrics.image_metrics(pred, target, nsd_tolerance=tol)['nsd'] == pytest.approx(
        got, abs=1e-12)


def test_nsd_with_spacing_equals_monai():
  for pred, target in mask_pairs(5)[:4]:
    got = metrics.surface_dice(pred, target, 2.0, spacing=(0.8, 1.25))
    assert got == pytest.approx(brute_nsd(pred, target, 2.0, (0.8, 1.25)), abs=1e-6)
    assert got == pytest.approx(_monai_nsd(pred, target, 2.0, spacing=(0.8, 1.25)), abs=1e-6)


def test_nsd_hand_computed():
  a = np.zeros((20, 20), bool)
  a[5:15, 5:15] = True
  b = np.roll(a, 3, axis=1)  # every border pixel of either mask is 0 or 3 px from the other
  assert metrics.surface_dice(a, a, 0.0) == 1.0
  assert metrics.surface_dice(a, b, 3.0) == 1.0
  # Within 2 px: the shared top/bottom rows (7 of 10 pixels on each side overlap).
  assert metrics.surface_dice(a, b, 2.0) == pytest.approx(brute_nsd(a, b, 2.0))
  assert metrics.surface_dice(a, b, 2.0) < 1.0
