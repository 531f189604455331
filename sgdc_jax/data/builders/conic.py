"""TFDS builder `conic`: CoNIC 2022 nuclei patches, configs `binary` (nuclei vs background)
and `semantic` (7 classes), split by source image (never by patch)."""
from __future__ import annotations

import csv
import os

import numpy as np
import tensorflow_datasets as tfds

from sgdc_jax.data.builders import _base
from sgdc_jax.data.builders import _common

CLASS_NAMES = ('background', 'neutrophil', 'epithelial', 'lymphocyte', 'plasma', 'eosinophil',
               'connective')
# Seeded split of the source images: sources ordered by sha256(f'{SPLIT_SALT}:{source}');
# validation gets round(10 %) and test round(20 %) of them (at least one each), train the rest.
SPLIT_SALT = 'sgdc_jax-conic-v1'
SPLIT_FRACTIONS = {'train': 0.7, 'validation': 0.1, 'test': 0.2}
_FILES = ('images.npy', 'labels.npy', 'patch_info.csv')


def source_of(patch_name: str) -> str:
  """Source image of a patch name such as 'consep_1-0003' -> 'consep_1'."""
  return patch_name.rsplit('-', 1)[0]


def split_patches(names: list[str]) -> dict[str, list[int]]:
  """The documented CoNIC split: {split: sorted patch indices}, grouping patches by source image.

  Raises:
    ValueError: fewer than three source images.
  """
  order = _common.hash_order([source_of(n) for n in names], SPLIT_SALT)
  counts = _common.split_counts(len(order), tuple(SPLIT_FRACTIONS.values()))
  bounds = np.cumsum([0] + counts)
  split_of = {}
  for split, lo, hi in zip(SPLIT_FRACTIONS, bounds[:-1], bounds[1:]):
    split_of.update({source: split for source in order[lo:hi]})
  out = {split: [] for split in SPLIT_FRACTIONS}
  for i, name in enumerate(names):
    out[split_of[source_of(name)]].append(i)
  return out


def read_patch_info(path: str, n: int) -> list[str]:
  """Patch names from `patch_info.csv` (a 'patch_info' column, header optional).

  Raises:
    ValueError: unreadable file, no 'patch_info' column in a multi-column file, a row count
      different from `n`, or duplicate names (the message names the file).
  """
  try:
    with open(path, newline='') as f:
      rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise ValueError(f'cannot read {path}: {e}') from e
  if not rows:
    raise ValueError(f'{path} is empty; expected a patch_info column naming each patch')
  header = [c.strip() for c in rows[0]]
  if 'patch_info' in header:
    col, rows = header.index('patch_info'), rows[1:]
  elif len(header) == 1:
    col = 0
  else:
    raise ValueError(f'{path} has columns {header} but no patch_info column')
  names = [r[col].strip() if col < len(r) else '' for r in rows]
  if len(names) != n:
    raise ValueError(f'{path} names {len(names)} patches but images.npy holds {n}')
  if any(not name for name in names):
    raise ValueError(f'{path} has an empty patch name on data row {names.index("") + 1}')
  if len(set(names)) != len(names):
    dup = next(name for name in names if names.count(name) > 1)
    raise ValueError(f'{path} names patch {dup!r} more than once')
  return names


def _load(path: str) -> np.ndarray:
  try:
    return np.load(path, mmap_mode='r', allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'cannot read {path} as a .npy array: {e}') from e


