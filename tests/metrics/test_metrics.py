"""Tests for sgdc_jax.metrics: hand-computed cases, a brute-force reference, MedPy, empty masks."""
import math

import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from sgdc_jax import metrics


def _blob(rng, n, sigma=None, frac=None):
  """Random smooth blob(s): thresholded Gaussian-filtered noise."""
  field = ndimage.gaussian_filter(rng.normal(size=(n, n)), sigma or n / 16)
  return field > np.quantile(field, frac if frac is not None else rng.uniform(0.5, 0.95))


def _brute_border(mask):
  """Foreground pixels with a 4-neighbour that is background or outside the image."""
  padded = np.pad(mask, 1, constant_values=False)
  inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
  return mask & ~inner


def _brute_distances(pred, target, spacing=(1.0, 1.0)):
  """Both directed border-to-border distance sets by all-pairs distances (independent of EDT)."""
  s = np.asarray(spacing, np.float64)
  p = np.argwhere(_brute_border(pred)) * s
  t = np.argwhere(_brute_border(target)) * s
  d = cdist(p, t)
  return d.min(axis=1), d.min(axis=0)


def _brute_hd95_assd(pred, target, spacing=(1.0, 1.0)):
  d = np.concatenate(_brute_distances(pred, target, spacing))
  return float(np.percentile(d, 95)), float(d.mean())


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
    pred = _blob(rng, 40, sigma=3)
    target = _blob(rng, 40, sigma=3)
    ref_hd, ref_sd = _brute_hd95_assd(pred, target, sp)
    d_pt, d_tp = metrics.surface_distances(pred, target, spacing, method=method)
    ref_pt, ref_tp = _brute_distances(pred, target, sp)
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
  ref = _brute_hd95_assd(pred, target)
  for method in ('edt', 'kdtree'):
    d = np.concatenate(metrics.surface_distances(pred, target, method=method))
    assert np.percentile(d, 95) == pytest.approx(ref[0], abs=1e-12)
    assert d.mean() == pytest.approx(ref[1], abs=1e-12)


@pytest.mark.parametrize('size', [256, 512])
def test_equals_medpy(size):
  medpy_binary = pytest.importorskip('medpy.metric.binary')
  rng = np.random.default_rng(size)
  cases = [(_blob(rng, size), _blob(rng, size)) for _ in range(2)]
  # Rough (noise-like) borders exercise the EDT path of method='auto'.
  cases.append((_blob(rng, size, sigma=2, frac=0.6), _blob(rng, size, sigma=2, frac=0.6)))
  a = _blob(rng, size)
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


def test_confusion_metrics_hand_computed():
  pred = np.zeros((4, 5), bool)
  target = np.zeros((4, 5), bool)
  pred[0, 0:4] = True       # 4 predicted
  target[0, 2:5] = True     # 3 true; TP = 2, FP = 2, FN = 1, TN = 15
  target[1, 0] = True       # 4 true; FN = 2, TN = 14
  m = metrics.image_metrics(pred, target)
  assert m['dice'] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
  assert m['iou'] == pytest.approx(2 / 6)
  assert m['accuracy'] == pytest.approx(16 / 20)
  assert m['sensitivity'] == pytest.approx(2 / 4)
  assert m['specificity'] == pytest.approx(14 / 16)
  assert m['precision'] == pytest.approx(2 / 4)
  assert m['empty'] == {} and m['excluded'] == ()
  ref_hd, ref_sd = _brute_hd95_assd(pred, target)
  assert m['hd95'] == pytest.approx(ref_hd) and m['assd'] == pytest.approx(ref_sd)


# ----------------------------------------------------------------------------- empty masks


def test_both_empty():
  z = np.zeros((8, 12), bool)
  m = metrics.image_metrics(z, z)
  for k in ('dice', 'iou', 'accuracy', 'sensitivity', 'specificity', 'precision'):
    assert m[k] == 1.0, k
  assert m['hd95'] == 0.0 and m['assd'] == 0.0
  assert m['empty'] == {1: 'both'}
  assert metrics.hd95(z, z) == 0.0


