"""Inference shared by validation, `--mode=eval` and `--mode=predict`: the jitted `predict_fn`,
resizing back to the original resolution, and full-resolution scoring of a split.

The network runs on the resized eval batches; its probabilities are resized back (bilinear) to
the size of the original example `open_source(data_config, split)[index]`, thresholded (binary)
or arg-maxed (multi-class) and scored per image with `sgdc_jax.metrics.image_metrics`; the
means, standard deviations and empty-mask counts come from `metrics.summarize`. Every record of
the split is scored exactly once (padding rows are skipped by their `valid` flag; a missing or
repeated index raises). `score_split` returns the scores and hands each image to an optional
callback; the caller decides what is written where (`sgdc_jax.reporting`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from sgdc_jax import metrics as metrics_lib
from sgdc_jax.run import sharding as shd
from sgdc_jax.data import pipeline


def predict_probs(variables: dict[str, Any], images: jax.Array, *, apply_fn: Callable,
                  num_classes: int) -> dict[str, jax.Array]:
  """Foreground / class probabilities and SGE edge probabilities.

  Args:
    variables: model variables (params, batch_stats).
    images: float32 (B, S, S, 3), normalised as by the data pipeline.
    apply_fn: `model.apply`.
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


def make_predict_fn(model: Any, num_classes: int, mesh: jax.sharding.Mesh) -> Callable:
  """`jit((variables, images (B, S, S, 3)) -> predict_probs(...))`, outputs split over 'data'."""
  fn = functools.partial(predict_probs, apply_fn=model.apply, num_classes=num_classes)
  return jax.jit(fn, out_shardings=shd.data_sharding(mesh))


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


def decode_id(value: Any) -> str:
  """A record's 'id' feature (bytes, str or a NumPy scalar) as text."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    return decode_id(value.item())
  return str(value)


@dataclasses.dataclass
class ScoredImage:
  """One record of a split at its original resolution.

  Attributes:
    id, index: the record's file id and its index in the split.
    image: uint8 (H, W, 3); target, pred: uint8 (H, W) label maps.
    edge: float32 (H, W) SGE edge probability, or None.
    metrics: `metrics.image_metrics` of (pred, target).
  """
  id: str
  index: int
  image: np.ndarray
  target: np.ndarray
  pred: np.ndarray
  edge: Optional[np.ndarray]
  metrics: dict[str, Any]

  def row(self) -> dict[str, Any]:
    """The per-image CSV row: id, index, size and the numeric metrics."""
    h, w = self.target.shape
    return {"id": self.id, "index": self.index, "height": h, "width": w,
            **{k: v for k, v in self.metrics.items() if isinstance(v, (int, float))}}


def global_eval_batches(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, split: str):
  """Yields every eval batch of `split` as global arrays `{'image', 'valid', 'index'}`
  (`(B, S, S, 3)`, `(B,)`, `(B,)`; padding rows have valid False), on every process."""
  it = pipeline.create_eval_iterator(config.data, split, config.eval.batch_size,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count())
  shd.barrier("eval_start")
  for batch in it:
    shd.barrier("eval_batch")  # a process may still be scoring the previous batch
    local = {k: np.asarray(batch[k]) for k in ("image", "valid", "index")}
    yield shd.host_to_global(local, mesh)


class Scorer:
  """Scores every record of a split for a given state (validation and `--mode=eval`)."""

  def __init__(self, config: ml_collections.ConfigDict, model: Any, mesh: jax.sharding.Mesh):
    self.config = config
    self.mesh = mesh
    self.num_classes = int(config.model.num_classes)
    self._predict = make_predict_fn(model, self.num_classes, mesh)

  def score(self, state: Any, split: str, *,
            visit: Optional[Callable[[ScoredImage], None]] = None
            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Scores every record of `split` once.

    Every process gathers the predictions and scores every image (the same NumPy code on the
    same numbers), so the summary is identical everywhere without a broadcast.

    Args:
      state: a `TrainState` (EMA parameters used when present and `config.eval.use_ema`).
      split: split name for `open_source`/`create_eval_iterator`.
      visit: called (on process 0 only) with each `ScoredImage`, in iterator order.
    Returns:
      `(rows, summary)`: per-image rows (`ScoredImage.row`) sorted by index, and the
      `metrics.summarize` dict plus 'split'.
    Raises:
      ValueError: if a record is scored twice or not at all.
    """
    cfg = self.config
    variables = state.eval_variables(use_ema=bool(cfg.eval.use_ema))
    source = pipeline.open_source(cfg.data, split)
    n_records = len(source)
    primary = jax.process_index() == 0
    rows: list[dict[str, Any]] = []
    per_image: list[dict[str, Any]] = []
    seen: set[int] = set()
    for gbatch in global_eval_batches(cfg, self.mesh, split):
      out = self._predict(variables, gbatch["image"])
      shd.barrier("eval_gather")  # everyone compiled `_predict` before the gathers below
      valid = shd.global_to_host(gbatch["valid"]).astype(bool)
      index = shd.global_to_host(gbatch["index"])
      probs = shd.global_to_host(out["probs"])
      edge = shd.global_to_host(out["edge"]) if "edge" in out else None
      for i in np.flatnonzero(valid):
        idx = int(index[i])
        if idx in seen:
          raise ValueError(f"evaluate: record {idx} of split '{split}' was produced twice")
        seen.add(idx)
        ex = source[idx]
        target = target_labels(ex["mask"], self.num_classes)
        h, w = target.shape
        pred = to_labels(resize_probs(probs[i], h, w), self.num_classes)
        m = metrics_lib.image_metrics(
            pred, target, num_classes=self.num_classes,
            nsd_tolerance=float(cfg.eval.nsd_tolerance),
            boundary_iou_ratio=float(cfg.eval.boundary_iou_ratio))
        per_image.append(m)
        scored = ScoredImage(
            id=decode_id(ex.get("id", idx)), index=idx, image=np.asarray(ex["image"]),
            target=target, pred=pred,
            edge=resize_probs(edge[i], h, w) if (edge is not None and visit) else None,
            metrics=m)
        rows.append(scored.row())
        if primary and visit is not None:
          visit(scored)
    missing = n_records - len(seen)
    if missing:
      raise ValueError(f"evaluate: {missing} of {n_records} records of split '{split}' were "
                       "never produced by the eval iterator")
    summary = metrics_lib.summarize(per_image)
    summary["split"] = split
    return sorted(rows, key=lambda r: r["index"]), summary
