"""Reading and validating image / mask files for the TFDS builders.

Every function here fails early with a `ValueError` that names the offending file; nothing
is skipped silently. Colour-mode conversions (grayscale or RGBA images, RGB or paletted masks
with equal channels, masks with transparency read from the channel that holds the mask), the
unused frames of images, their EXIF orientation (applied, `image_io`; the mask is turned with
its image, `align_mask`) and large images are allowed but counted in a `ConversionLog` so the
builders can report them at the end of preparation.
"""
from __future__ import annotations

import collections
import hashlib
import io
import os
import threading
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from sgdc_jax.data import image_io

# Files that ship with the archives and carry no images (licences, read-me files, OS litter).
_HARMLESS_EXTENSIONS = ('.txt', '.md', '.csv', '.xlsx', '.xls', '.pdf', '.json', '.db', '.ini')


class ConversionLog:
  """Counts colour-mode conversions and ignored files per split, for the preparation report."""

  def __init__(self):
    self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    self.ignored: list[str] = []
    self._lock = threading.Lock()

  def add(self, split: str, what: str) -> None:
    """Counts one conversion, e.g. `what='image L->RGB'` (thread-safe)."""
    with self._lock:
      self.counts[split][what] += 1

  def as_dict(self) -> dict:
    """JSON-friendly summary: {'conversions': {split: {what: n}}, 'ignored_files': [...]}."""
    return {
        'conversions': {
            s: dict(sorted(c.items())) for s, c in sorted(self.counts.items())
        },
        'ignored_files': sorted(self.ignored),
    }

  def summary(self) -> str:
    """One human-readable line per split with conversions, or 'no conversions'."""
    lines = []
    for split, counter in sorted(self.counts.items()):
      items = ', '.join(f'{what}: {n}' for what, n in sorted(counter.items()))
      lines.append(f'{split}: {items}')
    if self.ignored:
      lines.append(
          f'ignored {len(self.ignored)} non-image file(s): {", ".join(sorted(self.ignored)[:10])}' +
          (' ...' if len(self.ignored) > 10 else ''))
    return '\n'.join(lines) if lines else 'no colour conversions, no ignored files'


def read_image(path: str,
               log: ConversionLog | None = None,
               split: str = '') -> tuple[np.ndarray, bytes, int]:
  """Decodes an image file (`image_io.decode`) and returns pixels, bytes to store and the
  EXIF orientation applied (for `align_mask`, which would otherwise read the file again).

  Grayscale, 16-bit (scaled to 8 bit), RGBA, paletted, CMYK, ... images are converted to RGB
  by `image_io.to_rgb_uint8`, an EXIF orientation is applied, the first frame of an animated
  file is used and large images are read; each is counted in `log` under `split`. The stored
  bytes are the original file when it is an RGB JPEG shown as stored (no re-encoding loss),
  else a lossless PNG of the decoded, upright RGB pixels.

  Args:
    path: image file.
    log: optional conversion counter.
    split: split name used as the counter key.

  Returns:
    `(pixels, encoded, orientation)`: pixels uint8 `(H, W, 3)`, upright; encoded JPEG or PNG
    bytes; the file's EXIF orientation (1: none).

  Raises:
    ValueError: the file is missing, cannot be decoded or is too large (message names it).
  """
  decoded = image_io.decode(path)
  for note in decoded.notes():
    _count(log, split, f'image: {note}')
  if decoded.conversion is not None:
    _count(log, split, f'image {decoded.conversion}')
  elif decoded.format == 'JPEG' and decoded.orientation == 1:
    with open(path, 'rb') as f:
      return decoded.pixels, f.read(), decoded.orientation
  return decoded.pixels, encode_png(decoded.pixels), decoded.orientation


def align_mask(mask: np.ndarray, image_shape: Sequence[int], orientation: int, image_path: str,
               mask_path: str, log: ConversionLog | None = None, split: str = '',
               kind: str = 'mask') -> np.ndarray:
  """`mask` (or roi, `kind='roi'`) `(H, W)` turned as its image was, checked against its size.

  An image with an EXIF orientation is read upright (`read_image`); its mask is taken as drawn
  on the image file's pixels as stored (as data sets ship them) and gets the same turn
  (`image_io.orient`), counted. When the orientation swaps height and width and the mask
  already has the upright image's size, it was drawn on the upright view: used as is, counted.

  Args:
    mask: the mask's values `(h, w)`, as read from `mask_path`.
    image_shape: the upright image's shape, `(H, W, ...)`.
    orientation: the image's EXIF orientation, as `read_image` returned it.

  Returns:
    the mask `(H, W)` in the upright image's pixels.

  Raises:
    ValueError: the sizes differ (`check_same_size`).
  """
  upright = tuple(image_shape[:2])
  if orientation != 1:
    stored = image_io.oriented_shape(upright, orientation)  # the turn is its own size inverse
    if mask.shape[:2] == upright != stored:
      _count(log, split, f'{kind}: drawn on the upright view (EXIF orientation {orientation} '
             'of its image), used as is')
    elif mask.shape[:2] == stored:
      mask = image_io.orient(mask, orientation)
      _count(log, split, f'{kind}: turned with its image (EXIF orientation {orientation})')
    else:
      raise ValueError(
          f'{kind} {image_io.shown_path(mask_path)} has size {mask.shape[1]}x{mask.shape[0]} '
          f'(WxH) but its image {image_io.shown_path(image_path)} is {stored[1]}x{stored[0]} '
          f'as stored, {upright[1]}x{upright[0]} as shown (EXIF orientation {orientation})')
  check_same_size(np.empty(upright + (0,), np.uint8), mask, image_path, mask_path, kind)
  return mask


