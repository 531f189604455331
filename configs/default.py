"""Base config: SGDCNet (ResNet-50, D=256, 2 structure-guided SGDC blocks) on 256x256 inputs.

The fields, their defaults and their rules live in the package (`sgdc_jax/config.py`), so that
an installed package has them too; every file here imports that module and changes a few
fields. Run it (synthetic data, no download) with:

  python -m sgdc_jax.main --config=configs/default.py --workdir=runs/default

Cost: ~20k steps of batch 16 at 256x256 with ResNet-50 -- an accelerator job (hours on one GPU);
on a CPU use configs/demo.py instead.
"""

import ml_collections

from sgdc_jax.run import config as base


def get_config() -> ml_collections.ConfigDict:
  """Returns the base config (see the module docstring)."""
  return base.get_config()
