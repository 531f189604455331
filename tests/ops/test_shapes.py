"""Tests of sgdc_jax.ops.shapes: the aggregation arguments' checks."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax.numpy as jnp
import pytest

from sgdc_jax.ops.shapes import check_aggregate_args


def test_returns_heads_and_channels_per_head():
  x = jnp.zeros((2, 5, 6, 12))
  assert check_aggregate_args(x, jnp.zeros((2, 5, 6, 3, 9)), 3) == (3, 4)
  assert check_aggregate_args(x, jnp.zeros((2, 5, 6, 1, 49)), 7) == (1, 12)


@pytest.mark.parametrize('x_shape, w_shape, k, match', [
    ((5, 6, 12), (2, 5, 6, 3, 9), 3, r'x must be \(B, H, W, C\)'),
    ((2, 5, 6, 12), (2, 5, 7, 3, 9), 3, 'logits must be'),
    ((2, 5, 6, 12), (2, 5, 6, 3, 4), 2, 'positive odd'),
    ((2, 5, 6, 12), (2, 5, 6, 3, 25), 3, 'expected kernel_size'),
    ((2, 5, 6, 12), (2, 5, 6, 5, 9), 3, 'divisible by heads'),
])
def test_names_the_inconsistent_argument(x_shape, w_shape, k, match):
  with pytest.raises(ValueError, match=match):
    check_aggregate_args(jnp.zeros(x_shape), jnp.zeros(w_shape), k, name='logits')
