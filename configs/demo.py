"""CPU demo on the built-in synthetic lesions (no download): small ResNet-18 SGDCNet.

  python -m sgdc_jax.demo                       # = make demo: train, then test-split eval
  python -m sgdc_jax.main --config=configs/demo.py --workdir=runs/demo
  python -m sgdc_jax.main --config=configs/demo.py --workdir=runs/demo --mode=eval

The fields it changes (ResNet-18, D=64, 96x96 inputs, 150 steps of 8 images, lr 1e-3) are set in
`sgdc_jax.run.config.demo_config()`, so that `python -m sgdc_jax.demo` works from an installed
package as well.

Cost: 150 steps of 8 images at 96x96; about 4-8 minutes on a 2-core CPU, most of it XLA
compilation (cached in ~/.cache/sgdc_jax/jax, so a rerun is faster). Reaches a synthetic test
Dice of about 0.97 (300 steps: 0.98).
"""

import ml_collections

from sgdc_jax.run import config as base


def get_config() -> ml_collections.ConfigDict:
  """Demo: see the module docstring."""
  return base.demo_config()
