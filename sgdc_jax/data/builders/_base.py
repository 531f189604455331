"""Shared TFDS pieces: the example features, a base builder, and the paired-folder builder.

Every example is `{'image': uint8 (H, W, 3), 'mask': uint8 (H, W), 'id': str}` at the
original resolution. Storage (chosen so full-size dermoscopy archives stay small on disk and
decode without TensorFlow):
- image: `tfds.features.Image`, holding the original JPEG bytes when the source already is an
  RGB JPEG (no re-encoding), else a lossless PNG; decoded with OpenCV or PIL on read.
- mask: `tfds.features.Tensor(shape=(None, None), encoding='zlib')` (raw uint8, compressed).
- id: `IdText`, a `tfds.features.Text` that decodes to a Python `str` with NumPy readers
  (`tfds.data_source`), where the stock feature gives `bytes`.
- roi (only data sets with a region of interest, e.g. DRIVE's field of view): uint8 (H, W),
  1 inside, 0 outside, stored like the mask.
"""
from __future__ import annotations

import collections
from concurrent import futures
import inspect
import os
from typing import Iterator, Sequence

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from sgdc_jax.data import image_io
from sgdc_jax.data.builders import _common

_MAX_DECODE_THREADS = 8


class IdText(tfds.features.Text):
  """`tfds.features.Text` that decodes to `str` (not `bytes`) in `tfds.data_source`."""

  def decode_example_np(self, example_data):
    """Returns the id as `str`."""
    if isinstance(example_data, bytes):
      return example_data.decode('utf-8')
    return example_data


def segmentation_features(image_format: str, mask_doc: str,
                          roi_doc: str | None = None) -> tfds.features.FeaturesDict:
  """The features shared by all builders (see the module docstring); 'roi' when `roi_doc`."""
  features = {
      'image':
          tfds.features.Image(shape=(None, None, 3),
                              dtype=np.uint8,
                              encoding_format=image_format,
                              doc='RGB image, original size'),
      'mask':
          tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding='zlib', doc=mask_doc),
      'id':
          IdText(doc='file / patch id, e.g. ISIC_0000000'),
  }
  if roi_doc is not None:
    features['roi'] = tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding='zlib',
                                           doc=roi_doc)
  return tfds.features.FeaturesDict(features)


class SegmentationBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base for the manual-download segmentation builders.

  Subclasses set the class attributes below and implement `check_manual_dir` and
  `_split_generators`. Output defaults to ArrayRecord. Colour conversions and ignored files
  are counted, logged at the end of each split and stored in `info.metadata`
  ({'conversions': {split: {what: n}}, 'ignored_files': [...]}), with the manual dir's
  `_common.fingerprint` ('manual_dir_fingerprint').
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  DESCRIPTION = ''
  HOMEPAGE = ''
  CITATION = ''
  IMAGE_FORMAT = 'png'
  MASK_DOC = 'binary mask: 0 background, 1 foreground'
  # Set (a doc string) for data sets whose examples carry a region of interest 'roi'.
  ROI_DOC: str | None = None
  # Split sizes of the official release, checked (warning only) after pairing the files.
  OFFICIAL_SPLIT_SIZES: dict[str, int] = {}

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    # TFDS 4.9.10 resolves `code_path` of package-defined builders through the optional
    # `importlib_resources` package (not a dependency here); the source file is all it needs.
    cls.code_path = epath.Path(inspect.getfile(cls))

  def __init__(self, **kwargs):
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)
    self._log = _common.ConversionLog()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=segmentation_features(self.IMAGE_FORMAT, self.MASK_DOC, self.ROI_DOC),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,  # records in sorted-id order; the training pipeline shuffles.
    )

  @classmethod
  def check_manual_dir(cls, manual_dir: str) -> None:
    """Raises ValueError (listing the expected layout) when `manual_dir` is wrong or empty."""
    raise NotImplementedError

  def _resolve_manual_dir(self, dl_manager) -> str:
    """The manual dir, validated; TFDS's AssertionError for a missing dir becomes ValueError."""
    try:
      path = os.fspath(dl_manager.manual_dir)
    except AssertionError as e:
      raise ValueError(str(e)) from None
    self.check_manual_dir(path)
    # Lets a later `prepare` with this manual dir notice added, removed or resized files.
    self.info.metadata['manual_dir_fingerprint'] = _common.fingerprint(path)
    return path

  def _check_official_size(self, split: str, n: int) -> None:
    expected = self.OFFICIAL_SPLIT_SIZES.get(split)
    if expected is not None and expected != n:
      logging.warning('%s %s: found %d examples, the official release has %d.', self.name, split, n,
                      expected)

  def _record_split_done(self, split: str, n: int) -> None:
    """Logs this split's conversions and stores all counts so far in `info.metadata`."""
    self.info.metadata.update(self._log.as_dict())
    counts = dict(self._log.counts.get(split, {}))
    if counts:
      logging.warning('%s %s: %d examples; converted %s', self.name, split, n, counts)
    else:
      logging.info('%s %s: %d examples, no colour conversions', self.name, split, n)

  def _load_pair(self, image_path: str, mask_path: str,
                 split: str) -> tuple[bytes, np.ndarray, int]:
    """Decodes and validates one image/mask pair; returns (stored image bytes, mask (H, W),
    the image's EXIF orientation for further files drawn on it)."""
    pixels, encoded, orientation = _common.read_image(image_path, self._log, split)
    mask = _common.read_mask(mask_path, self._log, split)
    mask = _common.align_mask(mask, pixels.shape, orientation, image_path, mask_path, self._log,
                              split)
    return encoded, mask, orientation

  def _load_example(self, paths: Sequence[str | None], split: str) -> dict:
    """The features of one example but its id, from the paths after the id in a pair tuple
    (`(image_path, mask_path)` here; builders with more files per example override it)."""
    encoded, mask, _ = self._load_pair(*paths, split)
    return {'image': encoded, 'mask': mask}

  def _generate_pairs(self, pairs: Sequence[tuple], split: str) -> Iterator[tuple[str, dict]]:
    """Yields examples from `(id, image_path, mask_path, ...)` tuples, validating every file.

    Files are decoded by a few threads (PIL releases the GIL) with a bounded look-ahead, so
    memory stays at a handful of full-size images; examples come out in the given order.
    """
    workers = max(1, min(_MAX_DECODE_THREADS, os.cpu_count() or 1))
    with futures.ThreadPoolExecutor(workers) as pool:
      pending = collections.deque()
      for k in range(len(pairs)):
        while len(pending) < 2 * workers and k + len(pending) < len(pairs):
          paths = pairs[k + len(pending)][1:]
          pending.append(pool.submit(self._load_example, paths, split))
        example = pending.popleft().result()
        example_id = pairs[k][0]
        yield example_id, {**example, 'id': example_id}
    self._record_split_done(split, len(pairs))


class PairedFolderBuilder(SegmentationBuilder, skip_registration=True):
  """Builder for archives laid out as one image folder + one ground-truth folder per split.

  `SPLIT_FOLDERS = {split: (image_folder, mask_folder)}`; image `<id>.<ext>` pairs with mask
  `<id><MASK_SUFFIX>.<ext>` (suffix matched case-insensitively).
  """

  SPLIT_FOLDERS: dict[str, tuple[str, str]] = {}
  MASK_SUFFIX = '_segmentation'
  IMAGE_FORMAT = 'jpeg'
  MASK_DOC = 'binary lesion mask: 0 background, 1 lesion'

  @classmethod
  def expected_layout(cls) -> list[str]:
    """Relative paths expected in the manual dir, one line each."""
    lines = []
    for image_folder, mask_folder in cls.SPLIT_FOLDERS.values():
      lines.append(f'{image_folder}/ISIC_NNNNNNN.jpg')
      lines.append(f'{mask_folder}/ISIC_NNNNNNN{cls.MASK_SUFFIX}.png')
    return lines

  @classmethod
  def check_manual_dir(cls, manual_dir: str) -> None:
    missing = [
        folder for pair in cls.SPLIT_FOLDERS.values() for folder in pair
        if _common.resolve_dir(manual_dir, folder) is None
    ]
    if missing:
      raise _common.missing_layout_error(cls.name, manual_dir, cls.expected_layout(), missing)

  def _split_generators(self, dl_manager):
    manual_dir = self._resolve_manual_dir(dl_manager)
    generators = {}
    for split, (image_folder, mask_folder) in self.SPLIT_FOLDERS.items():
      pairs = pair_folders(_common.resolve_dir(manual_dir, image_folder),
                           _common.resolve_dir(manual_dir, mask_folder), self.MASK_SUFFIX,
                           self._log)
      self._check_official_size(split, len(pairs))
      generators[split] = self._generate_examples(pairs, split)
    return generators

  def _generate_examples(self, pairs, split):
    return self._generate_pairs(pairs, split)


