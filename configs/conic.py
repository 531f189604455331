"""CoNIC (Lizard patches, 256x256): 7-class semantic nucleus segmentation (background + 6).

  python -m sgdc_jax.main --config=configs/conic.py --workdir=runs/conic \
      --config.data.data_dir=$HOME/tensorflow_datasets --config.model.pretrained=/path/r50.pth
  python -m sgdc_jax.main --config=configs/conic.py --workdir=runs/conic --mode=eval

Binary nuclei vs background: --config.data.name=conic/binary --config.model.num_classes=1.
Cost: 20k steps x 16 patches at 256x256, ResNet-50: about 2-3 h on one A100.
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
  """CoNIC semantic: see the module docstring."""
  config = _base()
  config.data.name = "conic/semantic"
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.test_split = "test"
  config.model.num_classes = 7
  config.data.boundary_width = 1   # nuclei are small: thin edge band
  config.train.num_steps = 20_000
  return config
