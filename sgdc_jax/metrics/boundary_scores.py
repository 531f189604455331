"""Boundary metrics on the pixel grid: boundary bands, Boundary IoU, boundary F-score.

Boundary IoU (Cheng et al., 2021) is the IoU of the two masks' inner boundary bands, each band
the foreground pixels within chessboard distance `d = max(1, round(ratio * image diagonal))` of
the background (the image frame counts as background), as the authors' `mask_to_boundary`
computes with a 3x3 erosion. The boundary F-score (BF, Csurka et al., 2013) compares two
boundary maps at a Euclidean pixel tolerance.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from sgdc_jax.metrics.inputs import as_bool_pair, check_policy, check_ratio, check_tolerance
from sgdc_jax.metrics.surface import bounding_box, image_diagonal

DEFAULT_BOUNDARY_IOU_RATIO = 0.02  # Boundary IoU band width / image diagonal (the paper's)


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
  box = bounding_box(mask)
  # Pad with background so the frame counts as outside, as the reference's zero border does.
  crop = np.pad(mask[box], 1)
  depth = ndimage.distance_transform_cdt(crop, metric='chessboard')
  inner = tuple(slice(1, -1) for _ in range(mask.ndim))
  band[box] = (crop & (depth <= dilation))[inner]
  return band


def boundary_dilation(shape: Sequence[int], ratio: float) -> int:
  """Boundary IoU's band width: `max(1, round(ratio * image diagonal))` pixels."""
  return max(1, int(round(ratio * image_diagonal(shape))))


def band_iou(pred: np.ndarray, target: np.ndarray, ratio: float, empty_policy: str) -> float:
  """Boundary IoU of two checked boolean masks; empty masks as `boundary_iou` documents."""
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
  check_policy(empty_policy, 'boundary_iou')
  ratio = check_ratio(dilation_ratio, 'boundary_iou')
  pred, target = as_bool_pair(pred, target, 'boundary_iou')
  return band_iou(pred, target, ratio, empty_policy)


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
  tolerance = check_tolerance(tolerance, 'boundary_f_score')
  pred_b, target_b = as_bool_pair(pred_boundary, target_boundary, 'boundary_f_score')
  p_any, t_any = bool(pred_b.any()), bool(target_b.any())
  if not (p_any and t_any):
    value = 1.0 if p_any == t_any else 0.0
    return {'precision': value, 'recall': value, 'f': value}
  precision = float(np.mean(ndimage.distance_transform_edt(~target_b)[pred_b] <= tolerance))
  recall = float(np.mean(ndimage.distance_transform_edt(~pred_b)[target_b] <= tolerance))
  f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  return {'precision': precision, 'recall': recall, 'f': float(f)}