@pytest.mark.parametrize('which', ['pred', 'target'])
def test_one_empty_diagonal_and_exclude(which):
  full = np.zeros((30, 40), bool)
  full[5:10, 5:10] = True
  z = np.zeros_like(full)
  pred, target = (z, full) if which == 'pred' else (full, z)
  m = metrics.image_metrics(pred, target)
  assert m['dice'] == 0.0 and m['iou'] == 0.0
  assert m['hd95'] == pytest.approx(50.0) and m['assd'] == pytest.approx(50.0)  # 30-40-50
  assert m['empty'] == {1: which} and m['excluded'] == ()
  # Precision with no predicted positives is 0 when the target is not empty.
  if which == 'pred':
    assert m['precision'] == 0.0 and m['sensitivity'] == 0.0
  else:
    assert m['precision'] == 0.0 and m['sensitivity'] == 0.0 and m['specificity'] < 1.0
  assert metrics.image_metrics(pred, target, spacing=(2.0, 1.0))['hd95'] == pytest.approx(
      math.hypot(60.0, 40.0))
  ex = metrics.image_metrics(pred, target, empty_policy='exclude')
  assert math.isnan(ex['hd95']) and math.isnan(ex['assd'])
  assert set(ex['excluded']) == {'hd95', 'assd', 'nsd', 'boundary_iou'}
  assert math.isnan(metrics.hd95(pred, target, empty_policy='exclude'))


def test_precision_with_no_predicted_positives_and_empty_target_is_one():
  z = np.zeros((6, 6), np.uint8)
  assert metrics.image_metrics(z, z)['precision'] == 1.0


def test_summarize_counts_empty_and_excludes_only_flagged_nans():
  sq = np.zeros((20, 20), bool)
  sq[4:12, 4:12] = True
  z = np.zeros_like(sq)
  items = [
      metrics.image_metrics(sq, np.roll(sq, 2, axis=0), empty_policy='exclude'),
      metrics.image_metrics(z, z, empty_policy='exclude'),
      metrics.image_metrics(z, sq, empty_policy='exclude'),
      metrics.image_metrics(sq, z, empty_policy='exclude'),
  ]
  s = metrics.summarize(items)
  assert s['n_images'] == 4 and s['hd95_convention'] == 'medpy'
  assert s['empty']['both'] == 1 and s['empty']['pred'] == 1 and s['empty']['target'] == 1
  assert s['empty']['per_class'] == {1: {'both': 1, 'pred': 1, 'target': 1}}
  assert s['excluded']['hd95'] == 2 and s['n']['hd95'] == 2 and s['n']['dice'] == 4
  assert s['mean']['hd95'] == pytest.approx((items[0]['hd95'] + 0.0) / 2)
  assert s['mean']['dice'] == pytest.approx((items[0]['dice'] + 1 + 0 + 0) / 4)
  assert s['std']['dice'] == pytest.approx(np.std([items[0]['dice'], 1, 0, 0]))
  # diagonal policy: nothing excluded, the diagonal is averaged in.
  s2 = metrics.summarize([metrics.image_metrics(z, sq), metrics.image_metrics(sq, sq)])
  assert s2['excluded']['hd95'] == 0
  assert s2['mean']['hd95'] == pytest.approx(math.hypot(20, 20) / 2)
  # An unflagged NaN is an error, never silently averaged.
  bad = dict(items[0])
  bad['dice'] = float('nan')
  with pytest.raises(ValueError, match='not flagged'):
    metrics.summarize([bad])
  with pytest.raises(ValueError):
    metrics.summarize([])


# ----------------------------------------------------------------------------- multi-class


