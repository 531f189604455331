"""Tables, paired tests and plots of the kernel-source ablation (`sgdc_jax.analysis.ablation`).

Everything here works on finished runs' numbers only (run records and per-image CSV files), so
the report can be rebuilt at any time without a model or a device.

Paired comparisons (structure vs each other source) use the same test images: per image, each
source's score is first averaged over its seeds, then the difference `structure - other` gives
the mean difference, a 95 % percentile-bootstrap confidence interval (images resampled with
replacement, seeded), the two-sided Wilcoxon signed-rank p-value (SciPy; zero differences
dropped) and wins/ties/losses from structure's side (for HD95 and ASSD lower is better). An
interval that contains 0 is reported as "no significant difference".
"""
from __future__ import annotations

import csv
import math
import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use('Agg')  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

# Per-image metrics compared, and whether larger is better.
METRICS = {'dice': True, 'iou': True, 'hd95': False, 'assd': False, 'nsd': True,
           'boundary_iou': True, 'cldice': True}
# Metrics added after the first ablations: a per_image.csv written before them lacks the column
# (read as NaN, so the paired test of that metric is left out).
LATER_METRICS = ('cldice',)
# Columns of ablation.csv, one row per (source, seed) run.
RUN_COLUMNS = ('source', 'seed', 'dice', 'iou', 'hd95', 'assd', 'nsd', 'boundary_iou', 'cldice',
               'dice_std', 'iou_std', 'hd95_std', 'assd_std', 'nsd_std', 'boundary_iou_std',
               'cldice_std',
               'n_images', 'region', 'n_roi', 'params', 'gflops_per_image', 'train_s', 'steps',
               'checkpoint_step', 'per_image_csv',
               # test-time diagnostics (`sgdc_jax.analysis.diagnose`): mean intact - knocked costs,
               # SGE edge F-score, layer scales and branch norms averaged over the blocks
               'ko_blocks_off_dice', 'ko_blocks_off_hd95', 'ko_dynamic_off_dice',
               'ko_dynamic_off_hd95', 'ko_guidance_zeroed_dice', 'ko_guidance_zeroed_hd95',
               'ko_guidance_swapped_dice', 'ko_guidance_swapped_hd95', 'edge_f',
               'ls1_mean_abs', 'ls2_mean_abs', 'branch1_rel_norm', 'branch2_rel_norm')
SUMMARY_KEYS = ('dice', 'iou', 'hd95', 'assd', 'nsd', 'boundary_iou', 'cldice', 'params',
                'gflops_per_image', 'train_s')


def read_per_image(path: str) -> dict[str, dict[str, float]]:
  """`per_image.csv` of an evaluation -> `{image id: {metric: value}}` for `METRICS`.

  Raises:
    ValueError: missing file or column, or a repeated image id (the message names the file).
  """
  if not os.path.isfile(path):
    raise ValueError(f'per-image results not found: {path}')
  out: dict[str, dict[str, float]] = {}
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    missing = [k for k in ('id', *METRICS)
               if k not in (reader.fieldnames or []) and k not in LATER_METRICS]
    if missing:
      raise ValueError(f'{path}: missing column(s) {missing}')
    for row in reader:
      if row['id'] in out:
        raise ValueError(f'{path}: image id {row["id"]!r} appears twice')
      out[row['id']] = {k: float(row[k]) if row.get(k) not in (None, '') else math.nan
                        for k in METRICS}
  return out