def pair_folders(image_dir: str,
                 mask_dir: str,
                 mask_suffix: str,
                 log: _common.ConversionLog | None = None) -> list[tuple[str, str, str]]:
  """Pairs `image_dir/<id>.<ext>` with `mask_dir/<id><mask_suffix>.<ext>`.

  Licence/readme files and hidden files are skipped and recorded in `log.ignored`, as are
  ISIC `*_superpixels.png` files in the image folder.

  Returns:
    `[(id, image_path, mask_path)]` sorted by id.

  Raises:
    ValueError: an image without ground truth, a mask without image, an unexpected file,
      duplicate ids, or an empty folder (the message names the file or folder).
  """
  images: dict[str, str] = {}
  for name in sorted(os.listdir(image_dir)):
    path = os.path.join(image_dir, name)
    stem, ext = os.path.splitext(name)
    if _common.is_ignorable(name) or os.path.isdir(path) or stem.lower().endswith('_superpixels'):
      if log is not None:
        log.ignored.append(path)
      continue
    if ext.lower() not in image_io.IMAGE_EXTENSIONS:
      raise ValueError(
          f'unexpected file {path}: not an image ({", ".join(image_io.IMAGE_EXTENSIONS)})')
    if stem in images:
      raise ValueError(f'two images share the id {stem!r}: {images[stem]} and {path}')
    images[stem] = path
  masks: dict[str, str] = {}
  for name in sorted(os.listdir(mask_dir)):
    path = os.path.join(mask_dir, name)
    stem, ext = os.path.splitext(name)
    if _common.is_ignorable(name) or os.path.isdir(path):
      if log is not None:
        log.ignored.append(path)
      continue
    if ext.lower() not in image_io.IMAGE_EXTENSIONS or not stem.lower().endswith(
        mask_suffix.lower()):
      raise ValueError(
          f'unexpected file {path} in the ground-truth folder: expected <id>{mask_suffix}.png')
    example_id = stem[:len(stem) - len(mask_suffix)]
    if example_id in masks:
      raise ValueError(f'two masks share the id {example_id!r}: {masks[example_id]} and {path}')
    masks[example_id] = path
  if not images:
    raise ValueError(f'no images found in {image_dir}')
  lacking = sorted(set(images) - set(masks))
  if lacking:
    more = f' ({len(lacking) - 1} more image(s) lack ground truth)' if len(lacking) > 1 else ''
    raise ValueError(f'image {images[lacking[0]]} has no ground truth: expected '
                     f'{os.path.join(mask_dir, lacking[0] + mask_suffix + ".png")}{more}')
  orphans = sorted(set(masks) - set(images))
  if orphans:
    more = f' ({len(orphans) - 1} more mask(s) without image)' if len(orphans) > 1 else ''
    raise ValueError(
        f'ground truth {masks[orphans[0]]} has no image {orphans[0]}.jpg in {image_dir}{more}')
  return [(i, images[i], masks[i]) for i in sorted(images)]
