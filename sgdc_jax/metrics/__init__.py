"""Segmentation metrics: per-image NumPy metrics (Dice ... HD95, ASSD) and on-device Dice/IoU.

Host side (NumPy + scipy.ndimage), computed per image and then averaged with `summarize`:
Dice, IoU (Jaccard), HD95, ASSD, normalised surface Dice (NSD), Boundary IoU, accuracy,
sensitivity (recall), specificity, precision.

Surface distances follow MedPy (`medpy.metric.binary.hd95` / `assd`, MedPy >= 0.5) exactly:

* border of a mask = `mask XOR binary_erosion(mask, generate_binary_structure(ndim, 1))`, with
  the erosion's default `border_value=0`, so foreground on the image frame is border;
* directed distances = `distance_transform_edt(~target_border, sampling=spacing)` read at the
  prediction's border pixels, and the same in the other direction;
* HD95 = `np.percentile(concat(d_pred_to_target, d_target_to_pred), 95)` (NumPy's default linear
  interpolation, as MedPy); ASSD = mean of that same concatenation (MedPy >= 0.5 and MONAI's
  symmetric ASSD agree; MedPy 0.4 averaged the two directed means instead).

NSD at tolerance tau (Nikolov et al., 2021; Metrics Reloaded) uses the same borders and
distances: `(#{d_pred_to_target <= tau} + #{d_target_to_pred <= tau}) / (|border(pred)| +
|border(target)|)`, MONAI's `compute_surface_dice` (border pixels, `use_subvoxels=False`).
DeepMind's `surface-distance` package weighs surface elements by their area instead, which
differs by a few percent on pixel borders. Boundary IoU (Cheng et al., 2021) is the IoU of the
two masks' inner boundary bands, each band the foreground pixels within chessboard distance
`d = max(1, round(ratio * image diagonal))` of the background (the image frame counts as
background), as the authors' `mask_to_boundary` computes with a 3x3 erosion.

MONAI's `compute_hausdorff_distance(percentile=95)` takes instead the max of the two *directed*
95th percentiles. Both agree on near-identical masks; on dissimilar masks MONAI's value can be
larger (by up to ~13 px on the masks we compared). Tables from this module say
`hd95_convention: medpy`.

Device side (jax.numpy, jittable): `device_dice_iou` returns additive counts per batch;
`dice_iou_from_counts` turns accumulated counts into per-image-mean and global Dice/IoU that
agree with `image_metrics` / `summarize` (same empty conventions).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

HD95_CONVENTION = 'medpy'
EMPTY_POLICIES = ('diagonal', 'exclude')
METRIC_NAMES = ('dice', 'iou', 'hd95', 'assd', 'nsd', 'boundary_iou', 'accuracy',
                'sensitivity', 'specificity', 'precision')
# Metrics that follow `empty_policy` when exactly one mask is empty (worst value or NaN).
_EMPTY_POLICY_METRICS = ('hd95', 'assd', 'nsd', 'boundary_iou')
DEFAULT_NSD_TOLERANCE = 2.0        # NSD tolerance, in `spacing` units (pixels by default)
DEFAULT_BOUNDARY_IOU_RATIO = 0.02  # Boundary IoU band width / image diagonal (the paper's)
# Border pixels per crop pixel below which a k-d tree beats the Euclidean distance transform.
_KDTREE_DENSITY = 1.0 / 16.0


# ----------------------------------------------------------------------------- surface distances


def _check_not_probabilities(arr: np.ndarray, what: str, name: str) -> None:
  if np.issubdtype(arr.dtype, np.floating) and np.any((arr != 0) & (arr != 1)):
    raise ValueError(f'metrics.{name}: {what} is a float array with values other than 0 and 1; '
                     'pass a binary/label map (threshold or arg-max probabilities first)')


def _as_bool_pair(pred, target, name: str):
  pred = np.atleast_1d(np.asarray(pred))
  target = np.atleast_1d(np.asarray(target))
  _check_not_probabilities(pred, 'pred', name)
  _check_not_probabilities(target, 'target', name)
  pred, target = pred.astype(bool), target.astype(bool)
  if pred.shape != target.shape:
    raise ValueError(f'metrics.{name}: pred and target shapes differ: {pred.shape} vs '
                     f'{target.shape}')
  return pred, target


def _normalize_spacing(spacing, ndim: int, name: str) -> np.ndarray | None:
  if spacing is None:
    return None
  s = np.asarray(spacing, dtype=np.float64).reshape(-1)
  if s.size == 1:
    s = np.repeat(s, ndim)
  if s.size != ndim or not np.all(np.isfinite(s)) or np.any(s <= 0):
    raise ValueError(f'metrics.{name}: spacing must be one positive number or {ndim} of them, '
                     f'got {spacing!r}')
  return s


def image_diagonal(shape: Sequence[int], spacing=None) -> float:
  """Length of the image's diagonal `sqrt(sum((n_i * spacing_i)^2))`, the HD95/ASSD stand-in
  when exactly one mask is empty (`empty_policy='diagonal'`)."""
  s = _normalize_spacing(spacing, len(shape), 'image_diagonal')
  s = np.ones(len(shape)) if s is None else s
  return float(np.sqrt(np.sum((np.asarray(shape, np.float64) * s) ** 2)))


def _erode_cross(mask: np.ndarray) -> np.ndarray:
  """`binary_erosion(mask, generate_binary_structure(ndim, 1))` with border_value 0, by slicing."""
  out = mask.copy()
  for axis in range(mask.ndim):
    n = mask.shape[axis]
    lo = [slice(None)] * mask.ndim
    hi = [slice(None)] * mask.ndim
    # Neighbour at -1 along `axis`; the first plane has none (outside = 0).
    lo[axis], hi[axis] = slice(1, n), slice(0, n - 1)
    out[tuple(lo)] &= mask[tuple(hi)]
    edge = [slice(None)] * mask.ndim
    edge[axis] = slice(0, 1)
    out[tuple(edge)] = False
    # Neighbour at +1; the last plane has none.
    out[tuple(hi)] &= mask[tuple(lo)]
    edge[axis] = slice(n - 1, n)
    out[tuple(edge)] = False
  return out


def border(mask) -> np.ndarray:
  """MedPy's surface: `mask XOR erosion(mask)` with the 1-connectivity (cross) element.

  Args:
    mask: array of any shape (ndim >= 1); nonzero is foreground.

  Returns:
    Boolean array of the same shape, True on the one-pixel-thick inner border (pixels on the
    image frame count as border, as with scipy's default `border_value=0`).
  """
  mask = np.atleast_1d(np.asarray(mask)).astype(bool)
  return mask ^ _erode_cross(mask)


def _bbox_slices(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
  """Bounding box of the True pixels, grown by `margin` and clipped to the array."""
  slices = []
  for axis in range(mask.ndim):
    other = tuple(a for a in range(mask.ndim) if a != axis)
    idx = np.flatnonzero(mask.any(axis=other) if other else mask)
    slices.append(slice(max(int(idx[0]) - margin, 0),
                        min(int(idx[-1]) + 1 + margin, mask.shape[axis])))
  return tuple(slices)


def surface_distances(pred, target, spacing=None, method: str = 'auto'):
  """Both directed sets of MedPy surface distances between two non-empty masks.

  Only the bounding box of both masks (plus a 1-pixel margin) is processed: every border pixel
  lies in it, and the cross erosion's outside is background either way, so the result equals
  the whole-image computation. Distances come either from one Euclidean distance transform per
  direction on that box (`method='edt'`, MedPy's way) or from a k-d tree over the border pixel
  coordinates scaled by `spacing` (`method='kdtree'`: the same exact Euclidean distances, much
  faster when the borders are short compared to the box). `'auto'` picks the k-d tree when the
  border pixels number less than 1/16 of the box's pixels.

  Args:
    pred, target: same-shape arrays (ndim >= 1); nonzero is foreground; both must be non-empty.
    spacing: None (unit spacing), one positive float, or one per axis (physical units).
    method: 'auto', 'edt' or 'kdtree'.

  Returns:
    `(d_pred_to_target, d_target_to_pred)`: float64 1-D arrays, the distance from each border
    pixel of `pred` to the nearest border pixel of `target`, and vice versa.

  Raises:
    ValueError: shapes differ, bad spacing or method, or either mask is empty.
  """
  pred, target = _as_bool_pair(pred, target, 'surface_distances')
  s = _normalize_spacing(spacing, pred.ndim, 'surface_distances')
  if method not in ('auto', 'edt', 'kdtree'):
    raise ValueError(f"metrics.surface_distances: method must be 'auto', 'edt' or 'kdtree', "
                     f'got {method!r}')
  if not pred.any() or not target.any():
    raise ValueError('metrics.surface_distances: pred and target must both be non-empty; '
                     'use hd95/assd/image_metrics for the empty-mask conventions')
  box = _bbox_slices(pred | target)
  pred_b = border(pred[box])
  target_b = border(target[box])
  if method == 'auto':
    n_border = np.count_nonzero(pred_b) + np.count_nonzero(target_b)
    method = 'kdtree' if n_border < _KDTREE_DENSITY * pred_b.size else 'edt'
  if method == 'edt':
    d_pt = ndimage.distance_transform_edt(~target_b, sampling=s)[pred_b]
    d_tp = ndimage.distance_transform_edt(~pred_b, sampling=s)[target_b]
  else:
    scale = np.ones(pred.ndim) if s is None else s
    p_pts = np.argwhere(pred_b) * scale
    t_pts = np.argwhere(target_b) * scale
    d_pt = cKDTree(t_pts).query(p_pts)[0]
    d_tp = cKDTree(p_pts).query(t_pts)[0]
  return np.asarray(d_pt, np.float64), np.asarray(d_tp, np.float64)


def _distance_triple(pred: np.ndarray, target: np.ndarray, spacing, empty_policy: str,
                     tolerance: float = DEFAULT_NSD_TOLERANCE, method: str = 'auto'
                     ) -> tuple[float, float, float, str | None]:
  """(hd95, assd, nsd at `tolerance`, empty kind) of two boolean masks under an empty-mask
  policy: both empty -> (0, 0, 1); exactly one -> (diagonal, diagonal, 0) or NaNs."""
  _normalize_spacing(spacing, pred.ndim, 'hd95/assd/nsd')
  p_any, t_any = bool(pred.any()), bool(target.any())
  if p_any and t_any:
    d_pt, d_tp = surface_distances(pred, target, spacing, method)
    d = np.concatenate([d_pt, d_tp])
    nsd = np.count_nonzero(d <= tolerance) / d.size
    return float(np.percentile(d, 95)), float(d.mean()), float(nsd), None
  if not p_any and not t_any:
    return 0.0, 0.0, 1.0, 'both'
  kind = 'pred' if not p_any else 'target'
  if empty_policy == 'diagonal':
    diag = image_diagonal(pred.shape, spacing)
    return diag, diag, 0.0, kind
  return math.nan, math.nan, math.nan, kind


def _check_tolerance(tolerance, name: str) -> float:
  if not (isinstance(tolerance, (int, float, np.integer, np.floating))
          and math.isfinite(tolerance) and tolerance >= 0):
    raise ValueError(f'metrics.{name}: tolerance must be a finite number >= 0, got '
                     f'{tolerance!r}')
  return float(tolerance)


def _check_policy(empty_policy: str, name: str) -> None:
  if empty_policy not in EMPTY_POLICIES:
    raise ValueError(f'metrics.{name}: empty_policy must be one of {EMPTY_POLICIES}, got '
                     f'{empty_policy!r}')


def hd95(pred, target, spacing=None, *, empty_policy: str = 'diagonal') -> float:
  """95th percentile Hausdorff distance, MedPy convention (see the module docstring).

  HD95 = `np.percentile(concat(d_pred_to_target, d_target_to_pred), 95)` over MedPy borders.
  MONAI instead takes `max(percentile(d_pred_to_target, 95), percentile(d_target_to_pred, 95))`:
  equal on near-identical masks, up to ~13 px larger on dissimilar ones.

  Args:
    pred, target: same-shape arrays (ndim >= 1; images are `(H, W)`); nonzero is foreground.
    spacing: None (pixels), one positive float, or one per axis (physical units).
    empty_policy: both masks empty -> 0.0; exactly one empty -> the image diagonal
      (`'diagonal'`, see `image_diagonal`) or NaN (`'exclude'`). MedPy raises instead.

  Returns:
    Python float.
  """
  _check_policy(empty_policy, 'hd95')
  pred, target = _as_bool_pair(pred, target, 'hd95')
  return _distance_triple(pred, target, spacing, empty_policy)[0]


def assd(pred, target, spacing=None, *, empty_policy: str = 'diagonal') -> float:
  """Average symmetric surface distance, MedPy >= 0.5 convention (mean of the concatenation).

  Args and empty-mask behaviour as in `hd95`.

  Returns:
    Python float.
  """
  _check_policy(empty_policy, 'assd')
  pred, target = _as_bool_pair(pred, target, 'assd')
  return _distance_triple(pred, target, spacing, empty_policy)[1]


def surface_dice(pred, target, tolerance: float = DEFAULT_NSD_TOLERANCE, spacing=None, *,
                 empty_policy: str = 'diagonal') -> float:
  """Normalised surface Dice: the share of both borders lying within `tolerance` of the other.

  `(#{d_pred_to_target <= tolerance} + #{d_target_to_pred <= tolerance}) / (|border(pred)| +
  |border(target)|)` over MedPy borders (MONAI's `compute_surface_dice` with
  `use_subvoxels=False`).

  Args:
    pred, target: same-shape arrays (ndim >= 1); nonzero is foreground.
    tolerance: in `spacing` units (pixels when `spacing` is None), >= 0.
    spacing: None, one positive float, or one per axis.
    empty_policy: both empty -> 1.0; exactly one empty -> 0.0 (`'diagonal'`, the worst value,
      as HD95 takes the diagonal) or NaN (`'exclude'`).

  Returns:
    Python float in [0, 1].
  """
  _check_policy(empty_policy, 'surface_dice')
  tolerance = _check_tolerance(tolerance, 'surface_dice')
  pred, target = _as_bool_pair(pred, target, 'surface_dice')
  return _distance_triple(pred, target, spacing, empty_policy, tolerance)[2]


def boundary_band(mask, dilation: int) -> np.ndarray:
  """Foreground pixels within chessboard distance `dilation` of the background.

  The same band as `dilation` erosions with a 3x3 square removed from the mask, with the image
  frame as background (Boundary IoU's `mask_to_boundary`), from one chessboard distance
  transform of the mask's bounding box.

  Args:
    mask: (H, W) (any ndim) array; nonzero is foreground.
    dilation: band width in pixels, >= 1.

  Returns:
    Boolean array of the mask's shape.
  """
  mask = np.atleast_1d(np.asarray(mask)).astype(bool)
  band = np.zeros_like(mask)
  if not mask.any():
    return band
  box = _bbox_slices(mask)
  # Pad with background so the frame counts as outside, as the reference's zero border does.
  crop = np.pad(mask[box], 1)
  depth = ndimage.distance_transform_cdt(crop, metric='chessboard')
  inner = tuple(slice(1, -1) for _ in range(mask.ndim))
  band[box] = (crop & (depth <= dilation))[inner]
  return band


def boundary_dilation(shape: Sequence[int], ratio: float) -> int:
  """Boundary IoU's band width: `max(1, round(ratio * image diagonal))` pixels."""
  return max(1, int(round(ratio * image_diagonal(shape))))


def _check_ratio(ratio, name: str) -> float:
  if not (isinstance(ratio, (int, float, np.integer, np.floating)) and math.isfinite(ratio)
          and ratio > 0):
    raise ValueError(f'metrics.{name}: dilation ratio must be a finite number > 0, got '
                     f'{ratio!r}')
  return float(ratio)


def _boundary_iou(pred: np.ndarray, target: np.ndarray, ratio: float, empty_policy: str
                  ) -> float:
  p_any, t_any = bool(pred.any()), bool(target.any())
  if not p_any and not t_any:
    return 1.0
  if p_any != t_any:
    return 0.0 if empty_policy == 'diagonal' else math.nan
  d = boundary_dilation(pred.shape, ratio)
  bp, bt = boundary_band(pred, d), boundary_band(target, d)
  return float(np.count_nonzero(bp & bt) / np.count_nonzero(bp | bt))


def boundary_iou(pred, target, dilation_ratio: float = DEFAULT_BOUNDARY_IOU_RATIO, *,
                 empty_policy: str = 'diagonal') -> float:
  """Boundary IoU (Cheng et al., 2021): IoU of the two masks' inner boundary bands.

  Band width `d = max(1, round(dilation_ratio * diagonal))` pixels (see `boundary_band`);
  Boundary IoU is defined on the pixel grid, so it takes no spacing.

  Args:
    pred, target: same-shape arrays; nonzero is foreground.
    dilation_ratio: band width as a fraction of the image diagonal (> 0; the paper's 0.02).
    empty_policy: both empty -> 1.0; exactly one empty -> 0.0 (`'diagonal'`) or NaN
      (`'exclude'`), as for HD95.

  Returns:
    Python float in [0, 1].
  """
  _check_policy(empty_policy, 'boundary_iou')
  ratio = _check_ratio(dilation_ratio, 'boundary_iou')
  pred, target = _as_bool_pair(pred, target, 'boundary_iou')
  return _boundary_iou(pred, target, ratio, empty_policy)


def boundary_f_score(pred_boundary, target_boundary, tolerance: float) -> dict[str, float]:
  """Boundary F-score (BF, Csurka et al., 2013) of two boundary maps at a pixel tolerance.

  precision = share of `pred_boundary` pixels within `tolerance` (Euclidean, pixels) of a
  `target_boundary` pixel; recall = the same the other way; F = 2PR / (P + R). Both maps empty
  -> 1 for all three; exactly one empty -> 0 for all three.

  Args:
    pred_boundary, target_boundary: same-shape boolean maps `(H, W)`, e.g. a thresholded edge
      map and `border(mask)`.
    tolerance: >= 0, in pixels.

  Returns:
    `{'precision', 'recall', 'f'}` (Python floats).
  """
  tolerance = _check_tolerance(tolerance, 'boundary_f_score')
  pred_b, target_b = _as_bool_pair(pred_boundary, target_boundary, 'boundary_f_score')
  p_any, t_any = bool(pred_b.any()), bool(target_b.any())
  if not (p_any and t_any):
    value = 1.0 if p_any == t_any else 0.0
    return {'precision': value, 'recall': value, 'f': value}
  precision = float(np.mean(ndimage.distance_transform_edt(~target_b)[pred_b] <= tolerance))
  recall = float(np.mean(ndimage.distance_transform_edt(~pred_b)[target_b] <= tolerance))
  f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  return {'precision': precision, 'recall': recall, 'f': float(f)}


# ----------------------------------------------------------------------------- per-image set


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
  hd, sd, nsd, kind = _distance_triple(pred, target, spacing, empty_policy, nsd_tolerance)
  out = {
      'dice': _ratio(2 * tp, 2 * tp + fp + fn, identical),
      'iou': _ratio(tp, tp + fp + fn, identical),
      'hd95': hd,
      'assd': sd,
      'nsd': nsd,
      'boundary_iou': _boundary_iou(pred, target, boundary_ratio, empty_policy),
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
  _check_policy(empty_policy, 'image_metrics')
  pred = np.atleast_1d(np.asarray(pred))
  target = np.atleast_1d(np.asarray(target))
  if pred.shape != target.shape:
    raise ValueError(f'metrics.image_metrics: pred and target shapes differ: {pred.shape} vs '
                     f'{target.shape}')
  if int(num_classes) != num_classes or num_classes < 1:
    raise ValueError(f'metrics.image_metrics: num_classes must be a positive integer, got '
                     f'{num_classes!r}')
  _normalize_spacing(spacing, pred.ndim, 'image_metrics')
  options = (_check_tolerance(nsd_tolerance, 'image_metrics'),
             _check_ratio(boundary_iou_ratio, 'image_metrics'))
  out: dict[str, Any] = {}
  empty: dict[int, str] = {}
  excluded: list[str] = []
  if num_classes == 1:
    _check_not_probabilities(pred, 'pred', 'image_metrics')
    _check_not_probabilities(target, 'target', 'image_metrics')
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


# ----------------------------------------------------------------------------- on device


def _labels_from_logits(logits, num_classes: int):
  import jax.numpy as jnp
  if num_classes == 1:
    return logits[..., 0] > 0
  return jnp.argmax(logits, axis=-1)


def device_dice_iou(logits, mask, num_classes: int, valid=None) -> dict[str, Any]:
  """Jittable Dice/IoU statistics of one batch, additive over batches.

  The prediction is `logits > 0` (binary, i.e. probability > 0.5) or the arg-max class. For each
  foreground class (binary: the one foreground; multi-class: 1..C-1) it returns summed confusion
  counts (for the global, pixel-pooled Dice/IoU) and the summed per-image Dice/IoU (for the
  per-image mean that `image_metrics` + `summarize` report; both-empty images score 1).

  Args:
    logits: `(B, H, W, C)` with C == 1 for binary or C == num_classes; any float dtype.
    mask: `(B, H, W)` integer labels (binary: nonzero is foreground).
    num_classes: 1 for binary, else the number of classes including background.
    valid: optional `(B,)` bool; False rows (padding) contribute nothing.

  Returns:
    dict of `(K,)` arrays, K = max(num_classes - 1, 1): 'intersection', 'pred_sum',
    'target_sum' (int32 pixel counts summed over valid images), 'dice_sum', 'iou_sum' (float32
    sums of per-image scores), and 'n_images' (int32 scalar, valid images).

  Raises:
    ValueError: shapes inconsistent with num_classes.
  """
  import jax.numpy as jnp
  if logits.ndim != 4 or mask.shape != logits.shape[:3]:
    raise ValueError(f'metrics.device_dice_iou: logits (B, H, W, C) and mask (B, H, W) '
                     f'expected, got {logits.shape} and {mask.shape}')
  expected_c = 1 if num_classes == 1 else num_classes
  if logits.shape[-1] != expected_c:
    raise ValueError(f'metrics.device_dice_iou: logits have {logits.shape[-1]} channels, '
                     f'expected {expected_c} for num_classes={num_classes}')
  batch = logits.shape[0]
  valid = jnp.ones((batch,), bool) if valid is None else jnp.asarray(valid).astype(bool)
  if valid.shape != (batch,):
    raise ValueError(f'metrics.device_dice_iou: valid must have shape ({batch},), got '
                     f'{valid.shape}')
  labels = _labels_from_logits(logits, num_classes)
  if num_classes == 1:
    pred_oh = labels[..., None]
    tgt_oh = (mask != 0)[..., None]
  else:
    classes = jnp.arange(1, num_classes)
    pred_oh = labels[..., None] == classes
    tgt_oh = mask[..., None] == classes
  inter = jnp.sum(pred_oh & tgt_oh, axis=(1, 2), dtype=jnp.int32)  # (B, K)
  p_sum = jnp.sum(pred_oh, axis=(1, 2), dtype=jnp.int32)
  t_sum = jnp.sum(tgt_oh, axis=(1, 2), dtype=jnp.int32)
  dice, iou = _dice_iou(inter, p_sum, t_sum, jnp)
  w = valid[:, None]
  zero = jnp.zeros((), jnp.int32)
  return {
      'intersection': jnp.sum(jnp.where(w, inter, zero), axis=0),
      'pred_sum': jnp.sum(jnp.where(w, p_sum, zero), axis=0),
      'target_sum': jnp.sum(jnp.where(w, t_sum, zero), axis=0),
      'dice_sum': jnp.sum(jnp.where(w, dice, 0.0), axis=0),
      'iou_sum': jnp.sum(jnp.where(w, iou, 0.0), axis=0),
      'n_images': jnp.sum(valid, dtype=jnp.int32),
  }


def _dice_iou(inter, p_sum, t_sum, xp):
  """Dice and IoU from counts; 0/0 (both empty) is 1. float32 for jnp, float64 for numpy."""
  dtype = xp.float64 if xp is np else xp.float32
  inter = inter.astype(dtype)
  p_sum = p_sum.astype(dtype)
  t_sum = t_sum.astype(dtype)
  den_d = p_sum + t_sum
  den_i = den_d - inter
  dice = xp.where(den_d > 0, 2 * inter / xp.where(den_d > 0, den_d, 1), 1.0).astype(dtype)
  iou = xp.where(den_i > 0, inter / xp.where(den_i > 0, den_i, 1), 1.0).astype(dtype)
  return dice, iou


def dice_iou_from_counts(counts: Mapping[str, Any]) -> dict[str, Any]:
  """Dice/IoU from (accumulated) `device_dice_iou` counts.

  Works on NumPy (float64) or jax.numpy (float32) inputs; accumulate counts across batches on
  the host in int64 to avoid int32 overflow.

  Returns:
    dict: 'dice', 'iou' (mean over classes of the per-image mean, i.e. what `summarize` reports
    as the mean of `image_metrics`'s 'dice'/'iou'), 'dice_per_class', 'iou_per_class' `(K,)`,
    'dice_global', 'iou_global' (mean over classes of the pixel-pooled scores) and
    'dice_global_per_class', 'iou_global_per_class' `(K,)`. With no images, per-image scores are
    NaN.
  """
  arrays = [counts[k] for k in ('intersection', 'pred_sum', 'target_sum', 'dice_sum', 'iou_sum',
                                'n_images')]
  xp = np if all(isinstance(a, (np.ndarray, np.generic, int, float)) for a in arrays) else None
  if xp is None:
    import jax.numpy as jnp
    xp = jnp
  inter, p_sum, t_sum, d_sum, i_sum, n = (xp.asarray(a) for a in arrays)
  dice_g, iou_g = _dice_iou(inter, p_sum, t_sum, xp)
  dtype = dice_g.dtype
  n = n.astype(dtype)
  dice_pc = xp.where(n > 0, d_sum.astype(dtype) / xp.maximum(n, 1), xp.nan)
  iou_pc = xp.where(n > 0, i_sum.astype(dtype) / xp.maximum(n, 1), xp.nan)
  return {
      'dice': xp.mean(dice_pc), 'iou': xp.mean(iou_pc),
      'dice_per_class': dice_pc, 'iou_per_class': iou_pc,
      'dice_global': xp.mean(dice_g), 'iou_global': xp.mean(iou_g),
      'dice_global_per_class': dice_g, 'iou_global_per_class': iou_g,
  }