def encode_png(pixels: np.ndarray) -> bytes:
  """Lossless PNG bytes of a uint8 `(H, W)` or `(H, W, 3)` array (PIL, no TensorFlow)."""
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format='PNG', compress_level=1)
  return buf.getvalue()


def binarize_mask(values: np.ndarray, path: str, kind: str = 'mask') -> np.ndarray:
  """Maps a binary mask (or region of interest, `kind='roi'`) to {0, 1}.

  Accepted value sets: any subset of {0, 1} (kept), of {0, 255} (255 -> 1) or, for 16-bit
  masks, of {0, 65535} (65535 -> 1), so an all-background or all-lesion mask is fine.

  Args:
    values: integer or bool array `(H, W)`.
    path: file name for the error message.
    kind: what the file is, for the error message.

  Returns:
    uint8 `(H, W)` with values in {0, 1}.

  Raises:
    ValueError: any other value set (message names the file and the values found).
  """
  if values.dtype == np.bool_:
    return values.astype(np.uint8)
  present = np.unique(values)
  found = set(present.tolist())
  if found <= {0, 1}:
    return values.astype(np.uint8)
  if found <= {0, 255}:
    return (values == 255).astype(np.uint8)
  if found <= {0, 65535} and values.dtype != np.uint8:  # 16-bit binary export
    return (values == 65535).astype(np.uint8)
  shown = ', '.join(str(v) for v in present[:10]) + (' ...' if present.size > 10 else '')
  raise ValueError(
      f'{kind} {path} holds values {{{shown}}}; expected a binary {kind} with values in '
      '{0, 1}, {0, 255} or (16-bit) {0, 65535}')


def read_mask_values(path: str, log: ConversionLog | None = None, split: str = '',
                     kind: str = 'mask') -> np.ndarray:
  """Decodes a mask file (or a region of interest, `kind='roi'`) to its raw values `(H, W)`.

  Single-channel masks (1-bit, L, 16-bit, 32-bit) are read as they are; floating-point masks
  only when every value is an integer. RGB / paletted masks are accepted when their colour
  channels are equal everywhere. Masks with transparency (LA, RGBA, paletted or gray with a
  transparent colour) go through `_split_alpha`. Every conversion is counted in `log` under
  `split`.

  Raises:
    ValueError: undecodable file, differing colour channels, non-integer values, or colour and
      alpha holding different content (message names the file).
  """
  img = image_io.open_image(path)
  mode = img.mode
  frames = getattr(img, 'n_frames', 1)
  if frames > 1:  # a second page may hold labels too: which one is the mask is not ours to pick
    raise ValueError(f'{kind} {image_io.shown_path(path)} has {frames} frames (pages); expected '
                     'a single image')
  orientation = image_io.exif_orientation(img)
  if orientation != 1:  # a mask follows its image's pixels (`align_mask`), not its own tag
    _count(log, split, f'{kind}: own EXIF orientation {orientation} not used')
  if img.has_transparency_data:
    values, how = _split_alpha(img, path, kind)
    _count(log, split, f'{kind} {mode}->{how}')
    return values
  if mode in ('1', 'L', 'I') + image_io.SIXTEEN_BIT_MODES:
    return np.asarray(img)
  if mode == 'F':
    _count(log, split, f'{kind} F->integer')
    return _integer_values(np.asarray(img), path, kind)
  gray = _gray_or_error(np.asarray(img.convert('RGB')), path, mode, kind)
  _count(log, split, f'{kind} {mode}->L')
  return gray


def _count(log: ConversionLog | None, split: str, what: str) -> None:
  if log is not None:
    log.add(split, what)


