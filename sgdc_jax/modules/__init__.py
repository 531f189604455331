"""The two SGDC modules: the Structural Guidance Extractor and the SGDC block."""
from sgdc_jax.modules.sgdc import KERNEL_SOURCES, SGDC
from sgdc_jax.modules.sge import SGE
