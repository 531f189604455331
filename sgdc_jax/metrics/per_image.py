"""The per-image metric set (`image_metrics`) and its average over images (`summarize`).

Dice, IoU (Jaccard), HD95, ASSD, normalised surface Dice (NSD), Boundary IoU, centreline
Dice (clDice), accuracy, sensitivity (recall), specificity, precision, computed per image with
NumPy and scipy, binary or one-vs-rest per class, under documented empty-mask conventions
(`empty_policy`), over the whole image or inside a region of interest (`roi`).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

from sgdc_jax.metrics.boundary_scores import DEFAULT_BOUNDARY_IOU_RATIO, band_iou
from sgdc_jax.metrics.inputs import (check_not_probabilities, check_policy, check_ratio,
                                     check_tolerance, normalize_spacing)
from sgdc_jax.metrics.surface import DEFAULT_NSD_TOLERANCE, HD95_CONVENTION, distance_triple
from sgdc_jax.metrics.topology import centreline_scores

METRIC_NAMES = ('dice', 'iou', 'hd95', 'assd', 'nsd', 'boundary_iou', 'cldice', 'accuracy',
                'sensitivity', 'specificity', 'precision')
# Per-image keys that are not metrics (`summarize` does not average them).
_INFO_KEYS = ('empty', 'excluded', 'region')
# Metrics that follow `empty_policy` when exactly one mask is empty (worst value or NaN).
_EMPTY_POLICY_METRICS = ('hd95', 'assd', 'nsd', 'boundary_iou')
# Metrics that may be NaN in a binary result (clDice: 2-D maps only).
_MAYBE_NAN = (*_EMPTY_POLICY_METRICS, 'cldice')


def _ratio(num: int, den: int, identical: bool) -> float:
  """num/den; 0/0 is 1.0 when the two masks are identical, else 0.0."""
  if den == 0:
    return 1.0 if identical else 0.0
  return num / den


def _binary_metrics(pred: np.ndarray, target: np.ndarray, roi: np.ndarray | None, spacing,
                    empty_policy: str, nsd_tolerance: float, boundary_ratio: float):
  """The binary metric set; with `roi`, `pred` and `target` are already cut to it (False
  outside) and the pixel counts of accuracy and specificity cover only its pixels."""
  n = pred.size if roi is None else int(np.count_nonzero(roi))
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
      'cldice': centreline_scores(pred, target)['cldice'] if pred.ndim == 2 else math.nan,
      'accuracy': (tp + tn) / n,
      'sensitivity': _ratio(tp, tp + fn, identical),
      'specificity': _ratio(tn, tn + fp, identical),
      'precision': _ratio(tp, tp + fp, identical),
  }
  return out, kind


def image_metrics(pred, target, num_classes: int = 1, spacing=None,
                  empty_policy: str = 'diagonal', *,
                  nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
                  boundary_iou_ratio: float = DEFAULT_BOUNDARY_IOU_RATIO,
                  roi=None) -> dict[str, Any]:
  """The full per-image metric set of one predicted label map against its ground truth.

  Binary (`num_classes == 1`): nonzero is foreground in both maps (float maps must hold only
  0 and 1: probabilities are rejected, threshold them first). Multi-class
  (`num_classes >= 2`): labels in `[0, num_classes)`, 0 is background; each class c in
  `1..num_classes-1` is scored one-vs-rest, under keys `'<metric>/<c>'`, and `'<metric>'` holds
  the mean over those classes (NaNs excluded by policy are left out of that mean; if all are,
  the mean is NaN and excluded too). Multi-class adds `'pixel_accuracy'` (fraction of pixels
  with the right label).

  Region of interest (`roi`, e.g. a fundus photograph's field-of-view mask): pixels outside it
  are neither prediction nor target, and are not counted at all. The confusion counts (Dice,
  IoU, accuracy, sensitivity, specificity, precision, pixel_accuracy) count ROI pixels only, so
  true negatives outside the ROI do not inflate accuracy and specificity; the shape metrics
  (HD95, ASSD, NSD, Boundary IoU, clDice) compare `pred & roi` with `target & roi`, so a
  border cut by the ROI's edge is cut the same way in both. Empty cases are judged inside the
  ROI. Image-size quantities stay those of the whole image: the diagonal that stands in for
  HD95/ASSD when one mask is empty and Boundary IoU's band width. `'region'` says which
  (`'roi'` or `'image'`).

  Conventions (all documented, none silent):
    * Ratios with a zero denominator are 1.0 if the two masks are identical, else 0.0. So both
      masks empty -> dice = iou = precision = sensitivity = 1; precision with no predicted
      positives is 1.0 if the target is empty too and 0.0 if it is not (the object was missed);
      sensitivity with an empty target and a non-empty prediction is 0.0.
    * Both empty: hd95 = assd = 0, nsd = boundary_iou = cldice = 1.
    * Exactly one empty: dice = iou = cldice = 0 (any policy: like Dice, clDice has a value
      there, see `topology.centreline_scores`) and hd95 = assd = the image diagonal, nsd =
      boundary_iou = 0 (`empty_policy='diagonal'`: each distance metric's worst value) or
      those four NaN with the keys listed in `'excluded'` (`empty_policy='exclude'`), which
      `summarize` leaves out of its means and counts.
    * Every empty case is recorded in `'empty'`: `{class: kind}` with kind `'both'`, `'pred'`
      (prediction empty, target not) or `'target'` (target empty, prediction not); the
      binary foreground is class 1.
    * clDice (Shit et al., 2021; `topology`) is defined for 2-D maps; for other shapes it is
      NaN and listed in `'excluded'`. It is on the pixel grid (no spacing).

  Args:
    pred: predicted label map `(H, W)` (any ndim >= 1 works), integer or bool.
    target: ground-truth label map of the same shape.
    num_classes: 1 for binary, else the number of classes including background.
    spacing: None (pixels), one positive float, or one per axis; HD95/ASSD are in its units.
    empty_policy: 'diagonal' or 'exclude' (see above).
    nsd_tolerance: NSD tolerance in `spacing` units (see `surface_dice`).
    boundary_iou_ratio: Boundary IoU band width / image diagonal (see `boundary_iou`).
    roi: None (the whole image) or a region of interest of the maps' shape, bool or 0/1
      (nonzero is inside); see above.

  Returns:
    dict with float metrics, `'empty'` (dict int -> str), `'excluded'` (tuple of keys) and
    `'region'` (`'roi'` or `'image'`).

  Raises:
    ValueError: shapes differ, bad num_classes / policy / spacing, labels out of range, a
      probability-like or empty `roi`.
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
  region = _check_roi(roi, pred.shape)
  out: dict[str, Any] = {}
  empty: dict[int, str] = {}
  excluded: list[str] = []
  if num_classes == 1:
    check_not_probabilities(pred, 'pred', 'image_metrics')
    check_not_probabilities(target, 'target', 'image_metrics')
    values, kind = _binary_metrics(*_cut(pred.astype(bool), target.astype(bool), region),
                                   region, spacing, empty_policy, *options)
    out.update(values)
    if kind is not None:
      empty[1] = kind
    excluded = [k for k in _MAYBE_NAN if math.isnan(out[k])]
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
      values, kind = _binary_metrics(*_cut(pred == c, target == c, region), region, spacing,
                                     empty_policy, *options)
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
    same = pred == target
    out['pixel_accuracy'] = float(np.count_nonzero(same) / same.size if region is None
                                  else np.count_nonzero(same & region) / np.count_nonzero(region))
  out['empty'] = empty
  out['excluded'] = tuple(excluded)
  out['region'] = 'image' if region is None else 'roi'
  return out


def _check_roi(roi, shape: tuple[int, ...]) -> np.ndarray | None:
  """None, or `roi` as a bool array of `shape` with at least one pixel inside."""
  if roi is None:
    return None
  roi = np.atleast_1d(np.asarray(roi))
  check_not_probabilities(roi, 'roi', 'image_metrics')
  if roi.shape != shape:
    raise ValueError(f'metrics.image_metrics: roi shape {roi.shape} differs from the maps\' '
                     f'{shape}')
  roi = roi.astype(bool)
  if not roi.any():
    raise ValueError('metrics.image_metrics: roi selects no pixel')
  return roi


def _cut(pred: np.ndarray, target: np.ndarray, roi: np.ndarray | None):
  """(pred, target) with everything outside `roi` set to background."""
  if roi is None:
    return pred, target
  return pred & roi, target & roi


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
      'hd95_convention': 'medpy', 'region': 'image' | 'roi' | 'mixed', 'n_roi': int}`; a key
    whose values are all excluded has mean/std NaN. `'region'` says whether the images were
    scored inside a region of interest (`image_metrics`'s `roi`): all, none or some of them
    (`n_roi` counts those that were; dicts without `'region'` count as `'image'`).

  Raises:
    ValueError: no images, differing keys, or a NaN not flagged as excluded.
  """
  items = list(per_image)
  if not items:
    raise ValueError('metrics.summarize: no per-image results to summarize')
  keys = sorted(k for k in items[0] if k not in _INFO_KEYS)
  empty_counts = {'both': 0, 'pred': 0, 'target': 0}
  per_class: dict[int, dict[str, int]] = {}
  for i, item in enumerate(items):
    item_keys = sorted(k for k in item if k not in _INFO_KEYS)
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
  n_roi = sum(item.get('region', 'image') == 'roi' for item in items)
  region = 'image' if n_roi == 0 else 'roi' if n_roi == len(items) else 'mixed'
  return {'mean': mean, 'std': std, 'n': count, 'excluded': excluded, 'n_images': len(items),
          'empty': empty_counts_out, 'hd95_convention': HD95_CONVENTION, 'region': region,
          'n_roi': int(n_roi)}