def _integer_values(values: np.ndarray, path: str, kind: str = 'mask') -> np.ndarray:
  """Float `(H, W)` holding whole numbers in [0, 65535] -> int32; ValueError otherwise (a
  soft / probability mask must not be rounded silently)."""
  finite = np.isfinite(values).all()
  if not finite or not np.array_equal(values, np.round(values)) or (
      values.size and (values.min() < 0 or values.max() > 65535)):
    bad = values[~np.isfinite(values) | (values != np.round(values))]
    example = bad.flat[0] if bad.size else values.max()
    raise ValueError(f'{kind} {path} is a floating-point image with values that are not whole '
                     f'numbers in 0..65535 (e.g. {float(example):g}); expected integer labels')
  return values.astype(np.int32)


def _gray_or_error(rgb: np.ndarray, path: str, mode: str, kind: str = 'mask') -> np.ndarray:
  """Channel 0 of uint8 `(H, W, 3)` whose channels are equal; ValueError otherwise."""
  if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
    raise ValueError(f'{kind} {path} is a colour ({mode}) image whose channels differ; '
                     f'expected a single-channel {kind}')
  return rgb[..., 0]


def _shown(values: np.ndarray) -> str:
  present = np.unique(values)
  return '{' + ', '.join(str(v) for v in present[:6]) + (' ...' if present.size > 6 else '') + '}'


def _split_alpha(img: Image.Image, path: str, kind: str = 'mask') -> tuple[np.ndarray, str]:
  """The mask of an image with transparency, and how it was found.

  Painted masks come both ways: gray/colour values on an opaque image, or paint on a
  transparent layer, where the alpha channel is the mask and the colour is one constant.
  Rules, in order:
  1. alpha constant and not 0 (opaque or evenly translucent): the colour channels hold it.
  2. colour constant over the non-transparent pixels (some pixel opaque, or the colour
     constant everywhere): alpha holds it.
  3. gray equal to alpha everywhere (white paint on transparent black): alpha holds it.
  Otherwise both carry content and neither can be dropped: ValueError saying which holds what.

  Returns:
    `(values (H, W), description)`; values uint8 (16-bit gray keeps its values).
  """
  mode = img.mode
  if mode in image_io.SIXTEEN_BIT_MODES + ('I',) and isinstance(img.info.get('transparency'),
                                                               int):
    colour = np.asarray(img)  # 16-bit gray with one transparent value (PNG tRNS)
    alpha = np.where(colour == img.info['transparency'], 0, 255).astype(np.uint8)
  else:
    rgba = np.asarray(img.convert('RGBA'))
    colour, alpha = rgba[..., :3], rgba[..., 3]
  if alpha.min() == alpha.max() and alpha.flat[0] > 0:
    gray = colour if colour.ndim == 2 else _gray_or_error(colour, path, mode, kind)
    return gray, f'L (alpha {alpha.flat[0]} everywhere, dropped)'
  visible = colour[alpha > 0] if (alpha > 0).any() else colour.reshape(-1, *colour.shape[2:])
  if (visible == visible[:1]).all():
    return alpha, 'alpha (colour constant: alpha holds the mask)'
  gray = colour if colour.ndim == 2 else colour[..., 0]
  if (colour.ndim == 2 or (colour == gray[..., None]).all()) and np.array_equal(gray, alpha):
    return alpha, 'alpha (gray equals alpha)'
  raise ValueError(
      f'{kind} {path} ({mode}) carries content in both its colour and its alpha channel: colour '
      f'{_shown(gray)}, alpha {_shown(alpha)}; expected the mask in one of them with the other '
      'constant (e.g. opaque gray values, or one paint colour on transparency), or a '
      'single-channel mask')


def read_mask(path: str, log: ConversionLog | None = None, split: str = '') -> np.ndarray:
  """Decodes a binary mask file (`read_mask_values`) and maps it to {0, 1} (`binarize_mask`).

  Returns:
    uint8 `(H, W)` with values in {0, 1}.

  Raises:
    ValueError: undecodable file, differing colour channels, or a non-binary value set.
  """
  return binarize_mask(read_mask_values(path, log, split), path)


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: str, mask_path: str,
                    kind: str = 'mask') -> None:
  """Raises ValueError naming both files when `(H, W)` of image and mask (or roi) differ."""
  if image.shape[:2] != mask.shape[:2]:
    turned = (' (width and height swapped: is one of them rotated, e.g. shown by an EXIF '
              'orientation tag when it was drawn?)' if image.shape[:2] == mask.shape[1::-1] else '')
    raise ValueError(
        f'{kind} {image_io.shown_path(mask_path)} has size {mask.shape[1]}x{mask.shape[0]} '
        f'(WxH) but its image {image_io.shown_path(image_path)} is '
        f'{image.shape[1]}x{image.shape[0]}{turned}')


def is_ignorable(name: str) -> bool:
  """True for hidden files and known non-image files (licence/readme/metadata/OS litter)."""
  return name.startswith('.') or name.startswith('__MACOSX') or name.lower().endswith(
      _HARMLESS_EXTENSIONS)


