"""TFDS builder `isic2016`: ISIC 2016 Challenge Part 1 (lesion segmentation), train / test."""
from __future__ import annotations

from sgdc_jax.data.builders import _base


class Isic2016(_base.PairedFolderBuilder):
  """ISIC 2016 Part 1: 900 training and 379 test dermoscopy images with binary lesion masks."""

  name = 'isic2016'
  DESCRIPTION = (
      'ISBI 2016 / ISIC 2016 Challenge Part 1: lesion segmentation in dermoscopy images. '
      'Masks are stored at full resolution with values {0: background, 1: lesion}.')
  HOMEPAGE = 'https://challenge.isic-archive.com/data/#2016'
  CITATION = """@article{gutman2016skin,
  title={Skin Lesion Analysis toward Melanoma Detection: A Challenge at ISBI 2016},
  author={Gutman, David and Codella, Noel C. F. and Celebi, Emre and Helba, Brian and Marchetti, Michael and Mishra, Nabin and Halpern, Allan},
  journal={arXiv preprint arXiv:1605.01397},
  year={2016}
}"""
  SPLIT_FOLDERS = {
      'train': ('ISBI2016_ISIC_Part1_Training_Data', 'ISBI2016_ISIC_Part1_Training_GroundTruth'),
      'test': ('ISBI2016_ISIC_Part1_Test_Data', 'ISBI2016_ISIC_Part1_Test_GroundTruth'),
  }
  MASK_SUFFIX = '_Segmentation'
  OFFICIAL_SPLIT_SIZES = {'train': 900, 'test': 379}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the four ISIC 2016 Part 1 archives from https://challenge.isic-archive.com/data/#2016
(Training Data, Training Ground Truth, Test Data, Test Ground Truth) and unzip them all into
the manual dir, which must then hold:
  ISBI2016_ISIC_Part1_Training_Data/ISIC_NNNNNNN.jpg                 (900 images)
  ISBI2016_ISIC_Part1_Training_GroundTruth/ISIC_NNNNNNN_Segmentation.png
  ISBI2016_ISIC_Part1_Test_Data/ISIC_NNNNNNN.jpg                     (379 images)
  ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_NNNNNNN_Segmentation.png
Then run: python -m sgdc_jax.data.prepare --dataset=isic2016 --manual_dir=DIR
"""
