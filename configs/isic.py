"""ISIC 2018 Task 1 (the paper's main setting): 2594 train / 100 validation / 1000 test images.

Prepare the data once (manual download, see sgdc_jax/data/prepare.py), then:

  python -m sgdc_jax.main --config=configs/isic.py --workdir=runs/isic2018 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.model.pretrained=/path/to/resnet50-torchvision.pth
  python -m sgdc_jax.main --config=configs/isic.py --workdir=runs/isic2018 --mode=eval

Cost: 10k steps x 32 images at 256x256, ResNet-50, bf16: about 1-2 h on one A100 / v4-8 (not yet
measured here), days on CPU.
Ablation: python -m sgdc_jax.analysis.ablation --config=configs/isic.py --workdir=runs/abl2018 --seeds=0,1,2
"""

import ml_collections

from sgdc_jax.run import config as base


def get_config() -> ml_collections.ConfigDict:
  """ISIC 2018: see the module docstring."""
  config = base.get_config()
  config.data.name = "isic2018"
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.test_split = "test"
  # Accelerator defaults: bf16 compute (float32 parameters and statistics) and a global batch
  # of 32, which fills one 80 GB GPU or a v4-8 comfortably at 256x256 with ResNet-50; the
  # learning rate follows the batch (linear scaling from 2e-4 at 16) and the steps keep the
  # epochs of 20k x 16. On a CPU pass --config.model.dtype=float32.
  config.model.dtype = "bfloat16"
  config.train.batch_size = 32
  config.eval.batch_size = 32
  config.optimizer.learning_rate = 4e-4
  config.train.num_steps = 10_000
  config.optimizer.ema_decay = 0.999
  return config
