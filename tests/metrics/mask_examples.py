"""Masks and brute-force references shared by the metric tests (tests/metrics/test_*.py).

The references compute borders and distances by all pairs (`cdist`), independently of the
distance transforms and k-d trees `sgdc_jax.metrics` uses.
"""
import numpy as np
from scipy import ndimage
from scipy.spatial.distance import cdist


def square_blob(rng, n, sigma=None, frac=None):
  """Random smooth (n, n) blob(s): thresholded Gaussian-filtered noise."""
  field = ndimage.gaussian_filter(rng.normal(size=(n, n)), sigma or n / 16)
  return field > np.quantile(field, frac if frac is not None else rng.uniform(0.5, 0.95))


def blob(rng, h, w, sigma, frac):
  """Random smooth (h, w) blob(s) covering the top `1 - frac` of filtered noise."""
  field = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma)
  return field > np.quantile(field, frac)


def lesion(rng, h, w):
  """A lesion-like mask: an irregular ellipse with a wobbly outline, sometimes on the frame."""
  yy, xx = np.mgrid[:h, :w].astype(float)
  cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
  ry, rx = rng.uniform(0.15, 0.6) * h, rng.uniform(0.15, 0.6) * w
  angle = np.arctan2(yy - cy, xx - cx)
  wobble = 1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6)) + 0.08 * np.sin(7 * angle)
  return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < wobble ** 2


def mask_pairs(seed):
  """Nine (pred, target) pairs: shifted lesions, unrelated lesions, rough many-part blobs."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(3):
    a = lesion(rng, 96, 128)
    out.append((a, np.roll(a, int(rng.integers(1, 6)), axis=int(rng.integers(0, 2)))))
    out.append((lesion(rng, 96, 128), lesion(rng, 96, 128)))
    out.append((blob(rng, 64, 80, 2.0, 0.6), blob(rng, 64, 80, 2.0, 0.6)))  # rough, many parts
  return out


def brute_border(mask):
  """Foreground pixels with a 4-neighbour that is background or outside the image."""
  padded = np.pad(mask, 1, constant_values=False)
  inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
  return mask & ~inner


def brute_distances(pred, target, spacing=(1.0, 1.0)):
  """Both directed border-to-border distance sets by all-pairs distances (independent of EDT)."""
  s = np.asarray(spacing, np.float64)
  p = np.argwhere(brute_border(pred)) * s
  t = np.argwhere(brute_border(target)) * s
  d = cdist(p, t)
  return d.min(axis=1), d.min(axis=0)


def brute_hd95_assd(pred, target, spacing=(1.0, 1.0)):
  """(HD95, ASSD), MedPy convention, from `brute_distances`."""
  d = np.concatenate(brute_distances(pred, target, spacing))
  return float(np.percentile(d, 95)), float(d.mean())


def brute_nsd(pred, target, tol, spacing=(1.0, 1.0)):
  """Normalised surface Dice at `tol` from all-pairs border distances."""
  d_pt, d_tp = brute_distances(pred, target, spacing)
  return ((d_pt <= tol).sum() + (d_tp <= tol).sum()) / (len(d_pt) + len(d_tp))


def vessel_tree(rng, h, w, branches=10):
  """A retinal-vessel-like (h, w) mask: straight segments 1 to 7 pixels wide, each starting on
  an earlier one (a branching tree), some leaving the image."""
  yy, xx = np.mgrid[:h, :w].astype(float)
  mask = np.zeros((h, w), bool)
  starts = [(rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w)]
  for i in range(branches):
    y0, x0 = starts[int(rng.integers(len(starts)))]
    angle = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.2, 0.6) * min(h, w)
    y1, x1 = y0 + length * np.sin(angle), x0 + length * np.cos(angle)
    # Distance of every pixel to the segment (y0, x0)-(y1, x1).
    t = np.clip(((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0)) / length ** 2, 0, 1)
    dist = np.hypot(yy - (y0 + t * (y1 - y0)), xx - (x0 + t * (x1 - x0)))
    mask |= dist <= rng.uniform(0.5, 3.5) * (0.85 ** i)  # later branches are thinner
    starts += [(y1, x1), ((y0 + y1) / 2, (x0 + x1) / 2)]
  return mask
