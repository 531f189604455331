"""Evaluation at the original image resolution, overlays and the training curve.

The network runs on the resized eval batches; its probabilities are resized back (bilinear) to the
size of the original example ``open_source(data_config, split)[index]``, thresholded (binary) or
arg-maxed (multi-class) and scored per image with ``sgdc_jax.metrics.image_metrics``; the means,
standard deviations and empty-mask counts come from ``metrics.summarize``. Every record of the
split is scored exactly once (padding rows are skipped by their ``valid`` flag; a missing or
repeated index raises).
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from sgdc_jax import sharding as shd


def predict_probs(variables: dict[str, Any], images: jax.Array, *, apply_fn: Callable,
                  num_classes: int) -> dict[str, jax.Array]:
  """Foreground / class probabilities and SGE edge probabilities.

  Args:
    variables: model variables (params, batch_stats).
    images: float32 (B, S, S, 3), normalised as by the data pipeline.
    apply_fn: ``model.apply``.
    num_classes: 1 (sigmoid) or the number of classes (softmax).
  Returns:
    {'probs': float32 (B, S, S) for binary or (B, S, S, C) for multi-class,
     'edge': float32 (B, S, S) (only when the model returns 'edge_logits')}.
  """
  out = apply_fn(variables, images, train=False)
  logits = out["logits"].astype(jnp.float32)
  if num_classes == 1:
    probs = jax.nn.sigmoid(logits[..., 0])
  else:
    probs = jax.nn.softmax(logits, axis=-1)
  result = {"probs": probs}
  if "edge_logits" in out:
    result["edge"] = jax.nn.sigmoid(out["edge_logits"][..., 0].astype(jnp.float32))
  return result


def resize_probs(probs: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of (S, S) or (S, S, C) float probabilities to (height, width[, C])."""
  def one(p):
    img = Image.fromarray(np.ascontiguousarray(p, np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.BILINEAR), np.float32)
  if probs.ndim == 2:
    return one(probs)
  return np.stack([one(probs[..., c]) for c in range(probs.shape[-1])], axis=-1)


def to_labels(probs: np.ndarray, num_classes: int) -> np.ndarray:
  """Binary mask (probability > 0.5) or arg-max label map, uint8 (H, W)."""
  if num_classes == 1:
    return (probs > 0.5).astype(np.uint8)
  return np.argmax(probs, axis=-1).astype(np.uint8)


def target_labels(mask: np.ndarray, num_classes: int) -> np.ndarray:
  """Ground truth as a label map: nonzero -> 1 for binary, the labels themselves otherwise."""
  mask = np.asarray(mask)
  if mask.ndim == 3:
    mask = mask[..., 0]
  return (mask > 0).astype(np.uint8) if num_classes == 1 else mask.astype(np.uint8)


