"""TFDS builder `folder`: your own folders of images and masks, under a name you choose.

Prepare with `python -m sgdc_jax.data.prepare --dataset=folder --name=NAME --manual_dir=DIR`
and read with `--config.data.name=NAME` (plus `--config.data.data_dir` when not the default).

Pairing. `--images` and `--masks` are templates of paths relative to the manual dir with the
placeholders `{id}` (required: the example id; may reach into subfolders, see below),
`{split}` (optional: the split name, no '/'; may repeat) and `*` (any characters except '/').
A file whose relative path matches the image template pairs with the one mask file matching
the mask template for the same `{split}` and `{id}`. Without options the plain layouts are
recognised:

  {split}/images/{id}.*  with  {split}/masks/{id}.*   (e.g. train/, validation/, test/)
  images/{id}.*          with  masks/{id}.*           (no split folders)

Example, folders `trainx/imgx1.jpg` <-> `trainy/imgy1.jpg` (also validation..., test...):
  --images='{split}x/imgx{id}.jpg' --masks='{split}y/imgy{id}.jpg'

Subfolders. `{id}` may hold subfolders: `images/benign/a.png` has the id `benign/a` and pairs
with `masks/benign/a.png`. A path matching both templates belongs to the one whose `{id}`
holds no '/' (so `--images='{id}.*' --masks='masks/{id}.*'` reads `masks/a.png` as a mask).
Files in subfolders that pair with nothing (or are not images) are skipped, named in the
report and kept in the metadata (`ignored_files`); elsewhere they are errors (below).
Symbolic links to files and folders are followed; broken links, loops and a folder reached
twice are errors naming the link (`_common.list_files`).

Splits. With `{split}` in the templates every split found is kept; otherwise all pairs are
split by `--split_ratios` (default train=0.8,validation=0.1,test=0.1): ids ordered by
sha256(f'{SPLIT_SALT}:{id}'), then cut by `_common.split_counts` (seeded, platform-independent,
independent of the file order). With `{split}` and `--split_ratios`, the `train` split is the
one that is divided (e.g. `--split_ratios=train=0.9,validation=0.1` when only train and test
exist).

Masks (exactly one rule):
- default: binary masks with values in {0, 1} or {0, 255} -> {0, 1}; anything else is an error.
- `--mask_threshold=T`: lossy (JPEG) masks, class 1 where value > T (8-bit masks). Pixels
  strictly between AMBIGUOUS_LOW and AMBIGUOUS_HIGH (30 < v < 225) are counted as ambiguous
  per split, printed by `prepare` and stored in the metadata.
- `--mask_classes=V:C,...`: multi-class masks, file value V -> class C; a value missing from
  the map is an error.

Errors (a `ValueError` naming the file): an image without mask, a mask without image, two
images or masks for one id, a file matching both templates, undecodable files, image and mask
of different size, mask values the rule does not accept, a mask whose colour and alpha
channels both carry content (`_common.read_mask_values`). Files matching neither template are
not read; they are listed in the metadata (`ignored_files`) and counted in the report, image
files by name.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
from typing import Sequence

import numpy as np

from sgdc_jax.data import image_io
from sgdc_jax.data.builders import _base
from sgdc_jax.data.builders import _common

SPLIT_SALT = 'sgdc_jax-folder-v1'
DEFAULT_SPLIT_RATIOS = (('train', 0.8), ('validation', 0.1), ('test', 0.1))
# Mask values strictly inside (AMBIGUOUS_LOW, AMBIGUOUS_HIGH) of 255 count as ambiguous.
AMBIGUOUS_LOW, AMBIGUOUS_HIGH = 30, 225
PLAIN_LAYOUTS = (('{split}/images/{id}.*', '{split}/masks/{id}.*'), ('images/{id}.*',
                                                                     'masks/{id}.*'))
_NAME_RE = re.compile(r'[a-z][a-z0-9_]*')
_SPLIT_RE = re.compile(r'[A-Za-z0-9_]+')
_PLACEHOLDER_RE = re.compile(r'\{([^{}]*)\}|\*')


@dataclasses.dataclass(frozen=True)
class FolderOptions:
  """How the files of a manual dir become examples (see the module docstring).

  Attributes:
    images, masks: path templates relative to the manual dir.
    split_ratios: `((split, fraction), ...)` summing to 1, or None (keep the found splits;
      without `{split}` the default ratios apply).
    mask_threshold: class 1 where mask value > threshold (0..254), or None.
    mask_classes: `((file value, class), ...)`, or None.
  """
  images: str
  masks: str
  split_ratios: tuple[tuple[str, float], ...] | None = None
  mask_threshold: int | None = None
  mask_classes: tuple[tuple[int, int], ...] | None = None

  def __post_init__(self):
    if self.mask_threshold is not None and self.mask_classes is not None:
      raise ValueError('--mask_threshold and --mask_classes exclude each other: a threshold '
                       'makes binary masks, a class map multi-class masks')
    if self.mask_threshold is not None and not 0 <= self.mask_threshold <= 254:
      raise ValueError(f'--mask_threshold must be in 0..254, got {self.mask_threshold}')
    if self.mask_classes is not None:
      values = [v for v, _ in self.mask_classes]
      if len(set(values)) != len(values):
        raise ValueError(f'--mask_classes maps a value twice: {self.mask_classes}')
      if any(not 0 <= v <= 65535 or not 0 <= c <= 255 for v, c in self.mask_classes):
        raise ValueError('--mask_classes: values must be in 0..65535 and classes in 0..255, got '
                         f'{self.mask_classes}')
    if self.split_ratios is not None:
      names = [s for s, _ in self.split_ratios]
      if len(set(names)) != len(names) or any(not _SPLIT_RE.fullmatch(s) or s == 'all'
                                               for s in names):
        raise ValueError(f'--split_ratios: split names must be distinct words other than '
                         f"'all', got {names}")
      fractions = [f for _, f in self.split_ratios]
      if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f'--split_ratios must be positive and sum to 1, got {self.split_ratios}')

  def as_dict(self) -> dict:
    """JSON-friendly form, stored in the dataset metadata and compared on reruns."""
    return json.loads(json.dumps(dataclasses.asdict(self)))

  def mask_rule(self) -> str:
    """One line describing how mask values become labels."""
    if self.mask_classes is not None:
      return 'class map ' + ', '.join(f'{v}->{c}' for v, c in self.mask_classes)
    if self.mask_threshold is not None:
      return f'binary: value > {self.mask_threshold} -> 1'
    return 'binary: {0,1} or {0,255} -> {0,1}'


def _parse_pairs(text: str, sep: str, key, value, flag: str, expected: str) -> tuple:
  """'a<sep>b,c<sep>d' -> ((key(a), value(b)), ...); a ValueError naming `flag` otherwise."""
  out = []
  for item in text.split(','):
    left, found, right = item.partition(sep)
    try:
      if not found:
        raise ValueError
      out.append((key(left), value(right)))
    except ValueError:
      raise ValueError(f'{flag}={text!r}: expected {expected}') from None
  return tuple(out)


def parse_split_ratios(text: str) -> tuple[tuple[str, float], ...]:
  """'train=0.8,validation=0.1,test=0.1' -> (('train', 0.8), ...)."""
  return _parse_pairs(text, '=', str.strip, float, '--split_ratios',
                      'SPLIT=FRACTION,... such as train=0.8,validation=0.1,test=0.1')


def parse_mask_classes(text: str) -> tuple[tuple[int, int], ...]:
  """'0:0,128:1,255:2' -> ((0, 0), (128, 1), (255, 2))."""
  return _parse_pairs(text, ':', int, int, '--mask_classes',
                      'VALUE:CLASS,... with integers, such as 0:0,128:1,255:2')


def check_name(name: str | None) -> str:
  """Validates a data set name for `--name` (lower-case snake_case).

  Raises:
    ValueError: missing or malformed name.
  """
  if not name:
    raise ValueError('--dataset=folder needs --name=NAME (the name training reads it by, '
                     'e.g. --config.data.name=NAME)')
  if not _NAME_RE.fullmatch(name):
    raise ValueError(f'--name={name!r}: use lower-case letters, digits and _ , starting with a '
                     'letter (e.g. my_lesions)')
  return name


def template_regex(template: str, flag: str) -> re.Pattern:
  """Compiles a path template (`{id}`, `{split}`, `*`) into a full-match regex.

  Raises:
    ValueError: no or repeated `{id}`, an unknown placeholder, an absolute path.
  """
  if template.startswith('/') or '..' in template.split('/'):
    raise ValueError(f'{flag}={template!r} must be a path relative to the manual dir')
  parts, seen = [], set()
  pos = 0
  for m in _PLACEHOLDER_RE.finditer(template):
    parts.append(re.escape(template[pos:m.start()]))
    pos = m.end()
    if m.group(0) == '*':
      parts.append('[^/]*')
      continue
    key = m.group(1)
    if key not in ('id', 'split'):
      raise ValueError(f'{flag}={template!r}: unknown placeholder {{{key}}}; use {{id}}, '
                       '{split} and *')
    if key in seen:
      if key == 'id':
        raise ValueError(f'{flag}={template!r}: {{id}} may appear only once')
      parts.append(f'(?P={key})')
    elif key == 'id':
      parts.append('(?P<id>[^/]+(?:/[^/]+)*)')  # subfolders included: 'benign/a'
    else:
      parts.append(f'(?P<{key}>[^/]+)')
    seen.add(key)
  parts.append(re.escape(template[pos:]))
  if 'id' not in seen:
    raise ValueError(f'{flag}={template!r} must contain {{id}} (the part that pairs an image '
                     'with its mask)')
  return re.compile(''.join(parts))


def default_templates(manual_dir: str) -> tuple[str, str]:
  """The plain layout found in `manual_dir` (see `PLAIN_LAYOUTS`).

  Raises:
    ValueError: neither plain layout is there (lists both and the pairing options).
  """
  if not os.path.isdir(manual_dir):
    raise ValueError(f'folder: manual dir {manual_dir} does not exist')
  # Archive litter (__MACOSX/ mirrors the folders it came with) is no split.
  entries = {e for e in os.listdir(manual_dir) if not _common.is_ignorable(e)}
  for entry in sorted(entries):
    if all(os.path.isdir(os.path.join(manual_dir, entry, f)) for f in ('images', 'masks')):
      return PLAIN_LAYOUTS[0]
  if {'images', 'masks'} <= entries:
    return PLAIN_LAYOUTS[1]
  splits = '{train,validation,test}'
  raise ValueError(
      f'folder: {manual_dir} holds {", ".join(sorted(entries)[:10]) or "nothing"}, not a plain '
      f'layout:\n  {splits}/images/<id>.<ext> with {splits}/masks/<id>.<ext>\n'
      '  or images/<id>.<ext> with masks/<id>.<ext> (split by --split_ratios);\n'
      "for other layouts give --images='...{id}...' --masks='...{id}...' (placeholders {id}, "
      '{split}, *)')


def _check_extension(manual_dir: str, rel: str, flag: str) -> bool:
  """True for an image file; False for a known harmless file; ValueError otherwise."""
  if rel.lower().endswith(image_io.IMAGE_EXTENSIONS):
    return True
  if _common.is_ignorable(os.path.basename(rel)):
    return False
  raise ValueError(f'{os.path.join(manual_dir, rel)} matches {flag} but is not an image '
                   f'({", ".join(image_io.IMAGE_EXTENSIONS)})')


def _expected_mask(template: str, split: str | None, example_id: str) -> str:
  return template.replace('{split}', split or '').replace('{id}', example_id)


def _match(rel: str, path: str, image_re: re.Pattern, mask_re: re.Pattern,
           options: FolderOptions) -> tuple[str, re.Match] | None:
  """`('images' | 'masks', match)` for a relative path, or None when it matches neither.

  A path matching both templates is the one whose `{id}` holds no '/' (the other match reaches
  into a subfolder); with no such tie-break it is an error.
  """
  m_image, m_mask = image_re.fullmatch(rel), mask_re.fullmatch(rel)
  if m_image and m_mask:
    deep_image, deep_mask = ('/' in m.group('id') for m in (m_image, m_mask))
    if deep_image == deep_mask:
      raise ValueError(f'{path} matches both --images={options.images!r} and '
                       f'--masks={options.masks!r}; make the templates distinct')
    m_image, m_mask = (None, m_mask) if deep_image else (m_image, None)
  if m_image:
    return 'images', m_image
  return ('masks', m_mask) if m_mask else None


def find_pairs(manual_dir: str, options: FolderOptions
              ) -> tuple[dict[str, list[tuple[str, str, str]]], list[str]]:
  """Pairs the files of `manual_dir` and assigns splits.

  Returns:
    `({split: [(id, image_path, mask_path)] in `natural_key` order of id}, ignored paths)`.

  Raises:
    ValueError: see the module docstring (every message names the file).
  """
  image_re = template_regex(options.images, '--images')
  mask_re = template_regex(options.masks, '--masks')
  if ('split' in image_re.groupindex) != ('split' in mask_re.groupindex):
    raise ValueError(f'--images={options.images!r} and --masks={options.masks!r}: {{split}} '
                     'must be in both templates or in neither')
  has_split = 'split' in image_re.groupindex
  found: dict[str, dict[tuple, str]] = {'images': {}, 'masks': {}}
  ignored = []
  for rel in _common.list_files(manual_dir):
    path = os.path.join(manual_dir, rel)
    matched = _match(rel, path, image_re, mask_re, options)
    if matched is None:
      ignored.append(path)
      continue
    what, m = matched
    flag = f'--{what}'
    deep = '/' in m.group('id')
    if deep and not rel.lower().endswith(image_io.IMAGE_EXTENSIONS):
      ignored.append(path)  # a subfolder's extra file: skipped and named, not an error
      continue
    if not _check_extension(manual_dir, rel, flag):
      ignored.append(path)
      continue
    split = m.group('split') if has_split else None
    if split is not None and (not _SPLIT_RE.fullmatch(split) or split == 'all'):
      raise ValueError(f'{path}: split name {split!r} from {{split}} must be a word (letters, '
                       "digits, _) other than 'all'")
    key = (split, m.group('id'))
    if key in found[what]:
      raise ValueError(f'two {what} for id {key[1]!r}: {found[what][key]} and {path}')
    found[what][key] = path
  images, masks = found['images'], found['masks']
  # Unpaired files in subfolders were never read before subfolders were: skip and name them.
  for unpaired, source in ((set(images) - set(masks), images), (set(masks) - set(images), masks)):
    for key in unpaired:
      if '/' in key[1]:
        ignored.append(source.pop(key))
  if not images:
    raise ValueError(f'no file under {manual_dir} matches --images={options.images!r}')
  lacking = sorted(set(images) - set(masks), key=str)
  if lacking:
    split, example_id = lacking[0]
    more = f' ({len(lacking) - 1} more image(s) lack a mask)' if len(lacking) > 1 else ''
    raise ValueError(f'image {images[lacking[0]]} has no mask: expected '
                     f'{os.path.join(manual_dir, _expected_mask(options.masks, split, example_id))}'
                     f' (--masks={options.masks!r}){more}')
  orphans = sorted(set(masks) - set(images), key=str)
  if orphans:
    more = f' ({len(orphans) - 1} more mask(s) without image)' if len(orphans) > 1 else ''
    raise ValueError(f'mask {masks[orphans[0]]} has no image matching --images='
                     f'{options.images!r}{more}')
  by_split: dict[str, dict[str, tuple[str, str, str]]] = {}
  for (split, example_id), image_path in images.items():
    by_split.setdefault(split or '', {})[example_id] = (example_id, image_path,
                                                        masks[(split, example_id)])
  return _assign_splits(by_split, options, has_split), sorted(ignored)


def _assign_splits(by_split, options: FolderOptions, has_split: bool):
  """Keeps the found splits, or divides the pool ('' without {split}, else 'train')."""
  ratios = options.split_ratios
  if not has_split:
    ratios = ratios or DEFAULT_SPLIT_RATIOS
    pool_name = ''
  elif ratios is None:
    return {s: [v[i] for i in sorted(v, key=natural_key)] for s, v in sorted(by_split.items())}
  else:
    pool_name = 'train'
    if 'train' not in by_split:
      raise ValueError(f'--split_ratios divides the train split, but the files give only the '
                       f'splits {sorted(by_split)}')
    clash = sorted(set(s for s, _ in ratios) & (set(by_split) - {'train'}))
    if clash:
      raise ValueError(f'--split_ratios would create split(s) {clash} that the files already '
                       'have')
  pool = by_split.pop(pool_name)
  order = _common.hash_order(pool, SPLIT_SALT)
  counts = _common.split_counts(len(order), [f for _, f in ratios])
  start = 0
  for (split, _), n in zip(ratios, counts):
    by_split[split] = {i: pool[i] for i in order[start:start + n]}
    start += n
  return {s: [v[i] for i in sorted(v, key=natural_key)] for s, v in sorted(by_split.items())}


def natural_key(example_id: str) -> list:
  """Sort key putting 'img2' before 'img10' (records are stored in this order)."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', example_id)]


