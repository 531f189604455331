"""TFDS builder `isic2018`: ISIC 2018 Challenge Task 1 (lesion boundary segmentation)."""
from __future__ import annotations

from sgdc_jax.data.builders import _base


class Isic2018(_base.PairedFolderBuilder):
  """ISIC 2018 Task 1: 2594 train / 100 validation / 1000 test images with binary lesion masks."""

  name = 'isic2018'
  DESCRIPTION = ('ISIC 2018 Challenge Task 1: lesion boundary segmentation in dermoscopy images. '
                 'Masks are stored at full resolution with values {0: background, 1: lesion}.')
  HOMEPAGE = 'https://challenge.isic-archive.com/data/#2018'
  CITATION = """@article{codella2019skin,
  title={Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge Hosted by the International Skin Imaging Collaboration (ISIC)},
  author={Codella, Noel and Rotemberg, Veronica and Tschandl, Philipp and Celebi, M. Emre and Dusza, Stephen and Gutman, David and Helba, Brian and Kalloo, Aadi and Liopyris, Konstantinos and Marchetti, Michael and Kittler, Harald and Halpern, Allan},
  journal={arXiv preprint arXiv:1902.03368},
  year={2019}
}
@article{tschandl2018ham10000,
  title={The HAM10000 dataset, a large collection of multi-source dermatoscopic images of common pigmented skin lesions},
  author={Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal={Scientific Data},
  volume={5},
  pages={180161},
  year={2018}
}"""
  SPLIT_FOLDERS = {
      'train': ('ISIC2018_Task1-2_Training_Input', 'ISIC2018_Task1_Training_GroundTruth'),
      'validation': ('ISIC2018_Task1-2_Validation_Input', 'ISIC2018_Task1_Validation_GroundTruth'),
      'test': ('ISIC2018_Task1-2_Test_Input', 'ISIC2018_Task1_Test_GroundTruth'),
  }
  MASK_SUFFIX = '_segmentation'
  OFFICIAL_SPLIT_SIZES = {'train': 2594, 'validation': 100, 'test': 1000}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the six ISIC 2018 Task 1 archives from https://challenge.isic-archive.com/data/#2018
(Task 1-2 Training/Validation/Test Input and Task 1 Training/Validation/Test Ground Truth) and
unzip them all into the manual dir, which must then hold:
  ISIC2018_Task1-2_Training_Input/ISIC_NNNNNNN.jpg                   (2594 images)
  ISIC2018_Task1_Training_GroundTruth/ISIC_NNNNNNN_segmentation.png
  ISIC2018_Task1-2_Validation_Input/ISIC_NNNNNNN.jpg                 (100 images)
  ISIC2018_Task1_Validation_GroundTruth/ISIC_NNNNNNN_segmentation.png
  ISIC2018_Task1-2_Test_Input/ISIC_NNNNNNN.jpg                       (1000 images)
  ISIC2018_Task1_Test_GroundTruth/ISIC_NNNNNNN_segmentation.png
(The LICENSE/ATTRIBUTION text files inside the folders are ignored.)
Then run: python -m sgdc_jax.data.prepare --dataset=isic2018 --manual_dir=DIR
"""
