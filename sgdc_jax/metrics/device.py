"""On-device Dice/IoU (jax.numpy, jittable) that agree with `image_metrics` / `summarize`.

`device_dice_iou` returns additive counts per batch; `dice_iou_from_counts` turns accumulated
counts into per-image-mean and global Dice/IoU with the same empty conventions (both empty
scores 1). JAX is imported on first use, so the host metrics load without it.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np


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
