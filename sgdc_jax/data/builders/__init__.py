"""TFDS builders for the segmentation datasets; importing this package registers them.

Names: `isic2016` (train/test), `isic2018` (train/validation/test), `ph2` (train/test;
TFDS's split='all' reads both),
`conic/binary` and `conic/semantic` (train/validation/test), `drive` (train/validation/test; a
preset of `folder`, examples with 'roi'), and `folder` (your own images and masks under a name
you choose; see `sgdc_jax.data.builders.folder`). Every example is
`{'image': uint8 (H, W, 3), 'mask': uint8 (H, W), 'id': str}` at full resolution, plus
`'roi': uint8 (H, W)` (1 inside) for data sets with a region of interest.
Prepare with `python -m sgdc_jax.data.prepare --dataset=NAME --manual_dir=DIR`, then read
with `tfds.data_source(NAME, split=SPLIT, data_dir=DIR)`.
"""
from sgdc_jax.data.builders.conic import Conic
from sgdc_jax.data.builders.drive import Drive
from sgdc_jax.data.builders.folder import Folder
from sgdc_jax.data.builders.isic2016 import Isic2016
from sgdc_jax.data.builders.isic2018 import Isic2018
from sgdc_jax.data.builders.ph2 import Ph2

# name -> builder class of the published data sets, for `sgdc_jax.data.prepare`. `folder`
# is not here: its data sets take the name given to `prepare --name`.
BUILDERS = {cls.name: cls for cls in (Isic2016, Isic2018, Ph2, Conic, Drive)}
# Every name `prepare --dataset` and `data.name` accept for them, configs included.
DATASET_NAMES = sorted(n for base, cls in BUILDERS.items()
                       for n in [base] + [f'{base}/{c.name}' for c in cls.BUILDER_CONFIGS])

__all__ = ['BUILDERS', 'DATASET_NAMES', 'Conic', 'Drive', 'Folder', 'Isic2016', 'Isic2018',
           'Ph2']
