"""The per-image metric set (`image_metrics`) and its average over images (`summarize`).

Dice, IoU (Jaccard), HD95, ASSD, normalised surface Dice (NSD), Boundary IoU, accuracy,
sensitivity (recall), specificity, precision, computed per image with NumPy and scipy, binary
or one-vs-rest per class, under documented empty-mask conventions (`empty_policy`).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

from sgdc_jax.metrics.boundary_scores import DEFAULT_BOUNDARY_IOU_RATIO, band_iou
from sgdc_jax.metrics.inputs import (check_not_probabilities, check_policy, check_ratio,
                                     check_tolerance, normalize_spacing)
from sgdc_jax.metrics.surface import DEFAULT_NSD_TOLERANCE, HD95_CONVENTION, distance_triple

METRIC_NAMES = ('dice', 'iou', 'hd95', 'assd', 'nsd', 'boundary_iou', 'accuracy',
                'sensitivity', 'specificity', 'precision')
# Metrics that follow `empty_policy` when exactly one mask is empty (worst value or NaN).
_EMPTY_POLICY_METRICS = ('hd95', 'assd', 'nsd', 'boundary_iou')


def _ratio(num: int, den: int, identical: bool) -> float:
  """num/den; 0/0 is 1.0 when the two masks are identical, else 0.0."""
  if den == 0:
    return 1.0 if identical else 0.0
  return num / den


def _binary_metrics(pred: np.ndarray, target: np.ndarray, spacing, empty_policy: str,
                    nsd_tolerance: float, boundary_ratio: float):
  n = pred.size
  tp = int(np.count_nonzero(pred & target))
  p = int(np.count_nonzero(pred))
  t = int(np.count_nonzero(target))
  fp, fn = p - tp, t - tp
  tn = n - tp - fp - fn
  identical = fp == 0 and fn == 0
  hd, sd, nsd, kind = distance_triple(pred, target, spacing, empty_policy, nsd_tolerance)
  out = {
      'dice': _ratio(2 * tp, 2 * tp + fp + fn, identical),
      'iou': _ratio(tp, tp + fp + fn, identical),
      'hd95': hd,
      'assd': sd,
      'nsd': nsd,
      'boundary_iou': band_iou(pred, target, boundary_ratio, empty_policy),
      'accuracy': (tp + tn) / n,
      'sensitivity': _ratio(tp, tp + fn, identical),
      'specificity': _ratio(tn, tn + fp, identical),
      'precision': _ratio(tp, tp + fp, identical),
  }
  return out, kind


def image_metrics(pred, target, num_classes: int = 1, spacing=None,
                  empty_policy: str = 'diagonal', *,
                  nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
                  boundary_iou_ratio: float = DEFAULT_BOUNDARY_IOU_RATIO) -> dict[str, Any]:
  """The full per-image metric set of one predicted label map against its ground truth.

  Binary (`num_classes == 1`): nonzero is foreground in both maps (float maps must hold only
  0 and 1: probabilities are rejected, threshold them first). Multi-class
  (`num_classes >= 2`): labels in `[0, num_classes)`, 0 is background; each class c in
  `1..num_classes-1` is scored one-vs-rest, under keys `'<metric>/<c>'`, and `'<metric>'` holds
  the mean over those classes (NaNs excluded by policy are left out of that mean; if all are,
  the mean is NaN and excluded too). Multi-class adds `'pixel_accuracy'` (fraction of pixels
  with the right label).

  Conventions (all documented, none silent):
    * Ratios with a zero denominator are 1.0 if the two masks are identical, else 0.0. So both
      masks empty -> dice = iou = precision = sensitivity = 1; precision with no predicted
      positives is 1.0 if the target is empty too and 0.0 if it is not (the object was missed);
      sensitivity with an empty target and a non-empty prediction is 0.0.
    * Both empty: hd95 = assd = 0, nsd = boundary_iou = 1.
    * Exactly one empty: dice = iou = 0 and hd95 = assd = the image diagonal, nsd =
      boundary_iou = 0 (`empty_policy='diagonal'`: each distance metric's worst value) or
      those four NaN with the keys listed in `'excluded'` (`empty_policy='exclude'`), which
      `summarize` leaves out of its means and counts.
    * Every empty case is recorded in `'empty'`: `{class: kind}` with kind `'both'`, `'pred'`
      (prediction empty, target not) or `'target'` (target empty, prediction not); the
      binary foreground is class 1.

  Args:
    pred: predicted label map `(H, W)` (any ndim >= 1 works), integer or bool.
    target: ground-truth label map of the same shape.
    num_classes: 1 for binary, else the number of classes including background.
    spacing: None (pixels), one positive float, or one per axis; HD95/ASSD are in its units.
    empty_policy: 'diagonal' or 'exclude' (see above).
    nsd_tolerance: NSD tolerance in `spacing` units (see `surface_dice`).
    boundary_iou_ratio: Boundary IoU band width / image diagonal (see `boundary_iou`).

  Returns:
    dict with float metrics, `'empty'` (dict int -> str) and `'excluded'` (tuple of keys).

  Raises:
    ValueError: shapes differ, bad num_classes / policy / spacing, labels out of range.
  """
  check_policy(empty_policy, 'image_metrics')
  pred = np.atleast_1d(np.asarray(pred))
  target = np.atleast_1d(np.asarray(target))
  if pred.shape != target.shape:
    raise ValueError(f'metrics.image_metrics: pred and target shapes differ: {pred.shape} vs '
                     f'{target.shape}')
  if int(num_classes) != num_classes or num_classes < 1:
    raise ValueError(f'metrics.image_metrics: num_classes must be a positive integer, got '
                     f'{num_classes!r}')
  normalize_spacing(spacing, pred.ndim, 'image_metrics')
  options = (check_tolerance(nsd_tolerance, 'image_metrics'),
             check_ratio(boundary_iou_ratio, 'image_metrics'))
  out: dict[str, Any] = {}
  empty: dict[int, str] = {}
  excluded: list[str] = []
  if num_classes == 1:
    check_not_probabilities(pred, 'pred', 'image_metrics')
    check_not_probabilities(target, 'target', 'image_metrics')
    values, kind = _binary_metrics(pred.astype(bool), target.astype(bool), spacing,
                                   empty_policy, *options)
    out.update(values)
    if kind is not None:
      empty[1] = kind
    excluded = [k for k in _EMPTY_POLICY_METRICS if math.isnan(out[k])]
  else:
    for name, arr in (('pred', pred), ('target', target)):
      if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f'metrics.image_metrics: {name} must hold integer labels for '
                         f'num_classes={num_classes}, got dtype {arr.dtype}')
      if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f'metrics.image_metrics: {name} labels must lie in [0, {num_classes}), '
                         f'got [{arr.min()}, {arr.max()}]')
    per_class = {m: [] for m in METRIC_NAMES}
    for c in range(1, num_classes):
      values, kind = _binary_metrics(pred == c, target == c, spacing, empty_policy, *options)
      if kind is not None:
        empty[c] = kind
      for m in METRIC_NAMES:
        out[f'{m}/{c}'] = values[m]
        per_class[m].append(values[m])
        if math.isnan(values[m]):
          excluded.append(f'{m}/{c}')
    for m in METRIC_NAMES:
      vals = [v for v in per_class[m] if not math.isnan(v)]
      out[m] = float(np.mean(vals)) if vals else math.nan
      if not vals:
        excluded.append(m)
    out['pixel_accuracy'] = float(np.count_nonzero(pred == target) / pred.size)
  out['empty'] = empty
  out['excluded'] = tuple(excluded)
  return out


def summarize(per_image: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
  """Averages `image_metrics` dicts over images.

  NaN values are averaged over only if the image lists that key in `'excluded'`; they are then
  left out (`n` gives the number of values behind each mean, `excluded` the number left out).
  Any other NaN raises.

  Args:
    per_image: dicts from `image_metrics` (all with the same metric keys).

  Returns:
    `{'mean': {key: float}, 'std': {key: float} (population std), 'n': {key: int},
      'excluded': {key: int}, 'n_images': int,
      'empty': {'both': int, 'pred': int, 'target': int, 'per_class': {c: {kind: int}}},
      'hd95_convention': 'medpy'}`; a key whose values are all excluded has mean/std NaN.

  Raises:
    ValueError: no images, differing keys, or a NaN not flagged as excluded.
  """
  items = list(per_image)
  if not items:
    raise ValueError('metrics.summarize: no per-image results to summarize')
  keys = sorted(k for k in items[0] if k not in ('empty', 'excluded'))
  empty_counts = {'both': 0, 'pred': 0, 'target': 0}
  per_class: dict[int, dict[str, int]] = {}
  for i, item in enumerate(items):
    item_keys = sorted(k for k in item if k not in ('empty', 'excluded'))
    if item_keys != keys:
      raise ValueError(f'metrics.summarize: image {i} has keys {item_keys}, expected {keys}')
    for c, kind in dict(item.get('empty', {})).items():
      if kind not in empty_counts:
        raise ValueError(f'metrics.summarize: image {i} has unknown empty kind {kind!r}')
      empty_counts[kind] += 1
      per_class.setdefault(int(c), {'both': 0, 'pred': 0, 'target': 0})[kind] += 1
  mean, std, count, excluded = {}, {}, {}, {}
  for key in keys:
    vals = np.array([float(item[key]) for item in items], np.float64)
    nan = np.isnan(vals)
    for i in np.flatnonzero(nan):
      if key not in tuple(items[i].get('excluded', ())):
        raise ValueError(f'metrics.summarize: image {i} has NaN {key!r} that is not flagged '
                         'as excluded')
    kept = vals[~nan]
    mean[key] = float(kept.mean()) if kept.size else math.nan
    std[key] = float(kept.std()) if kept.size else math.nan
    count[key] = int(kept.size)
    excluded[key] = int(nan.sum())
  empty_counts_out: dict[str, Any] = dict(empty_counts)
  empty_counts_out['per_class'] = dict(sorted(per_class.items()))
  return {'mean': mean, 'std': std, 'n': count, 'excluded': excluded, 'n_images': len(items),
          'empty': empty_counts_out, 'hd95_convention': HD95_CONVENTION}
