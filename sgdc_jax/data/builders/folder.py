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

`{split}` may repeat: every occurrence holds the same text, so split words inside file names
need no per-split templates. DRIVE names its files `training/images/21_training.tif` and
`test/images/01_test.tif`; one template reads both: '{split}/images/{id}_{split}.tif'.

Region of interest (optional). `--rois` is a third template (same placeholders; `{split}` in
all three or in none) for a file per example marking where the image is valid, e.g. the
field-of-view mask of a fundus photograph. Examples then carry `roi`: uint8 (H, W), 1 inside,
0 outside (files: binary masks as for the default mask rule; same size as the image). An image
without its ROI file gets the whole image as ROI; such images are counted per split, named in
the report and listed in the metadata (`missing_rois`). ROI files without an image are skipped
and named like other unpaired files; no ROI file at all is an error (a wrong template).
Without `--rois` the examples, the metadata and the stored pairing options are as before.

Subfolders. `{id}` may hold subfolders: `images/benign/a.png` has the id `benign/a` and pairs
with `masks/benign/a.png`. A path matching both templates belongs to the one whose `{id}`
holds no '/' (so `--images='{id}.*' --masks='masks/{id}.*'` reads `masks/a.png` as a mask).
Files in subfolders that pair with nothing (or are not images) are skipped, named in the
report and kept in the metadata (`ignored_files`); elsewhere they are errors (below).
Symbolic links to files and folders are followed; broken links, loops and a folder reached
twice are errors naming the link (`_common.list_files`).

