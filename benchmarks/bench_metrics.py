"""Per-image metric speed: sgdc_jax.metrics vs MedPy on the same 512x512 mask pairs.

Run: `python benchmarks/bench_metrics.py [--size 512] [--repeats 7]` (CPU only, ~1 min).

Columns (milliseconds, median over `--repeats` runs of the same pair):
  ours_all    `image_metrics`: Dice, IoU, HD95, ASSD, NSD, Boundary IoU, clDice, accuracy,
              sensitivity, specificity, precision, all together;
  cldice      `metrics.cldice` alone (two Guo-Hall skeletons and two counts);
  ours_edt    HD95 + ASSD forced through the bounding-box EDT path (`method='edt'`);
  medpy_hd95  `medpy.metric.binary.hd95` alone;
  medpy_h+a   MedPy's hd95 + assd (what our one pass replaces);
  speedup     medpy_hd95 / ours_all;
  |dHD95|, |dASSD|  largest disagreement with MedPy (must be < 1e-6).
MedPy columns are skipped, with a note, if MedPy is not installed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sgdc_jax import metrics  # noqa: E402


def _lesion(rng, n, radius, wobble=0.15):
  """Smooth lesion-like blob: a star-shaped region with a few low-frequency harmonics."""
  yy, xx = np.mgrid[:n, :n]
  cy, cx = rng.uniform(0.35 * n, 0.65 * n, size=2)
  theta = np.arctan2(yy - cy, xx - cx)
  r = radius * (1 + wobble * np.sin(3 * theta + rng.uniform(0, 6))
                + 0.5 * wobble * np.sin(5 * theta + rng.uniform(0, 6)))
  return np.hypot(yy - cy, xx - cx) < r


def _vessels(rng, n, branches=14):
  """Vessel-like tree: straight segments 1 to 7 px wide, each starting on an earlier one."""
  yy, xx = np.mgrid[:n, :n].astype(float)
  mask = np.zeros((n, n), bool)
  starts = [tuple(rng.uniform(0.3 * n, 0.7 * n, size=2))]
  for i in range(branches):
    y0, x0 = starts[int(rng.integers(len(starts)))]
    angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.6) * n
    y1, x1 = y0 + length * np.sin(angle), x0 + length * np.cos(angle)
    t = np.clip(((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0)) / length ** 2, 0, 1)
    dist = np.hypot(yy - (y0 + t * (y1 - y0)), xx - (x0 + t * (x1 - x0)))
    mask |= dist <= rng.uniform(0.5, 3.5) * 0.9 ** i
    starts += [(y1, x1), ((y0 + y1) / 2, (x0 + x1) / 2)]
  return mask


def _rough(rng, n):
  field = ndimage.gaussian_filter(rng.normal(size=(n, n)), 3)
  return field > np.quantile(field, 0.6)


def make_cases(n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  cases = []
  a = _lesion(rng, n, 0.3 * n)
  cases.append(('large lesion, good pred', a, ndimage.binary_dilation(
      np.roll(a, 4, axis=1), iterations=3)))
  cases.append(('large lesion, poor pred', _lesion(rng, n, 0.3 * n), _lesion(rng, n, 0.25 * n)))
  a = _lesion(rng, n, 0.08 * n)
  cases.append(('small lesion, good pred', a, np.roll(a, 2, axis=0)))
  cases.append(('small vs large', _lesion(rng, n, 0.05 * n), _lesion(rng, n, 0.3 * n)))
  b = _lesion(rng, n, 0.3 * n)
  speck = b.copy()
  speck[5:12, 5:12] = True
  cases.append(('near-identical + speck', speck, b))
  cases.append(('rough borders (noise)', _rough(rng, n), _rough(rng, n)))
  v = _vessels(rng, n)
  cases.append(('vessels, gappy pred', v & (rng.random((n, n)) > 0.05), v))
  return cases


def _median_ms(fn, repeats: int) -> float:
  fn()  # warm-up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return 1e3 * float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=512)
  parser.add_argument('--repeats', type=int, default=7)
  args = parser.parse_args()
  if args.repeats < 5:
    parser.error('--repeats must be >= 5')
  try:
    from medpy.metric import binary as medpy_binary
  except ImportError:
    medpy_binary = None
    print('note: MedPy is not installed; MedPy columns are skipped (pip install medpy).')

  def edt_only(p, t):
    d = np.concatenate(metrics.surface_distances(p, t, method='edt'))
    return np.percentile(d, 95), d.mean()

  header = f"{'case (' + str(args.size) + 'x' + str(args.size) + ')':<26} {'ours_all':>9} " \
           f"{'ours_edt':>9} {'cldice':>9}"
  if medpy_binary is not None:
    header += f" {'medpy_hd95':>10} {'medpy_h+a':>10} {'speedup':>8} {'|dHD95|':>9} " \
              f"{'|dASSD|':>9}"
  print(header)
  print('-' * len(header))
  totals = {'ours': [], 'medpy': []}
  for name, pred, target in make_cases(args.size):
    ours = _median_ms(lambda: metrics.image_metrics(pred, target), args.repeats)
    ours_edt = _median_ms(lambda: edt_only(pred, target), args.repeats)
    cl = _median_ms(lambda: metrics.cldice(pred, target), args.repeats)
    line = f'{name:<26} {ours:9.2f} {ours_edt:9.2f} {cl:9.2f}'
    totals['ours'].append(ours)
    if medpy_binary is not None:
      mp = _median_ms(lambda: medpy_binary.hd95(pred, target), args.repeats)
      mp2 = _median_ms(lambda: (medpy_binary.hd95(pred, target),
                                medpy_binary.assd(pred, target)), args.repeats)
      got = metrics.image_metrics(pred, target)
      d_hd = abs(got['hd95'] - medpy_binary.hd95(pred, target))
      d_sd = abs(got['assd'] - medpy_binary.assd(pred, target))
      totals['medpy'].append(mp)
      line += f' {mp:10.2f} {mp2:10.2f} {mp / ours:7.1f}x {d_hd:9.1e} {d_sd:9.1e}'
    print(line)
  if medpy_binary is not None:
    print(f"\nmean over cases: ours_all {np.mean(totals['ours']):.2f} ms, medpy hd95 alone "
          f"{np.mean(totals['medpy']):.2f} ms "
          f"({np.mean(totals['medpy']) / np.mean(totals['ours']):.1f}x)")


if __name__ == '__main__':
  main()
