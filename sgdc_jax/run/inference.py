"""Inference shared by validation, `--mode=eval`, `--mode=predict`, the ablation and diagnose:
the jitted `predict_fn`, the per-image predictor and full-resolution scoring of a split.

`eval.resolution` picks how the network sees an image; either way every record is scored at
the size of the original example `open_source(data_config, split)[index]`:

- 'resize' (default): the network runs on the resized eval batches (`data.image_size`); its
  probabilities are resized back (bilinear) to the original size.
- 'native': `ImagePredictor`, the one path at the stored resolution (`run.windows`: padded to a
  multiple of 32 when the image fits `eval.window`, else Gaussian-blended sliding windows,
  optional flip TTA). `--mode=predict` uses the same `ImagePredictor`.

Probabilities are thresholded (binary) or arg-maxed (multi-class) and scored per image with
`sgdc_jax.metrics.image_metrics` (inside the record's region of interest when it has a 'roi');
the means, standard deviations and empty-mask counts come from `metrics.summarize`. Every record
of the split is scored exactly once (padding rows are skipped by their `valid` flag; a missing
or repeated index raises). `score_split` returns the scores and hands each image to an optional
callback; the caller decides what is written where (`sgdc_jax.reporting`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from sgdc_jax import metrics as metrics_lib
from sgdc_jax.data import pipeline
from sgdc_jax.data import transforms
from sgdc_jax.run import sharding as shd
from sgdc_jax.run import windows

RESOLUTIONS = ("resize", "native")


def predict_probs(variables: dict[str, Any], images: jax.Array, *, apply_fn: Callable,
                  num_classes: int) -> dict[str, jax.Array]:
  """Foreground / class probabilities and SGE edge probabilities.

  Args:
    variables: model variables (params, batch_stats).
    images: float32 (B, H, W, 3), normalised as by the data pipeline (H, W multiples of 32).
    apply_fn: `model.apply`.
    num_classes: 1 (sigmoid) or the number of classes (softmax).
  Returns:
    {'probs': float32 (B, H, W) for binary or (B, H, W, C) for multi-class,
     'edge': float32 (B, H, W) (only when the model returns 'edge_logits')}.
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
  """`jit((variables, images (B, H, W, 3)) -> predict_probs(...))`, outputs split over 'data'
  (B a multiple of the mesh's device count; compiled once per input shape)."""
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


def record_image(record: dict[str, Any], where: str = "record") -> np.ndarray:
  """A source record's image decoded in full: uint8 (H, W, 3) (arrays or encoded bytes).

  Raises:
    ValueError: as `transforms.open_example`, or undecodable bytes.
  """
  image, _ = transforms.open_example(record, where)
  if isinstance(image, Image.Image):
    try:
      image = np.asarray(image)  # decodes at full size
    except (OSError, SyntaxError, ValueError) as e:
      raise ValueError(f"{where}: cannot decode the image: {e}") from e
  return image


def record_roi(record: dict[str, Any]) -> Optional[np.ndarray]:
  """The record's region of interest as bool (H, W) (its 'roi' feature, nonzero = inside;
  a trailing channel is dropped), or None when it has none."""
  if "roi" not in record:
    return None
  roi = np.asarray(record["roi"])
  if roi.ndim == 3 and roi.shape[-1] == 1:
    roi = roi[..., 0]
  return roi > 0