def test_multiclass_per_class_and_mean():
  rng = np.random.default_rng(3)
  target = rng.integers(0, 4, size=(24, 24))
  pred = target.copy()
  pred[:6] = rng.integers(0, 4, size=(6, 24))
  pred[pred == 3] = 0   # class 3 never predicted -> 'pred' empty
  m = metrics.image_metrics(pred, target, num_classes=4)
  for c in (1, 2, 3):
    b = metrics.image_metrics(pred == c, target == c)
    for k in metrics.METRIC_NAMES:
      assert m[f'{k}/{c}'] == pytest.approx(b[k]), (k, c)
  for k in metrics.METRIC_NAMES:
    assert m[k] == pytest.approx(np.mean([m[f'{k}/{c}'] for c in (1, 2, 3)]))
  assert m['empty'] == {3: 'pred'}
  assert m['pixel_accuracy'] == pytest.approx(np.mean(pred == target))
  ex = metrics.image_metrics(pred, target, num_classes=4, empty_policy='exclude')
  assert set(ex['excluded']) == {'hd95/3', 'assd/3', 'nsd/3', 'boundary_iou/3'}
  assert ex['hd95'] == pytest.approx(np.mean([ex['hd95/1'], ex['hd95/2']]))
  s = metrics.summarize([m, metrics.image_metrics(target, target, num_classes=4)])
  assert s['empty']['per_class'] == {3: {'both': 0, 'pred': 1, 'target': 0}}
  assert s['mean']['dice/1'] == pytest.approx((m['dice/1'] + 1.0) / 2)


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


# ----------------------------------------------------------------------------- on device


@pytest.mark.parametrize('num_classes', [1, 4])
def test_device_dice_iou_matches_numpy(num_classes):
  rng = np.random.default_rng(num_classes)
  b, h, w = 5, 16, 16
  c = 1 if num_classes == 1 else num_classes
  mask = rng.integers(0, max(num_classes, 2), size=(b, h, w)).astype(np.int32)
  logits = rng.normal(size=(b, h, w, c)).astype(np.float32)
  mask[1] = 0                                 # empty target
  logits[1] = -5.0                            # and empty prediction (binary: both empty)
  if num_classes > 1:
    logits[1, ..., 0] = 5.0
  valid = np.array([True, True, True, True, False])
  fn = jax.jit(lambda l, m, v: metrics.device_dice_iou(l, m, num_classes, v))
  counts = jax.tree.map(np.asarray, fn(jnp.asarray(logits), jnp.asarray(mask), valid))
  assert int(counts['n_images']) == 4
  pred = (logits[..., 0] > 0) if num_classes == 1 else np.argmax(logits, -1)
  per_image = [metrics.image_metrics(pred[i], mask[i], num_classes) for i in range(4)]
  summary = metrics.summarize(per_image)
  res = metrics.dice_iou_from_counts(counts)
  assert float(res['dice']) == pytest.approx(summary['mean']['dice'], abs=1e-6)
  assert float(res['iou']) == pytest.approx(summary['mean']['iou'], abs=1e-6)
  # Global (pixel-pooled) scores from the counts.
  classes = [1] if num_classes == 1 else range(1, num_classes)
  g = []
  for j, cl in enumerate(classes):
    pc = (pred[:4] != 0) if num_classes == 1 else pred[:4] == cl
    tc = (mask[:4] != 0) if num_classes == 1 else mask[:4] == cl
    inter = np.sum(pc & tc)
    assert int(counts['intersection'][j]) == inter
    g.append(2 * inter / (pc.sum() + tc.sum()))
  assert float(res['dice_global']) == pytest.approx(np.mean(g), abs=1e-9)
  # Jax inputs give the same answer (float32).
  res_j = metrics.dice_iou_from_counts(fn(jnp.asarray(logits), jnp.asarray(mask), valid))
  assert float(res_j['dice']) == pytest.approx(float(res['dice']), abs=1e-6)
