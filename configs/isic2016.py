"""ISIC 2016 Part 1: 900 train / 379 test images; validation is the last 10% of train.

  python -m sgdc_jax.main --config=configs/isic2016.py --workdir=runs/isic2016 \
      --config.data.data_dir=$HOME/tensorflow_datasets --config.model.pretrained=/path/r50.pth
  python -m sgdc_jax.main --config=configs/isic2016.py --workdir=runs/isic2016 --mode=eval

Cost: 10k steps x 16 images at 256x256, ResNet-50: about 1-1.5 h on one A100.
"""

import ml_collections

from sgdc_jax.run import config as base


def get_config() -> ml_collections.ConfigDict:
  """ISIC 2016: see the module docstring."""
  config = base.get_config()
  config.data.name = "isic2016"
  config.data.train_split = "train[:90%]"
  config.data.eval_split = "train[90%:]"
  config.data.test_split = "test"
  config.train.num_steps = 10_000
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  config.optimizer.ema_decay = 0.999
  return config