def labels_from_values(values: np.ndarray, options: FolderOptions, path: str) -> np.ndarray:
  """Mask file values `(H, W)` -> uint8 labels `(H, W)` by the options' mask rule.

  Raises:
    ValueError: values the rule does not accept (names the file, the values and the flag).
  """
  if options.mask_classes is not None:
    table = dict(options.mask_classes)
    present = np.unique(values).tolist()
    unmapped = [v for v in present if v not in table]
    if unmapped:
      shown = ', '.join(str(v) for v in unmapped[:10]) + (' ...' if len(unmapped) > 10 else '')
      raise ValueError(f'mask {path} holds value(s) {shown} that --mask_classes '
                       f'({options.mask_rule()}) does not map')
    out = np.zeros(values.shape, np.uint8)
    for v in present:
      out[values == v] = table[v]
    return out
  if options.mask_threshold is not None:
    if values.dtype != np.bool_ and values.size and values.max() > 255:
      raise ValueError(f'mask {path} has values up to {values.max()}; --mask_threshold works '
                       'on 8-bit masks (0..255)')
    return (values > options.mask_threshold).astype(np.uint8)
  try:
    return _common.binarize_mask(values, path)
  except ValueError as e:
    raise ValueError(f'{e}. For lossy (JPEG) masks pass --mask_threshold=127; for multi-class '
                     'masks --mask_classes=VALUE:CLASS,...') from None


