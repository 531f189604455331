"""TFDS builder `drive`: DRIVE retinal vessels, a preset of the `folder` builder.

One command: `python -m sgdc_jax.data.prepare --dataset=drive --manual_dir=DIR`, DIR holding
the official `training/` and `test/` folders. The preset is `DRIVE_OPTIONS`: images, vessel
masks (1st_manual) and field-of-view masks (`roi`) paired by `{id}`, where the repeated
`{split}` matches the split word in the file names; `--split_folders=training:train,test:test`;
validation carved out of train by the folder hash rule (`folder.CARVED_SPLIT_RATIOS`: 18 / 2
of the 20 training images; `--split_ratios` overrides it). Examples: image uint8 (584, 565, 3),
mask {0, 1} (vessel), roi {0, 1} (field of view).
"""
from __future__ import annotations

import os

from sgdc_jax.data.builders import _common
from sgdc_jax.data.builders import folder

DRIVE_OPTIONS = folder.FolderOptions(
    images='{split}/images/{id}_{split}.tif',
    masks='{split}/1st_manual/{id}_manual1.gif',
    rois='{split}/mask/{id}_{split}_mask.gif',
    split_folders=(('training', 'train'), ('test', 'test')))
_FOLDERS = ('training/images', 'training/1st_manual', 'training/mask', 'test/images',
            'test/1st_manual', 'test/mask')
_LAYOUT = ('training/images/21_training.tif ... 40_training.tif',
           'training/1st_manual/21_manual1.gif ...', 'training/mask/21_training_mask.gif ...',
           'test/images/01_test.tif ... 20_test.tif', 'test/1st_manual/01_manual1.gif ...',
           'test/mask/01_test_mask.gif ...')


class Drive(folder.Folder):
  """DRIVE: 40 fundus photographs (565x584 TIFF) with vessel and field-of-view masks (GIF)."""

  name = 'drive'
  DESCRIPTION = (
      'DRIVE (Digital Retinal Images for Vessel Extraction): 40 colour fundus photographs, '
      'manual vessel segmentations (1st_manual, values {0: background, 1: vessel}) and '
      'field-of-view masks (roi: 1 inside). Splits: test (the official 20), train and '
      'validation (the official 20 training images divided by the folder hash rule).')
  HOMEPAGE = 'https://drive.grand-challenge.org/'
  CITATION = """@article{staal2004ridge,
  title={Ridge-based vessel segmentation in color images of the retina},
  author={Staal, Joes and Abr{\\`a}moff, Michael D. and Niemeijer, Meindert and Viergever, Max A. and van Ginneken, Bram},
  journal={IEEE Transactions on Medical Imaging},
  volume={23},
  number={4},
  pages={501--509},
  year={2004}
}"""
  MASK_DOC = 'binary vessel mask: 0 background, 1 vessel'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download DRIVE from https://drive.grand-challenge.org/ and unzip it so that the manual dir
holds:
  """ + '\n  '.join(_LAYOUT) + """
Then run: python -m sgdc_jax.data.prepare --dataset=drive --manual_dir=DIR
"""

  def __init__(self, *, options: folder.FolderOptions | None = None, **kwargs):
    super().__init__(options=options or DRIVE_OPTIONS, **kwargs)

  @classmethod
  def check_manual_dir(cls, manual_dir: str) -> None:
    """Raises a ValueError listing the expected layout when a DRIVE folder is missing."""
    missing = [f for f in _FOLDERS if not os.path.isdir(os.path.join(manual_dir, f))]
    if missing == ['test/1st_manual']:
      raise ValueError(
          f'drive: {os.path.join(manual_dir, "test", "1st_manual")} is missing: the test split '
          'needs the manual vessel segmentations of the test images (some copies of DRIVE '
          'leave them out); see docs/datasets.md#drive')
    if missing:
      raise _common.missing_layout_error(cls.name, manual_dir, list(_LAYOUT), missing)
