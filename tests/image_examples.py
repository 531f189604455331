"""Test images shared by the transform and pipeline tests."""
import io

import numpy as np
from PIL import Image


class PatternSource:
  """Dark textured background with one bright off-centre rectangle; mask = bright pixels.

  The mask is derived from the image (threshold), so any misalignment introduced by the
  augmentation shows up as a disagreement between the two.
  """

  def __init__(self, n, size=(40, 56)):
    self.n, self.size = n, size

  def __len__(self):
    return self.n

  def __getitem__(self, index):
    rng = np.random.default_rng(index)
    h, w = self.size
    image = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
    top, left = rng.integers(2, h // 3), rng.integers(2, w // 3)
    image[top:top + h // 3, left:left + w // 2] = rng.integers(200, 256, (h // 3, w // 2, 3))
    mask = (image.mean(-1) > 128).astype(np.uint8)
    return {'image': image, 'mask': mask, 'id': f'pattern_{index}'}


def encode(image: np.ndarray, fmt: str = 'JPEG', **options) -> bytes:
  """Encodes a uint8 array with Pillow (e.g. fmt='JPEG', quality=90, or fmt='PNG')."""
  out = io.BytesIO()
  Image.fromarray(image).save(out, fmt, **options)
  return out.getvalue()
