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

What an image file holds beyond one upright picture is decided here, the same way for
`prepare` and `--mode=predict`, and reported by both (`Decoded.notes`):

- EXIF orientation (tag 0x0112, values 2..8: JPEG, and PNG / WebP / TIFF carrying EXIF): applied,
  as `PIL.ImageOps.exif_transpose` does, so the pixels are the picture a viewer shows and a
  predicted mask has its size. (`prepare` turns the image's mask with it: `builders._common`.)
- Animated / multi-page files (GIF, WebP, TIFF): the first frame is used.
- Large images: up to `2 * PIL.Image.MAX_IMAGE_PIXELS` pixels (178,956,970 by default, e.g.
  13,000 x 13,000) are read; those above `PIL.Image.MAX_IMAGE_PIXELS` (89,478,485) are noted
  instead of PIL's `DecompressionBombWarning`; larger ones are refused (`ValueError` naming the
  file), as PIL refuses them, for a file that size is far more likely a mistake or a
  decompression bomb than a photograph.

File names in messages are shown with `shown_path` (undecodable bytes escaped, `bad\\xfe.png`).
"""
from __future__ import annotations

import dataclasses
import os
import re
import warnings

import numpy as np
from PIL import Image

from sgdc_jax.log import shown_path

# File name extensions (lower case) read as images everywhere in the package.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.gif', '.webp')

SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')
_UINT16_MAX = 65535
EXIF_ORIENTATION = 0x0112


def pixel_limits() -> tuple[int | None, int | None]:
  """`(large, refused)`: above `large` pixels an image is noted as large, above `refused` it is
  not read (`PIL.Image.MAX_IMAGE_PIXELS` and twice that, read now; None: no limit)."""
  large = Image.MAX_IMAGE_PIXELS
  return (None, None) if large is None else (int(large), 2 * int(large))


def open_image(path: str) -> Image.Image:
  """Opens and fully decodes `path` with PIL (the first frame of a multi-frame file), without
  PIL's `DecompressionBombWarning` (see the module docstring for the limits).

  Raises:
    ValueError: the file is missing, unreadable, not a decodable image or larger than
      `pixel_limits()[1]` pixels (names the file).
  """
  shown = shown_path(path)
  try:
    # Not thread-safe filters: concurrent calls may leave this one ignore-filter in place,
    # which hides nothing but the warning we replace by a note.
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      img = Image.open(path)
      img.load()
  except FileNotFoundError:
    if os.path.islink(path):
      raise ValueError(f'{shown} is a broken symbolic link (to '
                       f'{shown_path(os.readlink(path))})') from None
    raise ValueError(f'file not found: {shown}') from None
  except Image.DecompressionBombError as e:
    found = re.search(r'\((\d+) pixels\)', str(e))
    size = f'{int(found.group(1)) / 1e6:.3g} Mpx' if found else 'too many pixels'
    raise ValueError(f'image {shown} is too large to read ({size}; the limit is '
                     f'{pixel_limits()[1] / 1e6:.3g} Mpx, twice PIL.Image.MAX_IMAGE_PIXELS, '
                     'a guard against decompression bombs): downscale it or cut it into '
                     'tiles') from None
  except (OSError, SyntaxError, ValueError) as e:
    reason = str(e).replace(f' {path!r}', '')  # PIL's repr of the name, named above already
    raise ValueError(f'cannot decode image file {shown}: {reason}') from e
  return img


def exif_orientation(img: Image.Image) -> int:
  """The EXIF orientation of `img`, 1 (as stored) when absent, unreadable or not in 1..8."""
  try:
    value = img.getexif().get(EXIF_ORIENTATION, 1)
  except Exception:  # pylint: disable=broad-except  # a damaged EXIF block: nothing to apply
    return 1
  return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
  """`array` `(H, W, ...)` as a viewer shows it for EXIF `orientation` (as
  `PIL.ImageOps.exif_transpose`); orientations 5..8 swap height and width."""
  a = array
  if orientation in (2, 3):
    a = a[:, ::-1]
  if orientation in (3, 4, 7):
    a = a[::-1]
  if orientation == 7:
    a = a[:, ::-1]
  if orientation in (5, 6, 7, 8):
    a = a.swapaxes(0, 1)
  if orientation == 6:
    a = a[:, ::-1]
  if orientation == 8:
    a = a[::-1]
  return np.ascontiguousarray(a)


def oriented_shape(shape: tuple[int, ...], orientation: int) -> tuple[int, int]:
  """`(H, W)` of an array of `shape` after `orient(..., orientation)`."""
  return (shape[1], shape[0]) if orientation in (5, 6, 7, 8) else (shape[0], shape[1])


@dataclasses.dataclass(frozen=True)
class Decoded:
  """An image file as the package reads it (rules: module docstring).

  pixels: uint8 `(H, W, 3)`, upright. conversion: as `to_rgb_uint8`. orientation: the file's
  EXIF orientation (1: none; else applied). frames: frames in the file (the first is used).
  format: PIL's name of the file format ('JPEG', 'PNG', ...).
  """
  pixels: np.ndarray
  conversion: str | None
  orientation: int = 1
  frames: int = 1
  format: str | None = None

  def notes(self) -> list[str]:
    """What was decided about this file beyond its colour mode, in words, e.g.
    `['EXIF orientation 6 applied', 'first of 12 frames used',
    'large: above 89.5 Mpx, read (limit 179 Mpx)']`."""
    notes = []
    if self.orientation != 1:
      notes.append(f'EXIF orientation {self.orientation} applied')
    if self.frames > 1:
      notes.append(f'first of {self.frames} frames used')
    large = pixel_limits()[0]
    if large is not None and self.pixels.shape[0] * self.pixels.shape[1] > large:
      notes.append(f'large: above {large / 1e6:.3g} Mpx, read (limit '
                   f'{pixel_limits()[1] / 1e6:.3g} Mpx)')
    return notes


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


def decode(path: str) -> Decoded:
  """Decodes any supported image file to upright uint8 RGB (rules: module docstring).

  Raises:
    ValueError: the file is missing, undecodable, too large or of an unsupported kind (names
      the file).
  """
  img = open_image(path)
  orientation = exif_orientation(img)
  try:
    frames = int(getattr(img, 'n_frames', 1))
  except (OSError, ValueError, EOFError):  # frames past the first cannot be counted
    frames = 1
  pixels, conversion = to_rgb_uint8(img, shown_path(path))
  return Decoded(orient(pixels, orientation), conversion, orientation, frames, img.format)


def read_rgb(path: str) -> np.ndarray:
  """Decodes any supported image file to upright uint8 RGB `(H, W, 3)` (`decode`).

  Raises:
    ValueError: the file is missing, undecodable, too large or of an unsupported kind (names
      the file).
  """
  return decode(path).pixels
