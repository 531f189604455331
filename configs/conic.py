"""CoNIC (Lizard patches, 256x256): 7-class semantic nucleus segmentation (background + 6).

  python -m sgdc_jax.main --config=configs/conic.py --workdir=runs/conic \
      --config.data.data_dir=$HOME/tensorflow_datasets --config.model.pretrained=/path/r50.pth
  python -m sgdc_jax.main --config=configs/conic.py --workdir=runs/conic --mode=eval

Binary nuclei vs background: --config.data.name=conic/binary --config.model.num_classes=1.
Cost: 20k steps x 16 patches at 256x256, ResNet-50: about 2-3 h on one A100.
"""

import ml_collections

from sgdc_jax.run import config as base


def get_config() -> ml_collections.ConfigDict:
  """CoNIC semantic: see the module docstring."""
  config = base.get_config()
  config.data.name = "conic/semantic"
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.test_split = "test"
  config.model.num_classes = 7
  config.data.boundary_width = 1   # nuclei are small: thin edge band
  config.train.num_steps = 20_000
  return config
