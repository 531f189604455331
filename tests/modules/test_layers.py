"""Shared layers of the modules (sgdc_jax/modules/layers.py)."""
import sgdc_jax  # noqa: F401  (first: sets the XLA CPU flag before JAX starts)

import jax
import jax.numpy as jnp
import numpy as np


TOL = dict(rtol=1e-5, atol=1e-5)


def test_drop_path_drops_whole_samples_and_rescales():
  from sgdc_jax.modules.layers import DropPath
  x = jnp.ones((64, 2, 2, 3))
  y = DropPath(0.5).apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(0)})
  per_sample = np.asarray(y).reshape(64, -1)
  assert np.all(per_sample == per_sample[:, :1])  # whole samples, not single values
  values = set(per_sample[:, 0].tolist())
  assert values == {0.0, 2.0}  # dropped, or kept and scaled by 1 / keep_prob
  np.testing.assert_array_equal(np.asarray(DropPath(0.5).apply({}, x)), np.asarray(x))