def ambiguous_pixels(values: np.ndarray) -> int:
  """Pixels with AMBIGUOUS_LOW < value < AMBIGUOUS_HIGH (edges of lossy 8-bit masks)."""
  if values.dtype == np.bool_:
    return 0
  return int(np.count_nonzero((values > AMBIGUOUS_LOW) & (values < AMBIGUOUS_HIGH)))


class Folder(_base.SegmentationBuilder, skip_registration=True):
  """Images and masks from a folder, paired by `FolderOptions`; see the module docstring.

  Use `builder_class(name)` for a builder with the data set's own name.
  """

  name = 'folder'
  DESCRIPTION = 'Images and masks prepared from a local folder by sgdc_jax.data.prepare.'
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def __init__(self, *, options: FolderOptions | None = None, **kwargs):
    self.options = options
    if options is not None:
      self.DESCRIPTION = (f'Images and masks prepared from a local folder by '
                          f'sgdc_jax.data.prepare: --images={options.images!r} '
                          f'--masks={options.masks!r}; masks: {options.mask_rule()}.')
      if options.mask_classes is not None:
        self.MASK_DOC = f'class-index mask ({options.mask_rule()})'
    super().__init__(**kwargs)
    self._ambiguous: dict[str, int] = {}
    self._pixels: dict[str, int] = {}
    self._lock = threading.Lock()

  @classmethod
  def check_manual_dir(cls, manual_dir: str) -> None:
    if not os.path.isdir(manual_dir):
      raise ValueError(f'{cls.name}: manual dir {manual_dir} does not exist')

  def _split_generators(self, dl_manager):
    manual_dir = self._resolve_manual_dir(dl_manager)
    if self.options is None:
      raise ValueError(f'{self.name}: the folder builder needs FolderOptions (use '
                       'python -m sgdc_jax.data.prepare --dataset=folder ...)')
    pairs, ignored = find_pairs(manual_dir, self.options)
    self._log.ignored.extend(ignored)
    self.info.metadata['pairing'] = self.options.as_dict()
    return {split: self._generate_examples(items, split) for split, items in pairs.items()}

  def _generate_examples(self, pairs, split):
    return self._generate_pairs(pairs, split)

  def _load_pair(self, image_path: str, mask_path: str, split: str):
    pixels, encoded = _common.read_image(image_path, self._log, split)
    values = _common.read_mask_values(mask_path, self._log, split)
    mask = labels_from_values(values, self.options, mask_path)
    _common.check_same_size(pixels, mask, image_path, mask_path)
    with self._lock:
      self._ambiguous[split] = self._ambiguous.get(split, 0) + ambiguous_pixels(values)
      self._pixels[split] = self._pixels.get(split, 0) + int(values.size)
    return encoded, mask

  def _record_split_done(self, split: str, n: int) -> None:
    with self._lock:
      self.info.metadata['ambiguous_mask_pixels'] = dict(sorted(self._ambiguous.items()))
      self.info.metadata['mask_pixels'] = dict(sorted(self._pixels.items()))
    super()._record_split_done(split, n)