def _decode_id(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    return _decode_id(value.item())
  return str(value)


def save_overlay(path: str, image: np.ndarray, target: np.ndarray, pred: np.ndarray,
                 edge: Optional[np.ndarray], title: str) -> None:
  """PNG with the image, ground-truth contour (green), predicted contour (red) and, next to it,
  the SGE edge map (when given). ``image`` uint8 (H, W, 3); masks (H, W); ``edge`` (H, W)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = 2 if edge is not None else 1
  fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 4.5), squeeze=False)
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
  plt.close(fig)


class Evaluator:
  """Runs full-resolution evaluation of a split for a given state."""

  def __init__(self, config: ml_collections.ConfigDict, model: Any, mesh: jax.sharding.Mesh):
    self.config = config
    self.mesh = mesh
    self.num_classes = int(config.model.num_classes)
    fn = functools.partial(predict_probs, apply_fn=model.apply, num_classes=self.num_classes)
    self._predict = jax.jit(fn, out_shardings=shd.data_sharding(mesh))

  def evaluate(self, state: Any, split: str, *, out_dir: Optional[str] = None,
               overlays: int = 0) -> dict[str, Any]:
    """Scores every record of ``split`` once.

    Args:
      state: a ``TrainState`` (EMA parameters used when present and ``config.eval.use_ema``).
      split: split name for ``open_source``/``create_eval_iterator``.
      out_dir: when given (process 0), writes ``per_image.csv``, ``metrics.json`` and up to
        ``overlays`` PNGs in ``out_dir/overlays``.
      overlays: number of overlay figures.
    Returns:
      The ``metrics.summarize`` dict plus 'split'; identical on every process.
    Raises:
      ValueError: if a record is scored twice or not at all.
    """
    from sgdc_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    from sgdc_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    cfg = self.config
    variables = state.eval_variables(use_ema=bool(cfg.eval.use_ema))
    source = pipeline.open_source(cfg.data, split)
    n_records = len(source)
    it = pipeline.create_eval_iterator(cfg.data, split, cfg.eval.batch_size,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count())
    primary = jax.process_index() == 0
    if primary and out_dir is not None and overlays > 0:
      os.makedirs(os.path.join(out_dir, "overlays"), exist_ok=True)
    shd.barrier("eval_start")
    rows: list[dict[str, Any]] = []
    per_image: list[dict[str, Any]] = []
    seen: set[int] = set()
    n_overlays = 0
    for batch in it:
      shd.barrier("eval_batch")  # process 0 may still be scoring the previous batch
      local = {k: np.asarray(batch[k]) for k in ("image", "valid", "index")}
      gbatch = shd.host_to_global(local, self.mesh)
      out = self._predict(variables, gbatch["image"])
      shd.barrier("eval_gather")  # everyone compiled `_predict` before the gathers below
      valid = shd.global_to_host(gbatch["valid"]).astype(bool)
      index = shd.global_to_host(gbatch["index"])
      probs = shd.global_to_host(out["probs"])
      edge = shd.global_to_host(out["edge"]) if "edge" in out else None
      if not primary:
        continue
      for i in np.flatnonzero(valid):
        idx = int(index[i])
        if idx in seen:
          raise ValueError(f"evaluate: record {idx} of split '{split}' was produced twice")
        seen.add(idx)
        ex = source[idx]
        target = target_labels(ex["mask"], self.num_classes)
        h, w = target.shape
        p = resize_probs(probs[i], h, w)
        pred = to_labels(p, self.num_classes)
        m = metrics_lib.image_metrics(pred, target, num_classes=self.num_classes)
        per_image.append(m)
        file_id = _decode_id(ex.get("id", idx))
        rows.append({"id": file_id, "index": idx, "height": h, "width": w,
                     **{k: v for k, v in m.items() if isinstance(v, (int, float))}})
        if out_dir is not None and n_overlays < overlays:
          e = resize_probs(edge[i], h, w) if edge is not None else None
          safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in file_id)
          save_overlay(os.path.join(out_dir, "overlays", f"{n_overlays:03d}_{safe}.png"),
                       np.asarray(ex["image"]), target, pred, e,
                       f"{file_id}  dice {m.get('dice', math.nan):.3f}")
          n_overlays += 1
    summary = None
    if primary:
      missing = n_records - len(seen)
      if missing:
        raise ValueError(f"evaluate: {missing} of {n_records} records of split '{split}' were "
                         "never produced by the eval iterator")
      summary = metrics_lib.summarize(per_image)
      summary["split"] = split
      if out_dir is not None:
        write_outputs(out_dir, rows, summary)
    if jax.process_count() > 1:
      shd.barrier("eval_summary")  # process 0 computed the metrics meanwhile
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      text = json.dumps(summary) if primary else ""
      buf = np.frombuffer(text.encode().ljust(1 << 16, b" "), np.uint8)
      buf = multihost_utils.broadcast_one_to_all(buf)
      summary = json.loads(bytes(np.asarray(buf)).decode().strip())
    return summary


def write_outputs(out_dir: str, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
  """Writes ``per_image.csv`` (one row per image, with its file id) and ``metrics.json``."""
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


def plot_training_curve(history_path: str, out_png: str) -> Optional[str]:
  """Plots training loss, validation Dice and validation HD95 against the step.

  Args:
    history_path: JSON-lines file with {'step', 'loss'} and {'step', 'val_dice', 'val_hd95'}.
    out_png: output PNG path.
  Returns:
    ``out_png``, or None when there is no history.
  """
  if not os.path.exists(history_path):
    return None
  with open(history_path, encoding="utf-8") as f:
    rows = [json.loads(l) for l in f if l.strip()]
  if not rows:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  loss = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
  dice = [(r["step"], r["val_dice"]) for r in rows if r.get("val_dice") is not None]
  hd = [(r["step"], r["val_hd95"]) for r in rows if r.get("val_hd95") is not None]
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for ax, series, name in ((axes[0], loss, "train loss"), (axes[1], dice, "val Dice"),
                           (axes[2], hd, "val HD95 (px)")):
    if series:
      xs, ys = zip(*series)
      ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_title(name)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out_png, dpi=90)
  plt.close(fig)
  return out_png


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        split: Optional[str] = None) -> dict[str, Any]:
  """``--mode=eval``: restores the best (or latest, per ``config.eval.checkpoint``) checkpoint
  from ``workdir/checkpoints`` and evaluates ``split`` (default ``config.data.test_split``),
  writing ``metrics.json``, ``per_image.csv`` and ``overlays/`` into ``workdir``.

  Raises:
    FileNotFoundError: if there is no checkpoint in ``workdir/checkpoints``.
  """
  from sgdc_jax import train  # pylint: disable=g-import-not-at-top
  split = split or config.data.test_split
  s = train.setup(config, load_pretrained=False)
  state, step = restore_for_inference(config, workdir, s.abstract_state)
  evaluator = Evaluator(config, s.model, s.mesh)
  summary = evaluator.evaluate(state, split, out_dir=workdir, overlays=int(config.eval.overlays))
  summary["checkpoint_step"] = step
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "metrics.json"), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2, default=str)
  return summary


def restore_for_inference(config: ml_collections.ConfigDict, workdir: str,
                          abstract_state: Any) -> tuple[Any, int]:
  """Restores the state of the best (``config.eval.checkpoint == 'best'``) or latest checkpoint.

  Raises:
    FileNotFoundError: no checkpoint in ``workdir/checkpoints``.
  """
  from sgdc_jax import checkpointing  # pylint: disable=g-import-not-at-top
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints in {directory}: train first "
                            f"(--mode=train --workdir={workdir})")
  ckpt = checkpointing.Checkpointer(directory, keep_best=config.train.keep_best, read_only=True)
  step = ckpt.best_step() if config.eval.checkpoint == "best" else ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoints in {directory}: train first")
  state, _ = ckpt.restore(step, abstract_state)
  ckpt.close()
  return state, step
