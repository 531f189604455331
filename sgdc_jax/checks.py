"""Type predicates shared by the config rules (`sgdc_jax.run.config`) and the model config
(`sgdc_jax.models.sgdc_net`): a bool is not a number here, a NumPy scalar is."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_int(v: Any) -> bool:
  """True for Python/NumPy integers (not bools)."""
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
  """True for Python/NumPy ints and floats (not bools)."""
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