def builder_class(name: str) -> type[Folder]:
  """A `Folder` subclass whose TFDS name is `name` (files go to `data_dir/name/1.0.0`)."""
  check_name(name)
  return type(f'Folder_{name}', (Folder,), {'name': name, '__module__': __name__},
              skip_registration=True)


def folder_options_from_flags(manual_dir: str, images: str | None, masks: str | None,
                              split_ratios: str | None, mask_threshold: int | None,
                              mask_classes: str | None) -> FolderOptions:
  """Builds `FolderOptions` from command-line strings (plain layout when no templates).

  Raises:
    ValueError: one template without the other, malformed values, no plain layout.
  """
  if (images is None) != (masks is None):
    raise ValueError('give both --images and --masks (or neither, for the plain layout)')
  if images is None:
    images, masks = default_templates(manual_dir)
  return FolderOptions(
      images=images,
      masks=masks,
      split_ratios=parse_split_ratios(split_ratios) if split_ratios else None,
      mask_threshold=mask_threshold,
      mask_classes=parse_mask_classes(mask_classes) if mask_classes else None)


def ambiguity_lines(metadata: dict) -> Sequence[str]:
  """Report lines for the ambiguous mask pixels stored in `metadata` (empty when none)."""
  ambiguous = metadata.get('ambiguous_mask_pixels')
  if not ambiguous:
    return []
  total = metadata.get('mask_pixels', {})
  parts = []
  for split, n in ambiguous.items():
    share = f' ({100 * n / total[split]:.2f} %)' if total.get(split) else ''
    parts.append(f'{split}={n}{share}')
  return [f'  ambiguous mask pixels ({AMBIGUOUS_LOW} < v < {AMBIGUOUS_HIGH}): ' + ', '.join(parts)]

