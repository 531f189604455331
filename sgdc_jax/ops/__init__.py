"""Array-level operations behind the SGE and SGDC modules."""
from sgdc_jax.ops.aggregate import (IMPLEMENTATIONS, pixel_adaptive_aggregate, resolve_impl,
                                    softmax_aggregate)
from sgdc_jax.ops.image import adaptive_avg_pool, resize_bilinear, sobel_magnitude