def resolve_dir(parent: str, name: str) -> str | None:
  """`parent/name`, descending into a doubly nested `name/name` left by some unzip tools.

  Returns None when the folder does not exist.
  """
  path = os.path.join(parent, name)
  if not os.path.isdir(path):
    return None
  inner = os.path.join(path, name)
  if os.path.isdir(inner) and not any(n.lower().endswith(image_io.IMAGE_EXTENSIONS)
                                      for n in os.listdir(path)):
    return inner
  return path


def list_files(root: str) -> list[str]:
  """Relative paths ('/'-separated, sorted) of all files under `root`; hidden files and
  folders (names starting with '.') are left out.

  Symbolic links are followed, to files and to folders alike (as `os.path.isdir`, and so the
  layout checks, do), so a linked split or image folder is read and fingerprinted like a
  real one.

  Raises:
    ValueError: a broken link, a link to a folder above it (a loop), a folder reached twice
      (its files would be read twice, e.g. into two splits) or an unreadable folder; the
      message names the link.
  """
  out = []
  first_seen = {os.path.realpath(root): root}  # real folder -> the path it was reached by

  def unreadable(error: OSError):
    raise ValueError(f'cannot list folder {error.filename}: {error.strerror or error}')

  for folder, dirs, files in os.walk(root, onerror=unreadable, followlinks=True):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    for d in dirs:
      _check_new_folder(os.path.join(folder, d), folder, first_seen)
    rel = os.path.relpath(folder, root).replace(os.sep, '/')
    for n in files:
      if n.startswith('.'):
        continue
      path = os.path.join(folder, n)
      if not os.path.exists(path):
        raise ValueError(f'{path} is a broken symbolic link (to {os.readlink(path)}); '
                         'remove it or restore its target')
      out.append(n if rel == '.' else f'{rel}/{n}')
  return sorted(out)


def _check_new_folder(path: str, parent: str, first_seen: dict[str, str]) -> None:
  """Records the real folder of `path`; ValueError for a loop or a folder reached twice."""
  real = os.path.realpath(path)
  if real in first_seen:
    here = os.path.realpath(parent)
    if here == real or here.startswith(real.rstrip(os.sep) + os.sep):
      raise ValueError(f'symbolic link {path} points to {real}, a folder above it (a loop); '
                       'remove the link')
    raise ValueError(f'{path} and {first_seen[real]} are the same folder ({real}, through a '
                     'symbolic link): its files would be read twice, e.g. into two splits; '
                     'remove the link or give each its own files')
  first_seen[real] = path


def fingerprint(root: str) -> dict:
  """What a manual dir held: file count, total bytes and sha256 over 'relative name\tsize'.

  Stored in the prepared data set's metadata so that a rerun can tell when the files changed
  (names or sizes; contents rewritten in place at the same size are not detected). Walks like
  `list_files`, so files behind symbolic links count (and bad links raise ValueError).
  """
  digest = hashlib.sha256()
  total = 0
  names = list_files(root)
  for rel in names:
    size = os.path.getsize(os.path.join(root, rel))
    total += size
    digest.update(f'{rel}\t{size}\n'.encode())
  return {'num_files': len(names), 'num_bytes': total, 'sha256': digest.hexdigest()}


def missing_layout_error(dataset: str, manual_dir: str, expected: Sequence[str],
                         missing: Iterable[str]) -> ValueError:
  """Builds the ValueError for a wrong/empty manual dir, listing everything expected there."""
  if not os.path.isdir(manual_dir):
    state = 'does not exist'
  elif not os.listdir(manual_dir):
    state = 'is empty'
  else:
    held = ', '.join(sorted(os.listdir(manual_dir))[:10])
    state = f'lacks {", ".join(sorted(missing))}; it holds {held}'
  wanted = '\n'.join(f'  {manual_dir.rstrip("/")}/{e}' for e in expected)
  return ValueError(f'{dataset}: manual dir {manual_dir} {state}.\nExpected:\n{wanted}')


def hash_order(names: Iterable[str], salt: str) -> list[str]:
  """Sorts names by sha256(salt + ':' + name): a seeded, platform-independent permutation."""
  return sorted(set(names), key=lambda n: hashlib.sha256(f'{salt}:{n}'.encode()).hexdigest())


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
  """Splits `n` items by `fractions` (summing to 1): every split but the first gets
  max(1, round(f * n)) items and the first gets the rest.

  Raises:
    ValueError: when that leaves the first split empty.
  """
  rest = [max(1, int(round(f * n))) for f in fractions[1:]]
  first = n - sum(rest)
  if first < 1:
    raise ValueError(f'cannot split {n} item(s) into {len(fractions)} non-empty parts')
  return [first] + rest
