"""Tests of sgdc_jax.metrics.per_image: the per-image set by hand, empty-mask conventions,
multi-class one-vs-rest scores and `summarize`."""
import math

import numpy as np
import pytest

from mask_examples import brute_hd95_assd, mask_pairs, vessel_tree
from sgdc_jax import metrics

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
  ref_hd, ref_sd = brute_hd95_assd(pred, target)
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


# ----------------------------------------------------------------------------- region of interest


def _fov(h, w):
  """A disc-shaped field of view (as in fundus photographs) that cuts the masks' corners."""
  yy, xx = np.mgrid[:h, :w]
  return np.hypot(yy - h / 2, xx - w / 2) < 0.45 * min(h, w)


def test_roi_over_the_whole_image_changes_nothing():
  pred, target = mask_pairs(4)[0]
  full = metrics.image_metrics(pred, target, roi=np.ones(pred.shape, bool))
  plain = metrics.image_metrics(pred, target)
  assert plain['region'] == 'image' and full['region'] == 'roi'
  for k in metrics.METRIC_NAMES:
    assert full[k] == plain[k], k


def test_roi_counts_only_its_pixels():
  rng = np.random.default_rng(5)
  pred, target = mask_pairs(5)[2]
  roi = _fov(*pred.shape)
  m = metrics.image_metrics(pred, target, roi=roi)
  # Confusion counts inside the ROI, by hand.
  p, t = pred[roi], target[roi]
  tp, fp, fn, tn = (np.sum(p & t), np.sum(p & ~t), np.sum(~p & t), np.sum(~p & ~t))
  assert m['dice'] == pytest.approx(2 * tp / (2 * tp + fp + fn))
  assert m['iou'] == pytest.approx(tp / (tp + fp + fn))
  assert m['accuracy'] == pytest.approx((tp + tn) / roi.sum())
  assert m['specificity'] == pytest.approx(tn / (tn + fp))
  assert m['sensitivity'] == pytest.approx(tp / (tp + fn))
  assert m['precision'] == pytest.approx(tp / (tp + fp))
  # Shape metrics compare the masks cut to the ROI.
  cut = metrics.image_metrics(pred & roi, target & roi)
  for k in ('hd95', 'assd', 'nsd', 'boundary_iou', 'cldice', 'dice', 'iou'):
    assert m[k] == pytest.approx(cut[k]), k
  ref_hd, ref_sd = brute_hd95_assd(pred & roi, target & roi)
  assert m['hd95'] == pytest.approx(ref_hd) and m['assd'] == pytest.approx(ref_sd)
  # ... but true negatives outside the ROI no longer count.
  assert m['accuracy'] < cut['accuracy'] and m['specificity'] < cut['specificity']
  # Whatever happens outside the ROI is invisible.
  noise = rng.random(pred.shape) < 0.5
  moved = metrics.image_metrics(np.where(roi, pred, noise), np.where(roi, target, ~noise),
                                roi=roi)
  for k in metrics.METRIC_NAMES:
    assert moved[k] == pytest.approx(m[k]), k


def test_roi_hides_disagreement_outside_and_judges_empty_masks_inside():
  target = vessel_tree(np.random.default_rng(6), 60, 80)
  roi = _fov(60, 80)
  pred = target & roi
  m = metrics.image_metrics(pred, target, roi=roi)
  for k in ('dice', 'iou', 'accuracy', 'sensitivity', 'specificity', 'precision', 'nsd',
            'boundary_iou', 'cldice'):
    assert m[k] == 1.0, k
  assert m['hd95'] == 0.0 and m['empty'] == {}
  assert metrics.image_metrics(pred, target)['dice'] < 1.0
  # A target lying wholly outside the ROI is empty inside it.
  z = np.zeros((60, 80), bool)
  corner = z.copy()
  corner[:4, :4] = True
  assert not np.any(corner & roi)
  both = metrics.image_metrics(z, corner, roi=roi)
  assert both['empty'] == {1: 'both'} and both['dice'] == 1.0 and both['hd95'] == 0.0


def test_roi_multiclass():
  rng = np.random.default_rng(8)
  target = rng.integers(0, 3, size=(30, 40))
  pred = np.where(rng.random((30, 40)) < 0.2, rng.integers(0, 3, size=(30, 40)), target)
  roi = _fov(30, 40)
  m = metrics.image_metrics(pred, target, num_classes=3, roi=roi)
  assert m['pixel_accuracy'] == pytest.approx(np.mean(pred[roi] == target[roi]))
  for c in (1, 2):
    b = metrics.image_metrics(pred == c, target == c, roi=roi)
    for k in metrics.METRIC_NAMES:
      assert m[f'{k}/{c}'] == pytest.approx(b[k]), (k, c)


def test_summarize_records_the_region():
  pred, target = mask_pairs(6)[0]
  roi = _fov(*pred.shape)
  with_roi = metrics.image_metrics(pred, target, roi=roi)
  without = metrics.image_metrics(pred, target)
  s = metrics.summarize([with_roi, with_roi])
  assert s['region'] == 'roi' and s['n_roi'] == 2
  assert s['mean']['dice'] == pytest.approx(with_roi['dice'])
  assert 'region' not in s['mean']
  assert metrics.summarize([without])['region'] == 'image'
  mixed = metrics.summarize([with_roi, without])
  assert mixed['region'] == 'mixed' and mixed['n_roi'] == 1


def test_bad_roi_is_rejected():
  a = np.zeros((6, 8), bool)
  a[2:4, 2:5] = True
  with pytest.raises(ValueError, match='roi shape'):
    metrics.image_metrics(a, a, roi=np.ones((8, 6), bool))
  with pytest.raises(ValueError, match='no pixel'):
    metrics.image_metrics(a, a, roi=np.zeros((6, 8), bool))
  with pytest.raises(ValueError, match='roi is a float array'):
    metrics.image_metrics(a, a, roi=np.full((6, 8), 0.5))
  assert metrics.image_metrics(a, a, roi=np.ones((6, 8), np.float32))['region'] == 'roi'
