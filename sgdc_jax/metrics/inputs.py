"""Argument checks shared by the metrics: binary masks, spacing, tolerance, ratio, policy.

Every check raises `ValueError` whose message starts with `metrics.<function>:`, naming the
public function the caller used.
"""
from __future__ import annotations

import math

import numpy as np

EMPTY_POLICIES = ('diagonal', 'exclude')


def check_not_probabilities(arr: np.ndarray, what: str, name: str) -> None:
  """Rejects float maps holding values other than 0 and 1 (probabilities, not labels)."""
  if np.issubdtype(arr.dtype, np.floating) and np.any((arr != 0) & (arr != 1)):
    raise ValueError(f'metrics.{name}: {what} is a float array with values other than 0 and 1; '
                     'pass a binary/label map (threshold or arg-max probabilities first)')


def as_bool_pair(pred, target, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Two same-shape boolean masks (ndim >= 1) from label maps; nonzero is foreground."""
  pred = np.atleast_1d(np.asarray(pred))
  target = np.atleast_1d(np.asarray(target))
  check_not_probabilities(pred, 'pred', name)
  check_not_probabilities(target, 'target', name)
  pred, target = pred.astype(bool), target.astype(bool)
  if pred.shape != target.shape:
    raise ValueError(f'metrics.{name}: pred and target shapes differ: {pred.shape} vs '
                     f'{target.shape}')
  return pred, target


def normalize_spacing(spacing, ndim: int, name: str) -> np.ndarray | None:
  """None, or a `(ndim,)` float64 array of positive finite spacings (one number is repeated)."""
  if spacing is None:
    return None
  s = np.asarray(spacing, dtype=np.float64).reshape(-1)
  if s.size == 1:
    s = np.repeat(s, ndim)
  if s.size != ndim or not np.all(np.isfinite(s)) or np.any(s <= 0):
    raise ValueError(f'metrics.{name}: spacing must be one positive number or {ndim} of them, '
                     f'got {spacing!r}')
  return s


def check_tolerance(tolerance, name: str) -> float:
  """A finite tolerance >= 0, as a float."""
  if not (isinstance(tolerance, (int, float, np.integer, np.floating))
          and math.isfinite(tolerance) and tolerance >= 0):
    raise ValueError(f'metrics.{name}: tolerance must be a finite number >= 0, got '
                     f'{tolerance!r}')
  return float(tolerance)


def check_policy(empty_policy: str, name: str) -> None:
  """`empty_policy` must be one of `EMPTY_POLICIES`."""
  if empty_policy not in EMPTY_POLICIES:
    raise ValueError(f'metrics.{name}: empty_policy must be one of {EMPTY_POLICIES}, got '
                     f'{empty_policy!r}')


def check_ratio(ratio, name: str) -> float:
  """A finite dilation ratio > 0, as a float."""
  if not (isinstance(ratio, (int, float, np.integer, np.floating)) and math.isfinite(ratio)
          and ratio > 0):
    raise ValueError(f'metrics.{name}: dilation ratio must be a finite number > 0, got '
                     f'{ratio!r}')
  return float(ratio)
