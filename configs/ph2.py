"""PH2: 200 dermoscopic images; train/test split of the builder, validation = last 15% of train.

  python -m sgdc_jax.main --config=configs/ph2.py --workdir=runs/ph2 \
      --config.data.data_dir=$HOME/tensorflow_datasets --config.model.pretrained=/path/r50.pth
  python -m sgdc_jax.main --config=configs/ph2.py --workdir=runs/ph2 --mode=eval

Cost: 4k steps x 8 images at 256x256, ResNet-50: about 15-20 min on one A100.
"""

import ml_collections

from sgdc_jax.run import config as base


def get_config() -> ml_collections.ConfigDict:
  """PH2: see the module docstring."""
  config = base.get_config()
  config.data.name = "ph2"
  config.data.train_split = "train[:85%]"
  config.data.eval_split = "train[85%:]"
  config.data.test_split = "test"
  config.train.num_steps = 4_000
  config.train.batch_size = 8
  config.eval.batch_size = 8
  config.train.eval_every = 250
  config.train.checkpoint_every = 250
  config.optimizer.warmup_steps = 200
  return config
