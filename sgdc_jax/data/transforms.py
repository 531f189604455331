"""Per-example transforms of the input pipeline: check, decode, resize, augment, normalise.

Geometry follows one convention throughout: pixel centres at half-integers, a crop box
`(x0, y0, x1, y1)` in continuous source coordinates, output pixel `j` sampling the source at
`x0 + (j + 0.5) * (x1 - x0) / W_out` (PyTorch `align_corners=False`). Images are resampled
bilinearly (Pillow, which widens the filter when shrinking, i.e. antialiased), masks by nearest
neighbour from the same box, so both stay aligned. Flips and 90-degree rotations are exact
index permutations applied to both.

Images stay uint8 until `normalise`, the last step: crop, resize, flips and turns run in
Pillow on uint8 pixels, and `colour_jitter_uint8` applies the colour matrix in Pillow too
(`colour_jitter`, in float32, is its reference).

Encoded images (the JPEG/PNG bytes the TFDS builders store) may be decoded at reduced size:
a JPEG decoder can emit the image at 1/2, 1/4 or 1/8 scale almost for free (DCT scaling,
Pillow's `Image.draft`). With `draft=True`, `resize_pair` and `crop_flip_rotate` pick the
smallest such scale at which the crop box still covers at least the output size, so the
bilinear resize that follows still shrinks; the box is mapped to the reduced image
(`box / scale`: a scaled pixel `i` covers source pixels `[scale * i, scale * (i + 1))`).
Masks are never reduced. The result is close to, not equal to, full decode + resize (the
tests bound the difference); without a scale of at least 2 nothing changes.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DRAFT_SCALES = (8, 4, 2)  # the JPEG decoder's DCT scaling factors (besides 1)


def check_example(example, where: str = 'example'):
  """Validates one raw example and returns `(image, mask)` as contiguous uint8 arrays.

  Accepts a mask of shape (H, W) or (H, W, 1) (TFDS `Image` features carry the channel).

  Args:
    example: dict with 'image' uint8 (H, W, 3) and 'mask' uint8 (H, W) or (H, W, 1).
    where: text naming the example in errors (dataset, split, index).

  Returns:
    image uint8 (H, W, 3), mask uint8 (H, W).

  Raises:
    ValueError: a field is missing or has the wrong dtype, rank or size.
  """
  _require_fields(example, where)
  image, mask = np.asarray(example['image']), _check_mask(example['mask'], where)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'{where}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}')
  _check_same_size(mask, image.shape[:2], where)
  return np.ascontiguousarray(image), mask


def _require_fields(example, where: str) -> None:
  for key in ('image', 'mask'):
    if key not in example:
      raise ValueError(f'{where}: missing field {key!r} (fields: {sorted(example)})')


def _check_same_size(mask: np.ndarray, size, where: str) -> None:
  if mask.shape != tuple(size):
    raise ValueError(f'{where}: mask size {mask.shape} differs from image size {tuple(size)}')


def _check_mask(mask, where: str) -> np.ndarray:
  mask = np.asarray(mask)
  if mask.ndim == 3 and mask.shape[-1] == 1:
    mask = mask[..., 0]
  if mask.dtype != np.uint8 or mask.ndim != 2:
    raise ValueError(f'{where}: mask must be uint8 (H, W), got {mask.dtype} {mask.shape}')
  return np.ascontiguousarray(mask)


def open_example(example, where: str = 'example'):
  """`check_example` for examples whose 'image' may be encoded bytes (JPEG or PNG).

  Encoded images are opened (header only) and returned as a not yet decoded PIL image, so
  the resize can decode them at reduced size; arrays are returned as by `check_example`.

  Returns:
    image: uint8 (H, W, 3) array or RGB `PIL.Image.Image`; mask: uint8 (H, W).

  Raises:
    ValueError: as `check_example`; undecodable bytes or an image that is not RGB.
  """
  _require_fields(example, where)
  if not isinstance(example['image'], (bytes, bytearray, memoryview)):
    return check_example(example, where)
  image = open_encoded(bytes(example['image']), where)
  mask = _check_mask(example['mask'], where)
  _check_same_size(mask, (image.height, image.width), where)
  return image, mask


def open_encoded(data: bytes, where: str = 'image') -> Image.Image:
  """Opens encoded image bytes without decoding the pixels (decoding happens on first use).

  Raises:
    ValueError: the bytes are not an image Pillow can read, or not 8-bit RGB.
  """
  try:
    image = Image.open(io.BytesIO(data))
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f'{where}: cannot read the encoded image: {e}') from e
  if image.mode != 'RGB':
    raise ValueError(f'{where}: encoded image has mode {image.mode!r}; RGB expected')
  return image


def draft_scale(box, size) -> int:
  """Largest JPEG DCT scale s in (8, 4, 2) with the box at 1/s still >= `size`, else 1.

  Args:
    box: `(x0, y0, x1, y1)` in source pixels.
    size: `(H_out, W_out)`.
  """
  shrink = min((box[2] - box[0]) / size[1], (box[3] - box[1]) / size[0])
  return next((s for s in DRAFT_SCALES if shrink >= s), 1)


def _decoded(image, box, size, draft: bool, where: str):
  """`(PIL image, box in its pixels)`: arrays wrapped, encoded images decoded (maybe reduced)."""
  if not isinstance(image, Image.Image):
    return Image.fromarray(image), box
  if draft and image.format == 'JPEG':
    scale = draft_scale(box, size)
    if scale > 1:
      width, height = image.size
      # Pillow takes the largest scale s with (W // request) >= s; W // s requests exactly s.
      _, reduced = image.draft('RGB', (width // scale, height // scale))
      scale = width / reduced[2]
      box = tuple(v / scale for v in box)
  try:
    image.load()
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f'{where}: cannot decode the image: {e}') from e
  return image, box


def resize_pair(image, mask: np.ndarray, size, box=None, draft: bool = False,
                where: str = 'image'):
  """Resamples the region `box` of an image/mask pair to `size`.

  Args:
    image: uint8 (H, W, 3) array, or an RGB PIL image from `open_encoded` (not yet decoded).
    mask: uint8 (H, W) label map.
    size: `(H_out, W_out)`.
    box: `(x0, y0, x1, y1)` floats in source pixel coordinates; the whole image if None.
    draft: decode a JPEG at reduced size when that keeps >= `size` pixels in the box (see the
      module docstring); ignored for arrays and other formats.
    where: names the example in decoding errors.

  Returns:
    image uint8 (H_out, W_out, 3) (bilinear, antialiased when shrinking),
    mask uint8 (H_out, W_out) (nearest; labels are never mixed).
  """
  return crop_flip_rotate(image, mask, size, box, False, False, 0, draft=draft, where=where)


def random_crop_box(rng: np.random.Generator, height: int, width: int, scale=(0.5, 1.0),
                    ratio=(3 / 4, 4 / 3)):
  """Random-resized-crop box: area fraction in `scale`, aspect (w/h) log-uniform in `ratio`.

  The box is clipped to the image, so its area fraction can fall below `scale[0]` only at
  extreme aspect ratios. `scale=(1, 1)` and `ratio=(1, 1)` on a square image give the full
  image.

  Args:
    rng: NumPy generator.
    height, width: source size in pixels.
    scale: (min, max) fraction of the source area, 0 < min <= max <= 1.
    ratio: (min, max) box aspect ratio width / height, 0 < min <= max.

  Returns:
    `(x0, y0, x1, y1)` floats in source pixel coordinates.
  """
  if not 0 < scale[0] <= scale[1] <= 1:
    raise ValueError(f'crop scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}')
  if not 0 < ratio[0] <= ratio[1]:
    raise ValueError(f'crop ratio must satisfy 0 < min <= max, got {tuple(ratio)}')
  area = height * width * rng.uniform(scale[0], scale[1])
  aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
  box_w = min(float(width), np.sqrt(area * aspect))
  box_h = min(float(height), np.sqrt(area / aspect))
  x0 = rng.uniform(0.0, width - box_w)
  y0 = rng.uniform(0.0, height - box_h)
  return (x0, y0, x0 + box_w, y0 + box_h)


_TURNS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180,
          3: Image.Transpose.ROTATE_270}


def crop_flip_rotate(image, mask: np.ndarray, size, box, hflip: bool, vflip: bool,
                     quarter_turns: int, draft: bool = False, where: str = 'image'):
  """`resize_pair(image, mask, size, box)` followed by `flip_rotate(...)`, all in Pillow.

  Same result as the two NumPy-level steps (the tests check this), several times faster
  because no strided 3-channel copies are made.

  Args:
    image: uint8 (H, W, 3) array, or an RGB PIL image from `open_encoded` (not yet decoded).
    mask: uint8 (H, W).
    size: `(H_out, W_out)` of the resampled box (before turning).
    box: `(x0, y0, x1, y1)` in source pixel coordinates, or None for the whole image.
    hflip, vflip, quarter_turns: as in `flip_rotate`.
    draft, where: as in `resize_pair`.

  Returns:
    image uint8 (H', W', 3), mask uint8 (H', W'); (H', W') is `size`, swapped for odd turns.
  """
  out_h, out_w = int(size[0]), int(size[1])
  height, width = mask.shape
  full = (0.0, 0.0, float(width), float(height))
  box = full if box is None else tuple(float(v) for v in box)
  pil_image, image_box = _decoded(image, box, (out_h, out_w), draft, where)
  pil_mask = Image.fromarray(mask)
  if box != full or (height, width) != (out_h, out_w):
    pil_image = pil_image.resize((out_w, out_h), Image.BILINEAR, box=image_box)
    pil_mask = pil_mask.resize((out_w, out_h), Image.NEAREST, box=box)
  elif pil_image.size != (width, height):  # reduced decode of an image already at `size`
    pil_image = pil_image.resize((out_w, out_h), Image.BILINEAR, box=image_box)
  ops = []
  if hflip:
    ops.append(Image.Transpose.FLIP_LEFT_RIGHT)
  if vflip:
    ops.append(Image.Transpose.FLIP_TOP_BOTTOM)
  if quarter_turns % 4:
    ops.append(_TURNS[quarter_turns % 4])
  for op in ops:
    pil_image, pil_mask = pil_image.transpose(op), pil_mask.transpose(op)
  return np.asarray(pil_image), np.asarray(pil_mask)


def random_patch(rng: np.random.Generator, height: int, width: int, crop, scale=(1.0, 1.0)):
  """Random `crop` window of the example resized by a random factor (patch training).

  The factor `s` is drawn uniformly from `scale` (no draw for `(1, 1)`); the scaled example
  has `round(n * s)` (>= 1) pixels along a side of n, i.e. that side's exact factor
  `s_axis = round(n * s) / n`. Along a side at least `crop` long the window starts at a
  uniformly drawn whole pixel of the scaled example; along a shorter side the whole side is
  taken and placed at a uniformly drawn offset of the window (the rest is padding). Draws:
  `s`, then the row, then the column offset.

  Args:
    rng: NumPy generator.
    height, width: stored size of the example, >= 1.
    crop: `(h, w)` of the window.
    scale: `(min, max)` of the factor, 0 < min <= max.

  Returns:
    box: `(x0, y0, x1, y1)` in stored pixels (whole numbers when `s == 1`);
    content: `(h', w')` pixels the box is resampled to, `min(crop, scaled size)` per side;
    offset: `(top, left)` of the content in the window (0 along a side that is cut).
  """
  factor = rng.uniform(scale[0], scale[1]) if tuple(scale) != (1.0, 1.0) else 1.0
  box, content, offset = [], [], []
  for stored, window in ((int(height), int(crop[0])), (int(width), int(crop[1]))):
    scaled = max(1, int(round(stored * factor)))
    shift = int(rng.integers(abs(scaled - window) + 1))
    if scaled >= window:
      per_pixel = stored / scaled  # stored pixels per scaled pixel
      box.append((shift * per_pixel, (shift + window) * per_pixel))
      content.append(window)
      offset.append(0)
    else:
      box.append((0.0, float(stored)))
      content.append(scaled)
      offset.append(shift)
  (y0, y1), (x0, x1) = box
  return (x0, y0, x1, y1), tuple(content), tuple(offset)


def crop_patch(image, mask: np.ndarray, box, size, hflip: bool, vflip: bool,
               quarter_turns: int, draft: bool = False, where: str = 'image'):
  """`crop_flip_rotate`, with a box of whole pixels as large as `size` cut out exactly.

  Returns:
    image uint8 (H', W', 3), mask uint8 (H', W'); (H', W') is `size`, swapped for odd turns.
  """
  x0, y0, x1, y1 = box
  exact = (all(float(v).is_integer() for v in box)
           and (round(y1 - y0), round(x1 - x0)) == tuple(int(v) for v in size))
  if exact:
    x0, y0, x1, y1 = (int(v) for v in box)
    if isinstance(image, Image.Image):
      image = _decoded(image, box, size, False, where)[0].crop((x0, y0, x1, y1))
      image = np.asarray(image)
    else:
      image = image[y0:y1, x0:x1]
    mask, box = mask[y0:y1, x0:x1], None
    image = np.ascontiguousarray(image)
    mask = np.ascontiguousarray(mask)
  return crop_flip_rotate(image, mask, size, box, hflip, vflip, quarter_turns, draft=draft,
                          where=where)


def place_in_window(image: np.ndarray, mask: np.ndarray, window, offset, hflip: bool,
                    vflip: bool, quarter_turns: int):
  """Pads flipped/turned content to the flipped/turned window: zero image, background mask.

  Equals padding the content at `offset` of `window` first and then applying
  `flip_rotate(..., hflip, vflip, quarter_turns)` to the padded pair (the tests check this),
  so the padding can follow colour jitter and normalisation (zeros = the normalisation mean).

  Args:
    image: (h', w', C) content after the flips and turns (any dtype; padding is 0).
    mask: (h', w') content labels after the flips and turns (padding is 0, background).
    window: `(H, W)` before turning; offset: `(top, left)` of the content in it, before
      flipping and turning.
    hflip, vflip, quarter_turns: as applied to the content (see `flip_rotate`).

  Returns:
    image (H', W', C), mask (H', W'): `window`, swapped for odd turns.
  """
  rows, cols = int(window[0]), int(window[1])
  top, left = int(offset[0]), int(offset[1])
  height, width = (mask.shape if quarter_turns % 2 == 0 else mask.shape[::-1])
  if hflip:
    left = cols - width - left
  if vflip:
    top = rows - height - top
  for _ in range(quarter_turns % 4):  # one counter-clockwise turn: (r, c) -> (W - 1 - c, r)
    top, left = cols - left - width, top
    rows, cols, height, width = cols, rows, width, height
  out_image = np.zeros((rows, cols) + image.shape[2:], image.dtype)
  out_mask = np.zeros((rows, cols), mask.dtype)
  out_image[top:top + height, left:left + width] = image
  out_mask[top:top + height, left:left + width] = mask
  return out_image, out_mask


def flip_rotate(image: np.ndarray, mask: np.ndarray, hflip: bool, vflip: bool, quarter_turns: int):
  """Applies the same flips and `np.rot90` (counter-clockwise) turns to image and mask.

  Args:
    image: (H, W, C); mask: (H, W).
    hflip: mirror left-right; vflip: mirror top-bottom; quarter_turns: 0..3.

  Returns:
    contiguous (image, mask); H and W swap for odd `quarter_turns`.
  """
  if hflip:
    image, mask = image[:, ::-1], mask[:, ::-1]
  if vflip:
    image, mask = image[::-1], mask[::-1]
  if quarter_turns % 4:
    image = np.rot90(image, quarter_turns, axes=(0, 1))
    mask = np.rot90(mask, quarter_turns, axes=(0, 1))
  return np.ascontiguousarray(image), np.ascontiguousarray(mask)


# RGB <-> YIQ: hue is a rotation of the (I, Q) chroma plane, saturation its scaling.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], np.float64)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _jitter_affine(image: np.ndarray, rng: np.random.Generator, brightness: float,
                   contrast: float, saturation: float, hue: float):
  """Draws the jitter factors; returns `(A, offset)` with jittered pixel = A @ rgb + offset.

  Brightness, saturation and hue compose into one 3x3 colour matrix M; contrast blends
  `M x` with its mean luma, which folds into A = c M and a per-image offset
  `(1 - c) * luma(M @ channel means)`, in the units of `image` (float [0, 1] or uint8).
  """
  b = rng.uniform(1 - brightness, 1 + brightness) if brightness else 1.0
  c = rng.uniform(1 - contrast, 1 + contrast) if contrast else 1.0
  s = rng.uniform(1 - saturation, 1 + saturation) if saturation else 1.0
  h = rng.uniform(-hue, hue) * 2 * np.pi if hue else 0.0
  chroma = np.array([[1.0, 0.0, 0.0],
                     [0.0, s * np.cos(h), -s * np.sin(h)],
                     [0.0, s * np.sin(h), s * np.cos(h)]])
  matrix = b * (_YIQ_TO_RGB @ chroma @ _RGB_TO_YIQ)
  offset = 0.0
  if c != 1.0:
    height, width, channels = image.shape
    rows = np.ascontiguousarray(image).reshape(height, width * channels)
    channel_means = rows.sum(axis=0, dtype=np.float64).reshape(width, channels).sum(axis=0)
    channel_means /= height * width
    offset = (1.0 - c) * float(_RGB_TO_YIQ[0] @ (matrix @ channel_means))
  return c * matrix, offset


def colour_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.0,
                  contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
  """Random brightness, contrast, saturation and hue change of a float image in [0, 1].

  Brightness, saturation and hue compose into one 3x3 colour matrix (hue rotates the YIQ
  chroma plane by up to `hue * 360` degrees, saturation scales it); contrast then blends with
  the mean luma. Factors are drawn uniformly from `[1 - v, 1 + v]`; a 0 disables a jitter.
  This float version is the reference of `colour_jitter_uint8`.

  Args:
    image: float32 (H, W, 3) in [0, 1].
    rng: NumPy generator.
    brightness, contrast, saturation: jitter strengths >= 0.
    hue: fraction of a full turn, 0 <= hue <= 0.5.

  Returns:
    float32 (H, W, 3) clipped to [0, 1].
  """
  matrix, offset = _jitter_affine(image, rng, brightness, contrast, saturation, hue)
  out = _pixel_matmul(image, matrix.T.astype(np.float32))
  if offset:
    out += np.float32(offset)
  return np.clip(out, 0.0, 1.0, out=out)


def colour_jitter_uint8(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.0,
                        contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
  """`colour_jitter` on uint8 pixels: the same draws and colour matrix, applied by Pillow.

  Equals `round(255 * colour_jitter(image / 255, rng, ...))` up to float rounding (so within
  half a grey level of the float result), without leaving uint8.

  Args:
    image: uint8 (H, W, 3).
    rng, brightness, contrast, saturation, hue: as in `colour_jitter` (same draws in the
      same order, so the same generator state gives the same jitter).

  Returns:
    uint8 (H, W, 3).
  """
  matrix, offset = _jitter_affine(image, rng, brightness, contrast, saturation, hue)
  if not offset and np.array_equal(matrix, np.eye(3)):
    return image
  # Pillow's 12-tuple: row r = (a_r0, a_r1, a_r2, offset_r); it rounds and clips to [0, 255].
  affine = np.concatenate([matrix, np.full((3, 1), offset)], axis=1)
  return np.asarray(Image.fromarray(image).convert('RGB', tuple(float(v) for v in affine.ravel())))


def _pixel_matmul(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """`image @ matrix` for (H, W, 3) x (3, 3), in blocks that keep BLAS single-threaded.

  One multi-threaded BLAS call on a busy 2-core host spin-waits for longer than the work.
  """
  flat = image.reshape(-1, image.shape[-1])
  out = np.empty((flat.shape[0], matrix.shape[1]), np.float32)
  for start in range(0, flat.shape[0], 8192):
    np.matmul(flat[start:start + 8192], matrix, out=out[start:start + 8192])
  return out.reshape(image.shape[:-1] + (matrix.shape[1],))


def normalise(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
  """`(image / 255 - mean) / std` per channel.

  Args:
    image: uint8 (H, W, 3) in [0, 255], or float (H, W, 3) already in [0, 1].

  Returns:
    float32 (H, W, 3).
  """
  if image.ndim != 3 or image.shape[-1] != len(mean) or len(std) != len(mean):
    raise ValueError(f'normalise: image (H, W, {len(mean)}) expected, got {image.shape}')
  scale = 1.0 / 255.0 if image.dtype == np.uint8 else 1.0
  height, width, channels = image.shape
  # Constants tiled along W * C: broadcasting over a length-3 inner axis is ~4x slower.
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  gain = np.tile(scale / std, width).astype(np.float32)
  shift = np.tile(mean / std, width).astype(np.float32)
  rows = np.ascontiguousarray(image).reshape(height, width * channels).astype(np.float32)
  rows *= gain
  rows -= shift
  return rows.reshape(height, width, channels)