class ImagePredictor:
  """Probabilities of one image at its stored resolution (`eval.resolution='native'`).

  The one path for validation, `--mode=eval`, `--mode=predict`, the ablation and diagnose:
  `windows.predict_image` with `eval.window`, `eval.overlap`, `eval.window_batch` and
  `eval.tta`, normalised with `data.mean`/`data.std` as the data pipeline does.

  Several devices / processes: every process calls it with the same image (the callers walk
  the records in one order), so each window batch is one global array split over the mesh's
  'data' axis; the window batch is rounded up to a multiple of the device count (the padding
  rows are zeros and are ignored) and every process receives the full outputs.
  """

  def __init__(self, config: ml_collections.ConfigDict, model: Any, mesh: jax.sharding.Mesh,
               predict_fn: Optional[Callable] = None):
    self.mesh = mesh
    self.num_classes = int(config.model.num_classes)
    self._predict = predict_fn or make_predict_fn(model, self.num_classes, mesh)
    e = config.eval
    self.window, self.overlap = int(e.window), float(e.overlap)
    self.window_batch, self.tta = int(e.window_batch), str(e.tta)
    self.mean, self.std = tuple(config.data.mean), tuple(config.data.std)
    self.devices = int(mesh.shape[shd.DATA_AXIS])

  def _forward(self, variables: Any, images: np.ndarray, keys: tuple[str, ...]
               ) -> dict[str, np.ndarray]:
    """One window batch (B, h, w, 3), the same on every process -> NumPy outputs."""
    sharding = shd.data_sharding(self.mesh)
    x = jax.make_array_from_callback(images.shape, sharding, lambda i: images[i])
    out = self._predict(variables, x)
    shd.barrier("native_windows")  # everyone compiled this shape before the gathers below
    return {k: shd.global_to_host(v) for k, v in out.items() if k in keys}

  def __call__(self, variables: Any, image: np.ndarray, *, with_edge: bool = True
               ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """uint8 (H, W, 3) RGB -> `(probs (H, W) or (H, W, C), edge (H, W) or None)` float32
    (edge None without `with_edge` or an SGE edge output)."""
    keys = ("probs", "edge") if with_edge else ("probs",)
    return windows.predict_image(
        lambda v, x: self._forward(v, x, keys), variables,
        transforms.normalise(image, self.mean, self.std), window=self.window,
        overlap=self.overlap, window_batch=self.window_batch, tta=self.tta,
        batch_multiple=self.devices)


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
  """Scores every record of a split for a given state (validation, `--mode=eval`, the ablation
  and diagnose), at each record's stored size; `eval.resolution` picks how the network sees it
  (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, model: Any, mesh: jax.sharding.Mesh):
    self.config = config
    self.mesh = mesh
    self.num_classes = int(config.model.num_classes)
    self.resolution = str(config.eval.resolution)
    if self.resolution not in RESOLUTIONS:
      raise ValueError(f"eval.resolution must be one of {RESOLUTIONS}, got {self.resolution!r}")
    self._predict = make_predict_fn(model, self.num_classes, mesh)
    self.predictor = ImagePredictor(config, model, mesh, predict_fn=self._predict)

  def _resized(self, variables: Any, source: Any, split: str, with_edge: bool
               ) -> Iterator[tuple[int, dict[str, Any], np.ndarray, Optional[np.ndarray]]]:
    """`(index, record, probs, edge)` at the record's size, from the resized eval batches
    (each process reads its share; the gathered batch is handled by every process)."""
    for gbatch in global_eval_batches(self.config, self.mesh, split):
      out = self._predict(variables, gbatch["image"])
      shd.barrier("eval_gather")  # everyone compiled `_predict` before the gathers below
      valid = shd.global_to_host(gbatch["valid"]).astype(bool)
      index = shd.global_to_host(gbatch["index"])
      probs = shd.global_to_host(out["probs"])
      edge = shd.global_to_host(out["edge"]) if (with_edge and "edge" in out) else None
      for i in np.flatnonzero(valid):
        idx = int(index[i])
        ex = source[idx]
        h, w = np.shape(ex["mask"])[:2]
        yield (idx, ex, resize_probs(probs[i], h, w),
               resize_probs(edge[i], h, w) if edge is not None else None)

  def _native(self, variables: Any, source: Any, split: str, with_edge: bool
              ) -> Iterator[tuple[int, dict[str, Any], np.ndarray, Optional[np.ndarray]]]:
    """`(index, record, probs, edge)` from `ImagePredictor`: every process walks every record
    in index order (the window batches are split over the devices)."""
    for idx in range(len(source)):
      ex = dict(source[idx])
      ex["image"] = record_image(ex, f"{split} record {idx}")
      probs, edge = self.predictor(variables, ex["image"], with_edge=with_edge)
      yield idx, ex, probs, edge

  def score(self, state: Any, split: str, *,
            visit: Optional[Callable[[ScoredImage], None]] = None
            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Scores every record of `split` once.

    Every process gathers the predictions and scores every image (the same NumPy code on the
    same numbers), so the summary is identical everywhere without a broadcast. A record with a
    'roi' feature is scored inside it (`metrics.image_metrics(..., roi=...)`).

    Args:
      state: a `TrainState` (EMA parameters used when present and `config.eval.use_ema`).
      split: split name for `open_source`/`create_eval_iterator`.
      visit: called (on process 0 only) with each `ScoredImage`, in iterator order.
    Returns:
      `(rows, summary)`: per-image rows (`ScoredImage.row`) sorted by index, and the
      `metrics.summarize` dict (its 'region' and 'n_roi' say whether and how many images were
      scored inside their region of interest) plus 'split' and 'resolution'.
    Raises:
      ValueError: if a record is scored twice or not at all.
    """
    cfg = self.config
    variables = state.eval_variables(use_ema=bool(cfg.eval.use_ema))
    source = pipeline.open_source(cfg.data, split)
    n_records = len(source)
    primary = jax.process_index() == 0
    with_edge = visit is not None
    produce = self._native if self.resolution == "native" else self._resized
    rows: list[dict[str, Any]] = []
    per_image: list[dict[str, Any]] = []
    seen: set[int] = set()
    for idx, ex, probs, edge in produce(variables, source, split, with_edge):
      if idx in seen:
        raise ValueError(f"evaluate: record {idx} of split '{split}' was produced twice")
      seen.add(idx)
      target = target_labels(ex["mask"], self.num_classes)
      pred = to_labels(probs, self.num_classes)
      m = metrics_lib.image_metrics(
          pred, target, num_classes=self.num_classes,
          nsd_tolerance=float(cfg.eval.nsd_tolerance),
          boundary_iou_ratio=float(cfg.eval.boundary_iou_ratio), roi=record_roi(ex))
      per_image.append(m)
      scored = ScoredImage(
          id=decode_id(ex.get("id", idx)), index=idx, image=np.asarray(ex["image"]),
          target=target, pred=pred, edge=edge, metrics=m)
      rows.append(scored.row())
      if primary and visit is not None:
        visit(scored)
    missing = n_records - len(seen)
    if missing:
      raise ValueError(f"evaluate: {missing} of {n_records} records of split '{split}' were "
                       "never produced by the eval iterator")
    summary = metrics_lib.summarize(per_image)
    summary["split"] = split
    summary["resolution"] = self.resolution
    return sorted(rows, key=lambda r: r["index"]), summary
