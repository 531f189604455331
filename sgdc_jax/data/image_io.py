"""Decoding image files to uint8 RGB: the one place the package turns a file into pixels.

Used by the TFDS builders (`sgdc_jax.data.builders`) and by prediction, so every entry point
accepts the same files (`IMAGE_EXTENSIONS`) and converts them the same way:

- 8-bit RGB: as stored.
- 8-bit grayscale, 1-bit, paletted, RGBA / LA (alpha dropped), CMYK, YCbCr: PIL's
  `convert('RGB')`.
- 16-bit grayscale (PIL modes 'I;16', 'I;16L', 'I;16B', 'I;16N', e.g. 16-bit PNG or TIFF) and
  32-bit integer images (mode 'I') holding values in [0, 65535]: scaled to 8 bit by
  `v8 = round(v16 * 255 / 65535)` (the full 16-bit range maps onto the full 8-bit range; no
  per-image stretching) and repeated over the three channels. `convert('RGB')` would clip
  every value above 255 to white.
- Anything else (floating-point 'F' images, 'I' images with values outside [0, 65535], files
  PIL cannot decode): `ValueError` naming the file.

EXIF orientation is not applied: pixels are used as stored, like the masks that go with them.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

# File name extensions (lower case) read as images everywhere in the package.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.gif', '.webp')

SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')
_UINT16_MAX = 65535


def open_image(path: str) -> Image.Image:
  """Opens and fully decodes `path` with PIL.

  Raises:
    ValueError: the file is missing, unreadable or not a decodable image (names the file).
  """
  try:
    img = Image.open(path)
    img.load()
  except FileNotFoundError:
    if os.path.islink(path):
      raise ValueError(f'{path} is a broken symbolic link (to {os.readlink(path)})') from None
    raise ValueError(f'file not found: {path}') from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f'cannot decode image file {path}: {e}') from e
  return img


def scale_16bit(values: np.ndarray) -> np.ndarray:
  """Maps integers in [0, 65535] to uint8 by `round(v * 255 / 65535)` (exact, half up)."""
  v = values.astype(np.int64)
  return ((v * 255 + _UINT16_MAX // 2) // _UINT16_MAX).astype(np.uint8)


def to_rgb_uint8(img: Image.Image, path: str) -> tuple[np.ndarray, str | None]:
  """Converts a decoded PIL image to uint8 RGB by the rules in the module docstring.

  Args:
    img: an image from `open_image`.
    path: its file name, for error messages.

  Returns:
    `(pixels, conversion)`: pixels uint8 `(H, W, 3)`; conversion None for 8-bit RGB, else a
    short description such as `'L->RGB'` or `'I;16->RGB (16-bit scaled to 8-bit)'`.

  Raises:
    ValueError: floating-point images, or 'I' images with values outside [0, 65535].
  """
  mode = img.mode
  if mode == 'RGB':
    return np.asarray(img, dtype=np.uint8), None
  if mode in SIXTEEN_BIT_MODES or mode == 'I':
    values = np.asarray(img)
    if mode == 'I' and values.size and (values.min() < 0 or values.max() > _UINT16_MAX):
      raise ValueError(f'image {path} is a 32-bit integer image with values in '
                       f'[{values.min()}, {values.max()}]; expected 8-bit, or 16-bit values in '
                       f'[0, {_UINT16_MAX}]')
    gray = scale_16bit(values)
    return np.repeat(gray[..., None], 3, axis=-1), f'{mode}->RGB (16-bit scaled to 8-bit)'
  if mode.startswith('F') or mode.startswith('I'):
    raise ValueError(f'image {path} has PIL mode {mode!r} (floating point or unsupported integer '
                     'layout); expected an 8-bit or 16-bit image')
  return np.asarray(img.convert('RGB'), dtype=np.uint8), f'{mode}->RGB'


def read_rgb(path: str) -> np.ndarray:
  """Decodes any supported image file to uint8 RGB `(H, W, 3)` (rules: module docstring).

  Raises:
    ValueError: the file is missing, undecodable or of an unsupported kind (names the file).
  """
  return to_rgb_uint8(open_image(path), path)[0]
