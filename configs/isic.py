"""ISIC 2018 Task 1 (the paper's main setting): 2594 train / 100 validation / 1000 test images.

Prepare the data once (manual download, see sgdc_jax/data/prepare.py), then:

  python -m sgdc_jax.main --config=configs/isic.py --workdir=runs/isic2018 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.model.pretrained=/path/to/resnet50-torchvision.pth
  python -m sgdc_jax.main --config=configs/isic.py --workdir=runs/isic2018 --mode=eval

Cost: 20k steps x 16 images at 256x256, ResNet-50: about 2-3 h on one A100 / v4-8, days on CPU.
Ablation: add --config.model.kernel_source=pooled (or none).
"""

import ml_collections

from sgdc_jax import config as base


def get_config() -> ml_collections.ConfigDict:
  """ISIC 2018: see the module docstring."""
  config = base.get_config()
  config.data.name = "isic2018"
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.test_split = "test"
  config.train.num_steps = 20_000
  config.optimizer.ema_decay = 0.999
  return config