def paired_comparison(a: Sequence[float], b: Sequence[float], *, higher_is_better: bool,
                      num_resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
  """Compares two methods on the same images; `a`, `b` are (N,) per-image scores.

  Returns:
    `{'n', 'mean_diff' (a - b), 'ci_low', 'ci_high' (95 % bootstrap), 'wilcoxon_p',
    'wins', 'ties', 'losses' (from a's side), 'significant' (the interval excludes 0)}`.
  Raises:
    ValueError: different or empty shapes, or non-finite scores.
  """
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or a.size == 0:
    raise ValueError(f'paired scores need equal, non-empty 1-D shapes; got {a.shape}, {b.shape}')
  if not (np.isfinite(a).all() and np.isfinite(b).all()):
    raise ValueError('paired scores must be finite; leave out images with undefined metrics '
                     '(and count them) before comparing')
  diff = a - b
  rng = np.random.default_rng(seed)
  means = diff[rng.integers(0, diff.size, size=(num_resamples, diff.size))].mean(axis=1)
  lo, hi = np.percentile(means, [2.5, 97.5])
  nonzero = diff != 0
  p = float(stats.wilcoxon(diff[nonzero]).pvalue) if nonzero.any() else 1.0
  sign = 1.0 if higher_is_better else -1.0
  return {
      'n': int(diff.size), 'mean_diff': float(diff.mean()), 'ci_low': float(lo),
      'ci_high': float(hi), 'wilcoxon_p': p, 'wins': int((sign * diff > 0).sum()),
      'ties': int((~nonzero).sum()), 'losses': int((sign * diff < 0).sum()),
      'significant': bool(lo > 0 or hi < 0),
  }


def seed_averaged(per_image_by_seed: Sequence[Mapping[str, Mapping[str, float]]]
                  ) -> dict[str, dict[str, float]]:
  """Per-image scores averaged over seeds: `{id: {metric: mean over seeds}}`.

  Raises:
    ValueError: the seeds were scored on different image sets.
  """
  ids = sorted(per_image_by_seed[0])
  for other in per_image_by_seed[1:]:
    if sorted(other) != ids:
      raise ValueError('the runs of one source were evaluated on different images')
  return {
      i: {m: float(np.mean([run[i].get(m, math.nan) for run in per_image_by_seed]))
          for m in METRICS}
      for i in ids
  }


def compare_sources(per_source: Mapping[str, Mapping[str, Mapping[str, float]]],
                    reference: str = 'structure', seed: int = 0) -> list[dict[str, Any]]:
  """Paired comparisons of `reference` with every other source, per metric.

  Args:
    per_source: `{source: {image id: {metric: seed-averaged value}}}`.
  Returns:
    One dict per (other source, metric): `paired_comparison` plus 'reference', 'other',
    'metric' and 'left_out' (images where a value is NaN, e.g. undefined HD95; counted, not
    compared).
  """
  if reference not in per_source:
    return []
  rows = []
  for other, scores in per_source.items():
    if other != reference:
      rows += paired_rows(per_source[reference], scores, reference, other, seed=seed)
  return rows


def paired_rows(ref: Mapping[str, Mapping[str, float]], other: Mapping[str, Mapping[str, float]],
                ref_name: str, other_name: str, seed: int = 0) -> list[dict[str, Any]]:
  """`paired_comparison` of two `{image id: {metric: value}}` score sets, one row per metric
  of `METRICS` (plus 'reference', 'other', 'metric', 'left_out').

  Raises:
    ValueError: the two sets hold different images.
  """
  if sorted(other) != sorted(ref):
    raise ValueError(f'{ref_name} and {other_name} were evaluated on different images')
  ids = sorted(ref)
  rows = []
  for metric, higher in METRICS.items():
    a = np.array([ref[i][metric] for i in ids])
    b = np.array([other[i][metric] for i in ids])
    keep = np.isfinite(a) & np.isfinite(b)
    if not keep.any():
      continue  # no image has both values (e.g. runs scored before the metric existed)
    row = paired_comparison(a[keep], b[keep], higher_is_better=higher, seed=seed)
    row.update(reference=ref_name, other=other_name, metric=metric,
               left_out=int((~keep).sum()))
    rows.append(row)
  return rows


def source_summary(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Per source: mean and std over seeds of each run-level number (`RUN_COLUMNS`)."""
  out = []
  for source in dict.fromkeys(r['source'] for r in runs):
    mine = [r for r in runs if r['source'] == source]
    row: dict[str, Any] = {'source': source, 'seeds': [int(r['seed']) for r in mine]}
    for key in SUMMARY_KEYS:  # runs recorded before a metric existed count as NaN
      vals = np.array([float(r.get(key, math.nan)) for r in mine])
      row[key] = float(vals.mean())
      row[key + '_sd'] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
    out.append(row)
  return out


def write_runs_csv(path: str, runs: Sequence[Mapping[str, Any]]) -> None:
  """`ablation.csv`: one row per run with `RUN_COLUMNS`."""
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.DictWriter(f, fieldnames=RUN_COLUMNS, extrasaction='ignore')
    w.writeheader()
    for r in runs:
      w.writerow(r)


def _pm(mean: float, sd: float, digits: int) -> str:
  if math.isnan(sd):
    return f'{mean:.{digits}f}'
  return f'{mean:.{digits}f} ± {sd:.{digits}f}'


def markdown(summary: Sequence[Mapping[str, Any]], comparisons: Sequence[Mapping[str, Any]],
             title: str) -> str:
  """`ablation.md`: the per-source table and the paired comparisons."""
  lines = [f'# {title}', '',
           'Per source: mean ± sample std over seeds of the per-run test means '
           '(HD95, ASSD in pixels, MedPy convention; NSD at the eval.nsd_tolerance; '
           'train time = wall seconds).', '',
           '| source | seeds | Dice | IoU | HD95 | ASSD | NSD | Boundary IoU | clDice | params | '
           'GFLOPs/image | train s |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in summary:
    lines.append(
        f"| {r['source']} | {len(r['seeds'])} | {_pm(r['dice'], r['dice_sd'], 4)} | "
        f"{_pm(r['iou'], r['iou_sd'], 4)} | {_pm(r['hd95'], r['hd95_sd'], 2)} | "
        f"{_pm(r['assd'], r['assd_sd'], 2)} | {_pm(r['nsd'], r['nsd_sd'], 4)} | "
        f"{_pm(r['boundary_iou'], r['boundary_iou_sd'], 4)} | "
        f"{_pm(r['cldice'], r['cldice_sd'], 4)} | {int(r['params']):,} | "
        f"{r['gflops_per_image']:.2f} | {_pm(r['train_s'], r['train_s_sd'], 0)} |")
  if comparisons:
    lines += ['', 'Paired per-image comparisons on the same test images (each source averaged '
              'over its seeds first): difference = reference - other, 95 % bootstrap interval, '
              'Wilcoxon signed-rank p, wins/ties/losses of the reference.', '',
              '| reference vs other | metric | n | mean diff | 95 % CI | Wilcoxon p | '
              'W/T/L | verdict |', '|---|---|---|---|---|---|---|---|']
    lines += comparison_rows(comparisons)
  return '\n'.join(lines) + '\n'


def comparison_rows(comparisons: Sequence[Mapping[str, Any]]) -> list[str]:
  """Markdown rows of `paired_rows` results (header not included)."""
  lines = []
  for c in comparisons:
    better = (c['mean_diff'] > 0) == METRICS[c['metric']]
    verdict = (('reference better' if better else 'reference worse')
               if c['significant'] else 'no significant difference')
    left = f" ({c['left_out']} left out)" if c['left_out'] else ''
    lines.append(
        f"| {c['reference']} vs {c['other']} | {c['metric']} | {c['n']}{left} | "
        f"{c['mean_diff']:+.4f} | [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | "
        f"{c['wilcoxon_p']:.3g} | {c['wins']}/{c['ties']}/{c['losses']} | {verdict} |")
  return lines


def plot(per_source: Mapping[str, Mapping[str, Mapping[str, float]]], path: str) -> None:
  """`ablation.png`: per-source box plot with the per-image points of HD95 and Dice."""
  sources = list(per_source)
  fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(sources), 4), constrained_layout=True)
  rng = np.random.default_rng(0)
  for ax, metric in zip(axes, ('hd95', 'dice')):
    data = [np.array([v[metric] for v in per_source[s].values()], np.float64) for s in sources]
    data = [d[np.isfinite(d)] for d in data]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(sources) + 1), sources)
    for k, d in enumerate(data, start=1):
      ax.scatter(k + rng.uniform(-0.18, 0.18, d.size), d, s=4, alpha=0.35)
    ax.set_title(f'per-image {metric.upper() if metric == "hd95" else metric.capitalize()}'
                 f'{" (px)" if metric == "hd95" else ""}, seeds averaged')
  fig.savefig(path, dpi=110)
  plt.close(fig)
