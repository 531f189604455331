"""Flax NNX modules: `SGE`, `SGDC` and `SGDCNet` for NNX users (docs/nnx.md).

    from flax import nnx
    from sgdc_jax import nnx as sgdc_nnx

    block = sgdc_nnx.SGDC(x, guidance, rngs=nnx.Rngs(1), dim=256, drop_path=0.1)
    y = block(x, guidance)    # eval mode by default; block.train() / block.eval()

The linen modules stay the single source of the math; `import sgdc_jax` does not import this
subpackage (nor `flax.nnx`).
"""
from sgdc_jax.nnx.modules import SGDC, SGE, SGDCNet

__all__ = ['SGE', 'SGDC', 'SGDCNet']
