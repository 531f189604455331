"""What an evaluation leaves on disk and prints: `metrics.json`, `per_image.csv`, overlay PNGs,
the training curve and the console summary.

Evaluation outputs live in one folder per (data set, split, checkpoint step):
`workdir/eval/<data.name>/<split>/step_<N>/{metrics.json, per_image.csv, overlays/, config.json}`
(`eval_dir`), so evaluations of different splits, data sets or checkpoints never overwrite
each other.

Overlays cost what their output costs: a panel is `OVERLAY_PANEL_PX` pixels wide, so the photo,
its masks and the edge map are first reduced by an integer factor to at most that size
(`downsample_for_overlay`: box filter for the photo, max over each block for the masks and the
edge map so that a one-pixel structure stays visible), and only then drawn (`draw_overlay`).
A 4000 x 3000 photo is never drawn (or converted to float) at full size.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image
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


def eval_subdir(dataset: str, split: str, step: int) -> str:
  """`<dataset>/<split>/step_<step>`; path separators in names become '_'."""
  clean = lambda s: str(s).replace(os.sep, "_").replace("/", "_")
  return os.path.join(clean(dataset), clean(split), f"step_{int(step)}")


def eval_dir(workdir: str, dataset: str, split: str, step: int) -> str:
  """`workdir/eval/<dataset>/<split>/step_<step>` (`eval_subdir` under `workdir/eval`)."""
  return os.path.join(workdir, "eval", eval_subdir(dataset, split, step))


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


# An overlay panel: OVERLAY_INCHES square at OVERLAY_DPI, so at most OVERLAY_PANEL_PX pixels.
OVERLAY_INCHES = 4.5
OVERLAY_DPI = 80
OVERLAY_PANEL_PX = int(OVERLAY_INCHES * OVERLAY_DPI)


def overlay_factor(height: int, width: int, max_side: int = OVERLAY_PANEL_PX) -> int:
  """The smallest integer factor that brings `max(height, width)` to at most `max_side`."""
  return max(1, -(-max(int(height), int(width)) // int(max_side)))


def box_reduce(image: np.ndarray, factor: int) -> np.ndarray:
  """uint8 (H, W[, 3]) -> uint8 (ceil(H/f), ceil(W/f)[, 3]): the mean of each f x f block
  (PIL's `reduce`; blocks at the border are averaged over the pixels they have)."""
  if factor == 1:
    return image
  return np.asarray(Image.fromarray(np.ascontiguousarray(image)).reduce(factor))


def max_reduce(a: np.ndarray, factor: int) -> np.ndarray:
  """(H, W) -> (ceil(H/f), ceil(W/f)): the maximum of each f x f block, in `a`'s dtype (a
  mask's one-pixel line or dot survives); the intermediate is (ceil(H/f), W)."""
  if factor == 1:
    return a
  rows = np.maximum.reduceat(a, np.arange(0, a.shape[0], factor), axis=0)
  return np.maximum.reduceat(rows, np.arange(0, a.shape[1], factor), axis=1)


def downsample_for_overlay(image: np.ndarray, target: np.ndarray, pred: np.ndarray,
                           edge: Optional[np.ndarray], max_side: int = OVERLAY_PANEL_PX
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
  """The arrays of an overlay reduced by `overlay_factor` (unchanged when they fit already):
  image uint8 (h, w, 3) by box filter; target, pred (h, w) and edge (h, w) by block maximum."""
  f = overlay_factor(*target.shape[:2], max_side=max_side)
  return (box_reduce(image, f), max_reduce(target, f), max_reduce(pred, f),
          None if edge is None else max_reduce(edge, f))


def save_overlay(path: str, image: np.ndarray, target: np.ndarray, pred: np.ndarray,
                 edge: Optional[np.ndarray], title: str) -> None:
  """PNG with the image, ground-truth contour (green), predicted contour (red) and, next to it,
  the SGE edge map (when given). `image` uint8 (H, W, 3); masks (H, W); `edge` (H, W).
  Drawn from a copy reduced to the panel size (`downsample_for_overlay`)."""
  draw_overlay(path, *downsample_for_overlay(image, target, pred, edge), title)


def draw_overlay(path: str, image: np.ndarray, target: np.ndarray, pred: np.ndarray,
                 edge: Optional[np.ndarray], title: str) -> None:
  """`save_overlay`'s drawing, at the size of the arrays given (the panel size or less)."""
  panels = 2 if edge is not None else 1
  fig = Figure(figsize=(OVERLAY_INCHES * panels, OVERLAY_INCHES))
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
  fig.savefig(path, dpi=OVERLAY_DPI)


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
