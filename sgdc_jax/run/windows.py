"""Inference on one image at its stored resolution: padding, sliding windows, Gaussian blending,
flip test-time augmentation (`predict_image`, used by `inference.ImagePredictor`).

The image is padded at the bottom and right to a multiple of the encoder stride (32) by
reflection: the padded strip then continues the image's own texture, where zero padding (the
data set's mean colour after normalisation) would draw an artificial border that the
structure-sensitive SGE branch answers with edges, and that bleeds into the last rows and
columns of the prediction. The outputs are cropped back to (H, W).

When the padded image fits in `window` x `window` it is one forward pass. Otherwise windows of
`min(window, padded side)` per axis slide with the given overlap (`window_starts`: evenly
spread, the last one flush with the border, every pixel covered) and their outputs are blended
with a Gaussian importance map (nnU-Net: sigma = window / 8, so a window's centre counts more
than its border, where the receptive field is cut off): `sum(weight * prob) / sum(weight)`.

With `tta='flips'` every window is also predicted flipped horizontally, vertically and both;
outputs are flipped back and averaged. The (window, flip) items go through `predict_fn`
`window_batch` at a time, the last batch padded with zeros to the same size, so the network
compiles once per window shape and its memory is bounded by the window batch; the blended sums
live in float64 NumPy arrays on the host (image-sized, like the result).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Optional

import numpy as np

STRIDE = 32          # the encoder's output stride: network inputs are multiples of it
SIGMA_SCALE = 1 / 8  # Gaussian sigma / window side (nnU-Net)
MIN_WEIGHT = 1e-4    # floor of the importance map (relative to its peak of 1)
TTA_MODES = ("none", "flips")
# (flip rows, flip columns) per test-time augmentation mode.
_FLIPS = {"none": ((False, False),),
          "flips": ((False, False), (False, True), (True, False), (True, True))}

PredictFn = Callable[[Any, np.ndarray], dict[str, Any]]


def round_up(value: int, multiple: int) -> int:
  """The smallest multiple of `multiple` that is >= `value`."""
  return -(-int(value) // int(multiple)) * int(multiple)


def pad_to_multiple(image: np.ndarray, multiple: int = STRIDE) -> np.ndarray:
  """Reflect-pads the bottom and right of `image` to a multiple of `multiple` per side.

  Args:
    image: (H, W, ...) array.
    multiple: side multiple.
  Returns:
    (round_up(H), round_up(W), ...) array whose `[:H, :W]` is `image` (`image` itself when
    nothing is added). The reflection repeats for sides shorter than the pad.
  """
  h, w = image.shape[:2]
  pad_h, pad_w = round_up(h, multiple) - h, round_up(w, multiple) - w
  if not pad_h and not pad_w:
    return image
  widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
  return np.pad(image, widths, mode="reflect")


def window_starts(length: int, window: int, overlap: float) -> list[int]:
  """Start offsets of windows of size `window` along an axis of `length` pixels.

  Windows step by at most `window * (1 - overlap)`, spread evenly so that the first starts at 0
  and the last ends at `length` (flush with the border); together they cover every pixel.

  Args:
    length: the axis length (>= 1).
    window: the window size; an axis no longer than it gets the single start 0.
    overlap: fraction in [0, 1) of a window shared with the next one (at least).
  Returns:
    Increasing starts in [0, max(length - window, 0)].
  """
  if not 0 <= overlap < 1:
    raise ValueError(f"window_starts: overlap must be in [0, 1), got {overlap}")
  if length <= window:
    return [0]
  step = max(int(window * (1 - overlap)), 1)
  count = math.ceil((length - window) / step) + 1
  span = length - window
  return [int(round(i * span / (count - 1))) for i in range(count)]


def importance_1d(size: int, sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
  """float64 (size,): Gaussian centred on the window, sigma = size * sigma_scale, peak 1."""
  centre = (size - 1) / 2
  sigma = max(size * sigma_scale, 1e-6)
  return np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2)


def importance_map(height: int, width: int, *, gaussian_rows: bool = True,
                   gaussian_cols: bool = True, sigma_scale: float = SIGMA_SCALE,
                   min_weight: float = MIN_WEIGHT) -> np.ndarray:
  """float64 (height, width) blending weights of a window: the outer product of per-axis
  Gaussians (flat along an axis with a single window, where nothing is blended), peak 1,
  clamped below at `min_weight` > 0 so that a pixel seen only by window corners keeps a
  well-defined weighted average."""
  rows = importance_1d(height, sigma_scale) if gaussian_rows else np.ones(height)
  cols = importance_1d(width, sigma_scale) if gaussian_cols else np.ones(width)
  weights = np.outer(rows, cols)
  return np.maximum(weights / weights.max(), min_weight)


def batched(items: list, batch_size: int) -> Iterator[list]:
  """Consecutive chunks of `items` of at most `batch_size` elements."""
  for start in range(0, len(items), batch_size):
    yield items[start:start + batch_size]


def _flip(x: np.ndarray, rows: bool, cols: bool) -> np.ndarray:
  """Flips the first (rows) and/or second (cols) axis of `x` (H, W, ...)."""
  if rows:
    x = x[::-1]
  if cols:
    x = x[:, ::-1]
  return x


class _Blend:
  """Running `sum(weight * value)` and `sum(weight)` over a (H, W[, C]) canvas (float64)."""

  def __init__(self, height: int, width: int):
    self.weight = np.zeros((height, width), np.float64)
    self.sums: dict[str, np.ndarray] = {}

  def add(self, name: str, y: int, x: int, value: np.ndarray, weight: np.ndarray) -> None:
    h, w = weight.shape
    if name not in self.sums:
      self.sums[name] = np.zeros(self.weight.shape + value.shape[2:], np.float64)
    w_ = weight.reshape(weight.shape + (1,) * (value.ndim - 2))
    self.sums[name][y:y + h, x:x + w] += w_ * value

  def result(self, name: str, height: int, width: int) -> Optional[np.ndarray]:
    if name not in self.sums:
      return None
    total = self.weight[:height, :width]
    total = total.reshape(total.shape + (1,) * (self.sums[name].ndim - 2))
    return (self.sums[name][:height, :width] / total).astype(np.float32)


def predict_image(predict_fn: PredictFn, variables: Any, image: np.ndarray, *, window: int,
                  overlap: float, window_batch: int, tta: str = "none",
                  batch_multiple: int = 1) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """Probabilities of one image at its own resolution (see the module docstring).

  Args:
    predict_fn: `(variables, images float32 (B, h, w, 3)) -> {'probs': (B, h, w) or
      (B, h, w, C), 'edge' (optional): (B, h, w)}` (NumPy or JAX arrays); B is the same for
      every call with one window shape.
    variables: passed to `predict_fn` unchanged.
    image: float32 (H, W, 3), normalised as the data pipeline does it.
    window: largest network input side (a multiple of 32).
    overlap: fraction in [0, 1) shared by neighbouring windows.
    window_batch: most (window, flip) items per `predict_fn` call (rounded up to a multiple of
      `batch_multiple`).
    tta: 'none' or 'flips' (average over identity, horizontal, vertical and both flips).
    batch_multiple: every batch size is a multiple of it (the mesh's device count).
  Returns:
    `(probs, edge)`: float32 (H, W) or (H, W, C), and float32 (H, W) or None when
    `predict_fn` returns no 'edge'.
  """
  if tta not in _FLIPS:
    raise ValueError(f"predict_image: tta must be one of {TTA_MODES}, got {tta!r}")
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"predict_image: image must be (H, W, 3), got {image.shape}")
  if window < STRIDE or window % STRIDE:
    raise ValueError(f"predict_image: window must be a multiple of {STRIDE}, got {window}")
  height, width = image.shape[:2]
  canvas = pad_to_multiple(np.asarray(image, np.float32))
  ph, pw = canvas.shape[:2]
  wh, ww = min(window, ph), min(window, pw)
  ys, xs = window_starts(ph, wh, overlap), window_starts(pw, ww, overlap)
  weight = importance_map(wh, ww, gaussian_rows=len(ys) > 1, gaussian_cols=len(xs) > 1)
  flips = _FLIPS[tta]
  share = 1.0 / len(flips)  # a power of 2: the average of equal outputs is exact
  items = [(y, x, f) for y in ys for x in xs for f in flips]
  batch_size = min(round_up(window_batch, batch_multiple), round_up(len(items), batch_multiple))
  blend = _Blend(ph, pw)
  for y, x in ((y, x) for y in ys for x in xs):
    blend.weight[y:y + wh, x:x + ww] += weight
  for chunk in batched(items, batch_size):
    batch = np.zeros((batch_size, wh, ww, 3), np.float32)  # fresh: a device may alias it
    for i, (y, x, (fr, fc)) in enumerate(chunk):
      batch[i] = _flip(canvas[y:y + wh, x:x + ww], fr, fc)
    out = predict_fn(variables, batch)
    for name in ("probs", "edge"):
      if name not in out:
        continue
      values = np.asarray(out[name])
      for i, (y, x, (fr, fc)) in enumerate(chunk):
        blend.add(name, y, x, _flip(values[i], fr, fc) * share, weight)
  return blend.result("probs", height, width), blend.result("edge", height, width)
