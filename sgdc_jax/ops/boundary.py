"""Boundary targets for the SGE edge loss: a morphological gradient of the label map.

One implementation serves the host (NumPy, inside the Grain pipeline) and the device
(jax.numpy, inside a jitted step): it only slices, so `xp` can be either module.
"""
from __future__ import annotations

import numpy as np


def boundary_target(mask, width: int = 2, xp=np):
  """Marks pixels whose `(width+1) x (width+1)` neighbourhood holds more than one label.

  This is the morphological gradient (dilation minus erosion) generalised to label maps:
  across a straight edge the band is exactly `width` pixels thick; `width=2` is the
  classic 3x3 gradient (one pixel each side). For even window sizes the window reaches one
  pixel further up/left. The image frame is not a boundary: the map is edge-replicated
  before filtering, so a lesion cut by the frame gets no band along it.

  Args:
    mask: integer or boolean label map `(..., H, W)`.
    width: band thickness in pixels, >= 1.
    xp: `numpy` or `jax.numpy`.

  Returns:
    `(..., H, W)` array of the same module, dtype uint8, 1 on the boundary band.
  """
  if int(width) != width or width < 1:
    raise ValueError(f'boundary width must be a positive integer, got {width!r}')
  if mask.ndim < 2:
    raise ValueError(f'mask must have shape (..., H, W), got {mask.shape}')
  size = int(width) + 1
  before, after = size // 2, (size - 1) // 2
  height, width_px = mask.shape[-2], mask.shape[-1]
  pad = [(0, 0)] * (mask.ndim - 2) + [(before, after), (before, after)]
  padded = xp.pad(mask, pad, mode='edge')
  lo = hi = None
  for dy in range(size):
    for dx in range(size):
      window = padded[..., dy:dy + height, dx:dx + width_px]
      lo = window if lo is None else xp.minimum(lo, window)
      hi = window if hi is None else xp.maximum(hi, window)
  return (lo != hi).astype(xp.uint8)
