"""ISIC 2018 Task 1 (the paper's main setting): 2594 train / 100 validation / 1000 test images.

Prepare the data once (manual download, see sgdc_jax/data/prepare.py), then:

  python -m sgdc_jax.main --config=configs/isic.py --workdir=runs/isic2018 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.model.pretrained=/path/to/resnet50-torchvision.pth
  python -m sgdc_jax.main --config=configs/isic.py --workdir=runs/isic2018 --mode=eval

Cost: 20k steps x 16 images at 256x256, ResNet-50: about 2-3 h on one A100 / v4-8, days on CPU.
Ablation: add --config.model.kernel_source=pooled (or none).
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
  """ISIC 2018: see the module docstring."""
  config = _base()
  config.data.name = "isic2018"
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.test_split = "test"
  config.train.num_steps = 20_000
  config.optimizer.ema_decay = 0.999
  return config
