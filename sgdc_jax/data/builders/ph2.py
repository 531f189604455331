"""TFDS builder `ph2`: the PH2 dermoscopy database (200 images), seeded train / test split."""
from __future__ import annotations

import os

from sgdc_jax.data.builders import _base
from sgdc_jax.data import image_io
from sgdc_jax.data.builders import _common

# Seeded split: ids ordered by sha256(f'{SPLIT_SALT}:{id}'); the first 80 % are 'train', the
# rest 'test' (160 / 40 for the full database). Changing the salt changes the split.
SPLIT_SALT = 'sgdc_jax-ph2-v1'
TRAIN_FRACTION = 0.8
_IMAGES_FOLDER = 'PH2 Dataset images'


def split_ids(ids: list[str]) -> dict[str, list[str]]:
  """The documented PH2 split: {'train': [...], 'test': [...]}, each sorted.

  All 200 images are read with TFDS's built-in `split='all'` (= train + test).
  """
  order = _common.hash_order(ids, SPLIT_SALT)
  n_train, _ = _common.split_counts(len(order), (TRAIN_FRACTION, 1.0 - TRAIN_FRACTION))
  return {'train': sorted(order[:n_train]), 'test': sorted(order[n_train:])}


def _find(folder: str, stem: str) -> str | None:
  """`folder/<stem>.<image ext>` (extension case-insensitive), or None."""
  if not os.path.isdir(folder):
    return None
  for name in sorted(os.listdir(folder)):
    s, ext = os.path.splitext(name)
    if s == stem and ext.lower() in image_io.IMAGE_EXTENSIONS:
      return os.path.join(folder, name)
  return None


class Ph2(_base.SegmentationBuilder):
  """PH2: 200 dermoscopic images (768x560 BMP) with binary lesion masks."""

  name = 'ph2'
  DESCRIPTION = (
      'PH2 dermoscopic image database (Hospital Pedro Hispano, Portugal): 200 images with '
      'manual lesion segmentations, values {0: background, 1: lesion}. Splits: train / test '
      f'(seeded 80/20 split by sha256 of "{SPLIT_SALT}:<id>"); split="all" reads all 200.')
  HOMEPAGE = 'https://www.fc.up.pt/addi/ph2%20database.html'
  CITATION = """@inproceedings{mendonca2013ph2,
  title={PH2 - A dermoscopic image database for research and benchmarking},
  author={Mendon{\\c{c}}a, Teresa and Ferreira, Pedro M. and Marques, Jorge S. and Marcal, Andr{\\'e} R. S. and Rozeira, Jorge},
  booktitle={35th Annual International Conference of the IEEE Engineering in Medicine and Biology Society (EMBC)},
  pages={5437--5440},
  year={2013}
}"""
  IMAGE_FORMAT = 'png'
  MASK_DOC = 'binary lesion mask: 0 background, 1 lesion'
  OFFICIAL_SPLIT_SIZES = {'train': 160, 'test': 40}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Request PH2 from https://www.fc.up.pt/addi/ph2%20database.html, extract the archive (PH2Dataset.rar)
into the manual dir, which must then hold:
  PH2Dataset/PH2 Dataset images/IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp
  PH2Dataset/PH2 Dataset images/IMDnnn/IMDnnn_lesion/IMDnnn_lesion.bmp
for the 200 cases (IMD002 ... IMD437). The '...images' folder itself may also be given as the
manual dir. Other files (IMDnnn_roi folders, PH2_dataset.txt/.xlsx) are ignored.
Then run: python -m sgdc_jax.data.prepare --dataset=ph2 --manual_dir=DIR
"""

  @classmethod
  def find_root(cls, manual_dir: str) -> str | None:
    """The folder holding the IMDnnn case folders, or None."""
    nested = os.path.join(manual_dir, 'PH2Dataset', _IMAGES_FOLDER)
    direct = os.path.join(manual_dir, _IMAGES_FOLDER)
    for candidate in (nested, direct, manual_dir):
      if os.path.isdir(candidate) and any(
          n.startswith('IMD') and os.path.isdir(os.path.join(candidate, n))
          for n in os.listdir(candidate)):
        return candidate
    return None

  @classmethod
  def check_manual_dir(cls, manual_dir: str) -> None:
    """Raises a ValueError showing the expected layout when no PH2 root is found."""
    if cls.find_root(manual_dir) is None:
      raise _common.missing_layout_error(cls.name, manual_dir, [
          f'PH2Dataset/{_IMAGES_FOLDER}/IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp',
          f'PH2Dataset/{_IMAGES_FOLDER}/IMDnnn/IMDnnn_lesion/IMDnnn_lesion.bmp'
      ], [f'PH2Dataset/{_IMAGES_FOLDER}/IMDnnn'])

  def _split_generators(self, dl_manager):
    root = self.find_root(self._resolve_manual_dir(dl_manager))
    cases = {}
    for case in sorted(os.listdir(root)):
      case_dir = os.path.join(root, case)
      if not os.path.isdir(case_dir) or _common.is_ignorable(case):
        self._log.ignored.append(case_dir)
        continue
      image = _find(os.path.join(case_dir, f'{case}_Dermoscopic_Image'), case)
      lesion = _find(os.path.join(case_dir, f'{case}_lesion'), f'{case}_lesion')
      if image is None and lesion is None:
        raise ValueError(
            f'case folder {case_dir} holds neither {case}_Dermoscopic_Image/{case}.bmp '
            f'nor {case}_lesion/{case}_lesion.bmp')
      if lesion is None:
        raise ValueError(f'image {image} has no ground truth: expected '
                         f'{os.path.join(case_dir, f"{case}_lesion", f"{case}_lesion.bmp")}')
      if image is None:
        raise ValueError(f'ground truth {lesion} has no image: expected '
                         f'{os.path.join(case_dir, f"{case}_Dermoscopic_Image", f"{case}.bmp")}')
      cases[case] = (case, image, lesion)
    splits = split_ids(list(cases))
    for split, ids in splits.items():
      self._check_official_size(split, len(ids))
    return {
        split: self._generate_examples([cases[i] for i in ids], split)
        for split, ids in splits.items()
    }

  def _generate_examples(self, pairs, split):
    return self._generate_pairs(pairs, split)