def load_arrays(manual_dir: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Memory-maps images.npy (N,H,W,3) uint8 and labels.npy (N,H,W,2) int and reads the patch names.

  Raises:
    ValueError: wrong shapes or dtypes, or mismatched counts (the message names the file).
  """
  images_path, labels_path, info_path = (os.path.join(manual_dir, f) for f in _FILES)
  images, labels = _load(images_path), _load(labels_path)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(
        f'{images_path} has shape {images.shape} dtype {images.dtype}; expected (N, H, W, 3) uint8')
  if labels.ndim != 4 or labels.shape[-1] != 2 or not (np.issubdtype(labels.dtype, np.integer) or
                                                       np.issubdtype(labels.dtype, np.floating)):
    raise ValueError(f'{labels_path} has shape {labels.shape} dtype {labels.dtype}; '
                     'expected (N, H, W, 2) integer-valued numbers (instance id, class id)')
  if labels.shape[:3] != images.shape[:3]:
    raise ValueError(
        f'{labels_path} has shape {labels.shape} but {images_path} has {images.shape}; '
        'expected the same (N, H, W)')
  return images, labels, read_patch_info(info_path, images.shape[0])


class Conic(_base.SegmentationBuilder):
  """CoNIC 2022 (Lizard patches): 256x256 H&E colon patches with nuclear class maps."""

  name = 'conic'
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='binary',
                              description='mask 1 where any nucleus (class > 0), else 0'),
      tfds.core.BuilderConfig(name='semantic',
                              description='mask = class id 0..6: ' +
                              ', '.join(f'{i} {c}' for i, c in enumerate(CLASS_NAMES))),
  ]
  DESCRIPTION = (
      'CoNIC 2022 challenge patches (from the Lizard dataset): H&E colon tissue with nuclear '
      'segmentation. Config binary: nuclei vs background; config semantic: class ids '
      f'{dict(enumerate(CLASS_NAMES))}. Split by source image with fractions '
      f'{SPLIT_FRACTIONS} (sha256 of "{SPLIT_SALT}:<source>").')
  HOMEPAGE = 'https://conic-challenge.grand-challenge.org/'
  CITATION = """@article{graham2021conic,
  title={CoNIC: Colon Nuclei Identification and Counting Challenge 2022},
  author={Graham, Simon and Jahanifar, Mostafa and Vu, Quoc Dang and Hadjigeorghiou, Giorgos and Leech, Thomas and Snead, David and Raza, Shan E Ahmed and Minhas, Fayyaz and Rajpoot, Nasir},
  journal={arXiv preprint arXiv:2111.14485},
  year={2021}
}
@inproceedings{graham2021lizard,
  title={Lizard: A Large-Scale Dataset for Colonic Nuclear Instance Segmentation and Classification},
  author={Graham, Simon and Jahanifar, Mostafa and Azam, Ayesha and Nimir, Mohammed and Tsang, Yee-Wah and Dodd, Katherine and Hero, Emily and Sahota, Harvir and Tank, Atisha and Benes, Ksenija and others},
  booktitle={Proceedings of the IEEE/CVF International Conference on Computer Vision Workshops},
  pages={684--693},
  year={2021}
}"""
  IMAGE_FORMAT = 'png'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the CoNIC challenge training data (https://conic-challenge.grand-challenge.org/, 'Data')
and put its files directly into the manual dir:
  images.npy      (4981, 256, 256, 3) uint8 RGB patches
  labels.npy      (4981, 256, 256, 2) [..., 0] instance id, [..., 1] class id 0..6
  patch_info.csv  column patch_info: '<source image>-<patch number>', e.g. consep_1-0000
(counts.csv and README.txt may stay there; they are not used.)
Then run: python -m sgdc_jax.data.prepare --dataset=conic --manual_dir=DIR   (both configs)
"""

  @property
  def MASK_DOC(self):  # pylint: disable=invalid-name
    """What the mask values mean for this config."""
    if self.builder_config.name == 'semantic':
      return 'class id: ' + ', '.join(f'{i} {c}' for i, c in enumerate(CLASS_NAMES))
    return 'binary nuclei mask: 0 background, 1 nucleus'

  @classmethod
  def check_manual_dir(cls, manual_dir: str) -> None:
    """Raises a ValueError listing the expected files when one is missing."""
    missing = [f for f in _FILES if not os.path.isfile(os.path.join(manual_dir, f))]
    if missing:
      raise _common.missing_layout_error(cls.name, manual_dir, list(_FILES), missing)

  def _split_generators(self, dl_manager):
    manual_dir = self._resolve_manual_dir(dl_manager)
    images, labels, names = load_arrays(manual_dir)
    labels_path = os.path.join(manual_dir, 'labels.npy')
    return {
        split: self._generate_examples(images, labels, names, indices, split, labels_path)
        for split, indices in split_patches(names).items()
    }

  def _generate_examples(self, images, labels, names, indices, split, labels_path):
    semantic = self.builder_config.name == 'semantic'
    for i in indices:
      classes = np.asarray(labels[i, ..., 1])
      if classes.dtype.kind == 'f' and not np.array_equal(classes, np.round(classes)):
        raise ValueError(f'{labels_path}: patch {i} ({names[i]}) has non-integer class ids')
      lo, hi = classes.min(), classes.max()
      if lo < 0 or hi >= len(CLASS_NAMES):
        raise ValueError(f'{labels_path}: patch {i} ({names[i]}) has class ids in [{lo}, {hi}]; '
                         f'expected 0..{len(CLASS_NAMES) - 1}')
      mask = classes.astype(np.uint8) if semantic else (classes > 0).astype(np.uint8)
      yield names[i], {
          'image': _common.encode_png(np.asarray(images[i])),
          'mask': mask,
          'id': names[i]
      }
    self._record_split_done(split, len(indices))