Splits. With `{split}` in the templates every split found is kept under the name it has;
`--split_folders=FOLDER:SPLIT,...` renames them (e.g. `training:train,test:test`), SPLIT one of
train, validation, test. Every `{split}` value found must be mapped and every mapped one found
(else an error naming the folder); two folders may not map to one split. With
`--split_folders` and no validation split, one is carved out of train by the hash rule below
with CARVED_SPLIT_RATIOS (train=0.9, validation=0.1; `--split_ratios` overrides it, e.g.
`train=1` keeps train whole). Otherwise all pairs are
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
# Carves validation out of train when `--split_folders` maps no folder to it.
CARVED_SPLIT_RATIOS = (('train', 0.9), ('validation', 0.1))
SPLIT_FOLDER_TARGETS = ('train', 'validation', 'test')
ROI_DOC = 'region of interest: 1 inside (e.g. the field of view), 0 outside'
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
    rois: region-of-interest template, or None.
    split_folders: `((value of {split}, split), ...)`, or None (splits keep their names).
  """
  images: str
  masks: str
  split_ratios: tuple[tuple[str, float], ...] | None = None
  mask_threshold: int | None = None
  mask_classes: tuple[tuple[int, int], ...] | None = None
  rois: str | None = None
  split_folders: tuple[tuple[str, str], ...] | None = None

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
    if self.split_folders is not None:
      _check_split_folders(self.split_folders)

  def as_dict(self) -> dict:
    """JSON-friendly form, stored in the dataset metadata and compared on reruns (the newer
    fields only when set, so data sets prepared without them compare equal)."""
    out = json.loads(json.dumps(dataclasses.asdict(self)))
    for key in ('rois', 'split_folders'):
      if out[key] is None:
        del out[key]
    return out

  def templates(self) -> dict[str, str]:
    """`{'images': ..., 'masks': ...[, 'rois': ...]}`: what each kind of file matches."""
    out = {'images': self.images, 'masks': self.masks}
    if self.rois is not None:
      out['rois'] = self.rois
    return out

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


def split_folders_text(split_folders: Sequence[tuple[str, str]]) -> str:
  """((folder, split), ...) -> 'folder:split,...' (the flag's form, for messages)."""
  return ','.join(f'{folder}:{split}' for folder, split in split_folders)


def parse_split_folders(text: str) -> tuple[tuple[str, str], ...]:
  """'training:train,test:test' -> (('training', 'train'), ('test', 'test'))."""

  def word(part: str) -> str:
    if not part.strip():
      raise ValueError
    return part.strip()

  return _parse_pairs(text, ':', word, word, '--split_folders',
                      'FOLDER:SPLIT,... such as training:train,test:test')


def _check_split_folders(split_folders: Sequence[tuple[str, str]]) -> None:
  """ValueError for a folder named twice, a target other than train/validation/test, or two
  folders mapped to one split."""
  text = split_folders_text(split_folders)
  folders = [f for f, _ in split_folders]
  targets = [t for _, t in split_folders]
  twice = sorted({f for f in folders if folders.count(f) > 1})
  if twice:
    raise ValueError(f'--split_folders={text} maps the folder {twice[0]!r} twice')
  if any('/' in f for f in folders):
    raise ValueError(f'--split_folders={text}: folder names are single names, without /')
  unknown = [t for t in targets if t not in SPLIT_FOLDER_TARGETS]
  if unknown:
    raise ValueError(f'--split_folders={text}: {unknown[0]!r} is no split; map each folder to '
                     f'one of {", ".join(SPLIT_FOLDER_TARGETS)}')
  shared = sorted({t for t in targets if targets.count(t) > 1})
  if shared:
    raise ValueError(f'--split_folders={text} maps two folders to {shared[0]!r}; give each '
                     'split one folder')


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


def _match(rel: str, path: str, regexes: dict[str, re.Pattern],
           options: FolderOptions) -> tuple[str, re.Match] | None:
  """`('images' | 'masks' | 'rois', match)` for a relative path, or None when it matches none.

  A path matching several templates is the one whose `{id}` holds no '/' (the other matches
  reach into a subfolder); with no such tie-break it is an error.
  """
  matches = {what: m for what, regex in regexes.items() if (m := regex.fullmatch(rel))}
  if len(matches) > 1:
    shallow = {what: m for what, m in matches.items() if '/' not in m.group('id')}
    if len(shallow) != 1:
      clash = shallow or matches
      named = ' and '.join(f'--{what}={getattr(options, what)!r}' for what in clash)
      raise ValueError(f'{path} matches {"both" if len(clash) == 2 else "all of"} {named}; '
                       'make the templates distinct')
    matches = shallow
  return next(iter(matches.items()), None)


def find_pairs(manual_dir: str, options: FolderOptions
              ) -> tuple[dict[str, list[tuple]], list[str]]:
  """Pairs the files of `manual_dir` and assigns splits.

  Returns:
    `({split: [(id, image_path, mask_path)] in `natural_key` order of id}, ignored paths)`;
    with `options.rois` the tuples end with the ROI path (None: the image has no ROI file).

  Raises:
    ValueError: see the module docstring (every message names the file).
  """
  templates = options.templates()
  regexes = {what: template_regex(t, f'--{what}') for what, t in templates.items()}
  with_split = [what for what, regex in regexes.items() if 'split' in regex.groupindex]
  if with_split and len(with_split) != len(regexes):
    shown = ' and '.join(f'--{what}={t!r}' for what, t in templates.items())
    where = 'both templates or in neither' if len(regexes) == 2 else 'all templates or in none'
    raise ValueError(f'{shown}: {{split}} must be in {where}')
  has_split = bool(with_split)
  if options.split_folders is not None and not has_split:
    raise ValueError(f'--split_folders={split_folders_text(options.split_folders)} renames the '
                     f'folders {{split}} stands for, but --images={options.images!r} has no '
                     '{split}')
  found: dict[str, dict[tuple, str]] = {what: {} for what in templates}
  ignored = []
  for rel in _common.list_files(manual_dir):
    path = os.path.join(manual_dir, rel)
    matched = _match(rel, path, regexes, options)
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
    if (split is not None and options.split_folders is None and
        (not _SPLIT_RE.fullmatch(split) or split == 'all')):
      raise ValueError(f'{path}: split name {split!r} from {{split}} must be a word (letters, '
                       "digits, _) other than 'all' (or rename it with --split_folders)")
    key = (split, m.group('id'))
    if key in found[what]:
      raise ValueError(f'two {what} for id {key[1]!r}: {found[what][key]} and {path}')
    found[what][key] = path
  # Before pairing: a folder the map lacks explains the unpaired files it would give.
  names = _split_names(found, options) if has_split else {None: ''}
  images, masks = found['images'], found['masks']
  # Unpaired files in subfolders were never read before subfolders were: skip and name them.
  for unpaired, source in ((set(images) - set(masks), images), (set(masks) - set(images), masks)):
    for key in unpaired:
      if '/' in key[1]:
        ignored.append(source.pop(key))
  rois = found.get('rois')
  if rois is not None:  # ROI files without an image: skipped and named
    ignored.extend(rois.pop(key) for key in set(rois) - set(images))
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
  if rois is not None and not rois:
    raise ValueError(f'no file under {manual_dir} matching --rois={options.rois!r} pairs with an '
                     f'image (--images={options.images!r}); check the template')
  by_split: dict[str, dict[str, tuple]] = {}
  for (split, example_id), image_path in images.items():
    extra = () if rois is None else (rois.get((split, example_id)),)
    by_split.setdefault(names[split], {})[example_id] = (
        example_id, image_path, masks[(split, example_id)]) + extra
  return _assign_splits(by_split, options, has_split), sorted(ignored)


def _split_names(found: dict[str, dict[tuple, str]], options: FolderOptions) -> dict[str, str]:
  """{value of {split}: split name}: itself, or its `--split_folders` name.

  Args:
    found: {'images' | 'masks' | 'rois': {(value of {split}, id): path}}.

  Raises:
    ValueError: a value found that the map lacks (names a file), or a mapped one not found.
  """
  paths = {key: path for files in found.values() for key, path in files.items()}
  values = sorted({split for split, _ in paths})
  if options.split_folders is None:
    return {s: s for s in values}
  mapping = dict(options.split_folders)
  text = split_folders_text(options.split_folders)
  for split in values:
    if split not in mapping:
      example = next(p for files in found.values() for (s, _), p in sorted(files.items())
                     if s == split)  # an image when there is one
      raise ValueError(f'{example}: its split folder {split!r} is not in --split_folders={text}; '
                       f'add {split}:SPLIT (SPLIT one of {", ".join(SPLIT_FOLDER_TARGETS)})')
  absent = [folder for folder in mapping if folder not in values]
  if absent and values:  # no file at all: find_pairs says that no file matches --images
    raise ValueError(f'--split_folders={text} names the folder {absent[0]!r}, but no file '
                     f'matching --images={options.images!r} or the other templates is there '
                     f'(split folders found: {", ".join(values) or "none"})')
  return mapping


def _assign_splits(by_split, options: FolderOptions, has_split: bool):
  """Keeps the found splits, or divides the pool ('' without {split}, else 'train')."""
  ratios = options.split_ratios
  if (ratios is None and options.split_folders is not None and 'train' in by_split and
      'validation' not in by_split):
    ratios = CARVED_SPLIT_RATIOS
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
      if type(self).DESCRIPTION == Folder.DESCRIPTION:  # presets (drive) keep their own
        rois = f' --rois={options.rois!r}' if options.rois is not None else ''
        self.DESCRIPTION = (f'Images and masks prepared from a local folder by '
                            f'sgdc_jax.data.prepare: --images={options.images!r} '
                            f'--masks={options.masks!r}{rois}; masks: {options.mask_rule()}.')
      if options.mask_classes is not None:
        self.MASK_DOC = f'class-index mask ({options.mask_rule()})'
      if options.rois is not None:
        self.ROI_DOC = ROI_DOC
    super().__init__(**kwargs)
    self._ambiguous: dict[str, int] = {}
    self._pixels: dict[str, int] = {}
    self._rois: dict[str, int] = {}
    self._missing_rois: dict[str, list[str]] = {}
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
    pixels, encoded, orientation = _common.read_image(image_path, self._log, split)
    values = _common.read_mask_values(mask_path, self._log, split)
    mask = labels_from_values(values, self.options, mask_path)
    mask = _common.align_mask(mask, pixels.shape, orientation, image_path, mask_path, self._log,
                              split)
    with self._lock:
      self._ambiguous[split] = self._ambiguous.get(split, 0) + ambiguous_pixels(values)
      self._pixels[split] = self._pixels.get(split, 0) + int(values.size)
    return encoded, mask, orientation

  def _load_example(self, paths, split):
    encoded, mask, orientation = self._load_pair(*paths[:2], split)
    example = {'image': encoded, 'mask': mask}
    if self.options.rois is not None:
      example['roi'] = self._load_roi(paths[2], paths[0], mask.shape, orientation, split)
    return example

  def _load_roi(self, roi_path: str | None, image_path: str, shape: tuple[int, int],
                orientation: int, split: str) -> np.ndarray:
    """uint8 `(H, W)` region of interest, 1 inside; the whole image (counted) without a file.

    Raises:
      ValueError: undecodable or non-binary file, or a size other than the image's (names it).
    """
    with self._lock:
      if roi_path is None:
        self._missing_rois.setdefault(split, []).append(image_path)
      else:
        self._rois[split] = self._rois.get(split, 0) + 1
    if roi_path is None:
      return np.ones(shape, np.uint8)
    values = _common.read_mask_values(roi_path, self._log, split, kind='roi')
    roi = _common.binarize_mask(values, roi_path, kind='roi')
    return _common.align_mask(roi, shape, orientation, image_path, roi_path, self._log, split,
                              kind='roi')

  def _record_split_done(self, split: str, n: int) -> None:
    with self._lock:
      self.info.metadata['ambiguous_mask_pixels'] = dict(sorted(self._ambiguous.items()))
      self.info.metadata['mask_pixels'] = dict(sorted(self._pixels.items()))
      if self.options.rois is not None:
        self.info.metadata['roi_files'] = dict(sorted(self._rois.items()))
        self.info.metadata['missing_rois'] = {
            s: sorted(paths) for s, paths in sorted(self._missing_rois.items())}
    super()._record_split_done(split, n)


def builder_class(name: str) -> type[Folder]:
  """A `Folder` subclass whose TFDS name is `name` (files go to `data_dir/name/1.0.0`)."""
  check_name(name)
  return type(f'Folder_{name}', (Folder,), {'name': name, '__module__': __name__},
              skip_registration=True)


def folder_options_from_flags(manual_dir: str, images: str | None, masks: str | None,
                              split_ratios: str | None, mask_threshold: int | None,
                              mask_classes: str | None, rois: str | None = None,
                              split_folders: str | None = None) -> FolderOptions:
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
      mask_classes=parse_mask_classes(mask_classes) if mask_classes else None,
      rois=rois,
      split_folders=parse_split_folders(split_folders) if split_folders else None)


def roi_lines(metadata: dict) -> Sequence[str]:
  """Report lines for the regions of interest (empty for data sets without them)."""
  if 'roi_files' not in metadata:
    return []
  found, missing = metadata['roi_files'], metadata.get('missing_rois', {})
  counts = ', '.join(f'{s}={found.get(s, 0)}' for s in sorted(set(found) | set(missing)))
  lines = [f'  region-of-interest files: {counts}']
  lacking = [p for s in sorted(missing) for p in missing[s]]
  if lacking:
    shown = ', '.join(lacking[:5]) + (f' and {len(lacking) - 5} more' if len(lacking) > 5 else '')
    lines.append(f'  {len(lacking)} image(s) without a region-of-interest file (whole image '
                 f'used): {shown}')
  return lines


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

