"""PH2: 200 dermoscopic images; train/test split of the builder, validation = last 15% of train.

  python -m sgdc_jax.main --config=configs/ph2.py --workdir=runs/ph2 \
      --config.data.data_dir=$HOME/tensorflow_datasets --config.model.pretrained=/path/r50.pth
  python -m sgdc_jax.main --config=configs/ph2.py --workdir=runs/ph2 --mode=eval

Cost: 4k steps x 8 images at 256x256, ResNet-50: about 15-20 min on one A100.
"""

import importlib.util
import pathlib

import ml_collections

def _base() -> ml_collections.ConfigDict:
  """configs/default.py next to this file (config files are loaded by path, not as a package)."""
  path = pathlib.Path(__file__).with_name("default.py")
  spec = importlib.util.spec_from_file_location("sgdc_configs_default", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config() -> ml_collections.ConfigDict:
  """PH2: see the module docstring."""
  config = _base()
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
