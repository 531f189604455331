"""Tests of sgdc_jax.checks: a bool is not a number, a NumPy scalar is."""
import numpy as np
import pytest

from sgdc_jax import checks


@pytest.mark.parametrize('value, is_int, is_number', [
    (3, True, True), (np.int64(3), True, True), (np.uint8(3), True, True),
    (2.5, False, True), (np.float32(2.5), False, True),
    (True, False, False), (np.bool_(True), False, False),
    ('3', False, False), (None, False, False), ([3], False, False),
])
def test_predicates(value, is_int, is_number):
  assert checks.is_int(value) is is_int
  assert checks.is_number(value) is is_number
