"""Reading and validating image / mask files for the TFDS builders.

Every function here fails early with a `ValueError` that names the offending file; nothing
is skipped silently. Colour-mode conversions (grayscale or RGBA images, RGB or paletted masks
with equal channels) are allowed but counted in a `ConversionLog` so the builders can report
them at the end of preparation.
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
               split: str = '') -> tuple[np.ndarray, bytes]:
  """Decodes an image file (`image_io.IMAGE_EXTENSIONS`) and returns pixels plus bytes to store.

  Grayscale, 16-bit (scaled to 8 bit), RGBA, paletted, CMYK, ... images are converted to RGB
  by `image_io.to_rgb_uint8` and the conversion is counted in `log` under `split`. The
  stored bytes are the original file when it is already an RGB JPEG (no re-encoding loss),
  else a lossless PNG of the decoded RGB pixels.

  Args:
    path: image file.
    log: optional conversion counter.
    split: split name used as the counter key.

  Returns:
    `(pixels, encoded)`: pixels uint8 `(H, W, 3)`; encoded JPEG or PNG bytes.

  Raises:
    ValueError: the file is missing or cannot be decoded (message names the file).
  """
  img = image_io.open_image(path)
  pixels, conversion = image_io.to_rgb_uint8(img, path)
  if conversion is not None:
    if log is not None:
      log.add(split, f'image {conversion}')
    return pixels, encode_png(pixels)
  if img.format == 'JPEG':
    with open(path, 'rb') as f:
      return pixels, f.read()
  return pixels, encode_png(pixels)


def encode_png(pixels: np.ndarray) -> bytes:
  """Lossless PNG bytes of a uint8 `(H, W)` or `(H, W, 3)` array (PIL, no TensorFlow)."""
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format='PNG', compress_level=1)
  return buf.getvalue()


def binarize_mask(values: np.ndarray, path: str) -> np.ndarray:
  """Maps a binary mask to {0, 1}.

  Accepted value sets: any subset of {0, 1} (kept) or of {0, 255} (255 -> 1), so an
  all-background or all-lesion mask is fine.

  Args:
    values: integer or bool array `(H, W)`.
    path: file name for the error message.

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
  shown = ', '.join(str(v) for v in present[:10]) + (' ...' if present.size > 10 else '')
  raise ValueError(
      f'mask {path} holds values {{{shown}}}; expected a binary mask with values in {{0, 1}} '
      'or {0, 255}')


def read_mask_values(path: str, log: ConversionLog | None = None, split: str = '') -> np.ndarray:
  """Decodes a single-channel mask file to its raw integer values `(H, W)`.

  Single-channel masks (L, 1-bit, 16-bit) are read as they are. RGB / RGBA / paletted masks
  are accepted only when their colour channels are equal everywhere; that conversion is
  counted in `log` under `split`.

  Raises:
    ValueError: undecodable file or differing colour channels (message names the file).
  """
  img = image_io.open_image(path)
  mode = img.mode
  if mode in ('1', 'L', 'I') + image_io.SIXTEEN_BIT_MODES:
    return np.asarray(img)
  if mode == 'LA':
    return np.asarray(img)[..., 0]
  rgb = np.asarray(img.convert('RGB'))
  if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
    raise ValueError(f'mask {path} is a colour ({mode}) image whose channels differ; '
                     'expected a single-channel mask')
  if log is not None:
    log.add(split, f'mask {mode}->L')
  return rgb[..., 0]


def read_mask(path: str, log: ConversionLog | None = None, split: str = '') -> np.ndarray:
  """Decodes a binary mask file (`read_mask_values`) and maps it to {0, 1} (`binarize_mask`).

  Returns:
    uint8 `(H, W)` with values in {0, 1}.

  Raises:
    ValueError: undecodable file, differing colour channels, or a non-binary value set.
  """
  return binarize_mask(read_mask_values(path, log, split), path)


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: str, mask_path: str) -> None:
  """Raises ValueError naming both files when `(H, W)` of image and mask differ."""
  if image.shape[:2] != mask.shape[:2]:
    raise ValueError(
        f'mask {mask_path} has size {mask.shape[1]}x{mask.shape[0]} (WxH) but its image '
        f'{image_path} is {image.shape[1]}x{image.shape[0]}')


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
  folders (names starting with '.') are left out."""
  out = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    rel = os.path.relpath(folder, root).replace(os.sep, '/')
    out.extend(n if rel == '.' else f'{rel}/{n}' for n in files if not n.startswith('.'))
  return sorted(out)


def fingerprint(root: str) -> dict:
  """What a manual dir held: file count, total bytes and sha256 over 'relative name\tsize'.

  Stored in the prepared data set's metadata so that a rerun can tell when the files changed
  (names or sizes; contents rewritten in place at the same size are not detected).
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
