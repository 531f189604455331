"""sgdc_jax: Structurally-Guided Dynamic Convolution (SGDC, MIDL 2026) in JAX/Flax.

    import sgdc_jax
    edge_logits, guidance = sgdc_jax.SGE().apply(sge_vars, deep, shallow, train=False)
    y = sgdc_jax.SGDC(dim=256).apply(sgdc_vars, x, guidance)

Importing the package first also guards XLA's CPU runtime against a jaxlib 0.10.2 failure
("YNNPACK operation failed", see `sgdc_jax/_xla_flags.py`).
"""
from sgdc_jax import _moved, _xla_flags

_xla_flags.disable_ynn_fusion()
_moved.install()

# pylint: disable=g-import-not-at-top,wrong-import-position
from sgdc_jax.models.sgdc_net import SGDCNet
from sgdc_jax.modules.sgdc import SGDC
from sgdc_jax.modules.sge import SGE
from sgdc_jax.ops.aggregate import pixel_adaptive_aggregate

__version__ = '0.1.0'
__all__ = ['SGDC', 'SGE', 'pixel_adaptive_aggregate', 'SGDCNet']

