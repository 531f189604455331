"""What an evaluation leaves on disk and prints: `metrics.json`, `per_image.csv`, overlay PNGs,
the training curve and the console summary.

Evaluation outputs live in one folder per (data set, split, checkpoint step):
`workdir/eval/<data.name>/<split>/step_<N>/{metrics.json, per_image.csv, overlays/, config.json}`
(`eval_dir`), so evaluations of different splits, data sets or checkpoints never overwrite
each other.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Callable, Optional

import numpy as np
# Figures are drawn on `Figure` objects, not pyplot: nothing here changes the process's
# matplotlib backend (a notebook importing the package keeps its inline plots).
from matplotlib.figure import Figure

from sgdc_jax import metrics as metrics_lib
from sgdc_jax.run.inference import ScoredImage

# Every per-image metric, in `metrics.METRIC_NAMES` order (dice, iou, hd95, assd, nsd,
# boundary_iou, accuracy, ...).
SUMMARY_KEYS = tuple(metrics_lib.METRIC_NAMES)
# Metrics in pixels (2 decimals and 'px'); the others are ratios in [0, 1] (4 decimals).
PIXEL_METRICS = ("hd95", "assd")


def format_metric(name: str, value: Any) -> str:
  """`value` of metric `name` for a log line: '0.8123' for a ratio, '10.59 px' for a distance
  (`PIXEL_METRICS`); 'n/a' when missing."""
  if value is None:
    return "n/a"
  if name in PIXEL_METRICS:
    return f"{float(value):.2f} px"
  return f"{float(value):.4f}"


def format_metrics(mean: dict[str, Any], names: tuple[str, ...]) -> str:
  """'dice 0.8123, hd95 10.59 px, ...' for the `names` present in `mean`."""
  return ", ".join(f"{k} {format_metric(k, mean[k])}" for k in names if k in mean)


def eval_dir(workdir: str, dataset: str, split: str, step: int) -> str:
  """`workdir/eval/<dataset>/<split>/step_<step>`; path separators in names become '_'."""
  clean = lambda s: str(s).replace(os.sep, "_").replace("/", "_")
  return os.path.join(workdir, "eval", clean(dataset), clean(split), f"step_{int(step)}")


def write_eval_outputs(out_dir: str, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
  """Writes `per_image.csv` (one row per image, with its file id) and `metrics.json`."""
  os.makedirs(out_dir, exist_ok=True)
  fields: list[str] = []
  for r in rows:
    fields.extend(k for k in r if k not in fields)
  with open(os.path.join(out_dir, "per_image.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in sorted(rows, key=lambda r: r["index"]):
      w.writerow(r)
  with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2, default=str)


def overlay_writer(out_dir: str, limit: int) -> Callable[[ScoredImage], None]:
  """A `Scorer.score` visitor saving the first `limit` images as overlay PNGs in
  `out_dir/overlays/NNN_<id>.png`."""
  written = [0]

  def visit(item: ScoredImage) -> None:
    if written[0] >= limit:
      return
    os.makedirs(os.path.join(out_dir, "overlays"), exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.id)
    save_overlay(os.path.join(out_dir, "overlays", f"{written[0]:03d}_{safe}.png"), item.image,
                 item.target, item.pred, item.edge,
                 f"{item.id}  dice {item.metrics.get('dice', math.nan):.3f}")
    written[0] += 1

  return visit


def save_overlay(path: str, image: np.ndarray, target: np.ndarray, pred: np.ndarray,
                 edge: Optional[np.ndarray], title: str) -> None:
  """PNG with the image, ground-truth contour (green), predicted contour (red) and, next to it,
  the SGE edge map (when given). `image` uint8 (H, W, 3); masks (H, W); `edge` (H, W)."""
  panels = 2 if edge is not None else 1
  fig = Figure(figsize=(4.5 * panels, 4.5))
  axes = fig.subplots(1, panels, squeeze=False)
  ax = axes[0, 0]
  ax.imshow(image)
  for m, color in ((target, "lime"), (pred, "red")):
    if np.any(m > 0) and not np.all(m > 0):
      ax.contour((m > 0).astype(np.float32), levels=[0.5], colors=color, linewidths=1.2)
  ax.set_title(f"{title}\nGT green, prediction red", fontsize=8)
  ax.axis("off")
  if edge is not None:
    ax = axes[0, 1]
    ax.imshow(edge, cmap="magma", vmin=0.0, vmax=1.0)
    ax.set_title("SGE edge map", fontsize=8)
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=80)


def plot_training_curve(history_path: str, out_png: str) -> Optional[str]:
  """Plots training loss, validation Dice and validation HD95 against the step.

  Args:
    history_path: JSON-lines file with {'step', 'loss'} and {'step', 'val_dice', 'val_hd95'}.
    out_png: output PNG path.
  Returns:
    `out_png`, or None when there is no history.
  """
  if not os.path.exists(history_path):
    return None
  with open(history_path, encoding="utf-8") as f:
    rows = [json.loads(l) for l in f if l.strip()]
  if not rows:
    return None
  series = {key: [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            for key in ("loss", "val_dice", "val_hd95")}
  fig = Figure(figsize=(13, 3.6))
  axes = fig.subplots(1, 3)
  for ax, key, name in ((axes[0], "loss", "train loss"), (axes[1], "val_dice", "val Dice"),
                        (axes[2], "val_hd95", "val HD95 (px)")):
    if series[key]:
      xs, ys = zip(*series[key])
      ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_title(name)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out_png, dpi=90)
  return out_png


def print_summary(summary: dict[str, Any], out_dir: str) -> None:
  """Prints the mean metrics of an evaluation and where its outputs are."""
  mean = summary["mean"]
  print(f"{summary.get('split', '')} metrics over {summary['n_images']} images "
        f"(checkpoint step {summary.get('checkpoint_step')}):")
  for k in (k for k in SUMMARY_KEYS if k in mean):
    digits, unit = (2, " px") if k in PIXEL_METRICS else (4, "")
    print(f"  {k:12s} {mean[k]:.{digits}f} +- {summary['std'][k]:.{digits}f}{unit}")
  print(f"  empty masks: {summary.get('empty')}; HD95 convention: {summary.get('hd95_convention')}")
  print(f"outputs: {os.path.join(out_dir, 'metrics.json')}, "
        f"{os.path.join(out_dir, 'per_image.csv')}, {os.path.join(out_dir, 'overlays')}/")
