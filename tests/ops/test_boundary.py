"""Tests for sgdc_jax.ops.boundary.boundary_target (NumPy and jax.numpy paths)."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from sgdc_jax.ops.boundary import boundary_target


def _reference(mask, width):
  """Independent reference: max filter != min filter over a (width+1)^2 window, edge-replicated.

  scipy centres an even window with its extra pixel before the centre (origin 0 puts the window
  at [x - size//2, x + (size-1)//2]), the same placement boundary_target documents.
  """
  size = width + 1
  hi = ndimage.maximum_filter(mask, size=size, mode='nearest')
  lo = ndimage.minimum_filter(mask, size=size, mode='nearest')
  return (hi != lo).astype(np.uint8)


@pytest.mark.parametrize('width', [1, 2, 3, 4])
def test_numpy_matches_jit_jnp_and_reference(width):
  rng = np.random.default_rng(width)
  blobs = ndimage.gaussian_filter(rng.normal(size=(3, 24, 20)), (0, 2, 2))
  labels = np.digitize(blobs, [-0.05, 0.05]).astype(np.int32)   # 3 classes
  got_np = boundary_target(labels, width=width)
  got_jnp = jax.jit(lambda m: boundary_target(m, width=width, xp=jnp))(jnp.asarray(labels))
  assert got_np.dtype == np.uint8 and got_jnp.dtype == jnp.uint8
  np.testing.assert_array_equal(got_np, np.asarray(got_jnp))
  for i in range(labels.shape[0]):
    np.testing.assert_array_equal(got_np[i], _reference(labels[i], width))
  # Boolean masks work as well.
  np.testing.assert_array_equal(boundary_target(labels > 0, width=width),
                                boundary_target((labels > 0).astype(np.uint8), width=width))


@pytest.mark.parametrize('width', [1, 2, 3, 5])
def test_band_on_straight_edge_is_width_pixels(width):
  mask = np.zeros((20, 24), np.uint8)
  mask[:, :11] = 1                          # vertical edge between columns 10 and 11
  band = boundary_target(mask, width=width)
  assert np.all(band.sum(axis=1) == width)
  horiz = boundary_target(mask.T.copy(), width=width)   # horizontal edge
  assert np.all(horiz.sum(axis=0) == width)
  # The band straddles the edge: it holds pixels on both sides (or touches it for width 1).
  cols = np.flatnonzero(band[0])
  assert cols.min() <= 11 and cols.max() >= 10 and np.all(np.diff(cols) == 1)


def test_frame_is_not_a_boundary():
  full = np.ones((10, 12), np.uint8)
  assert boundary_target(full, width=3).sum() == 0
  assert boundary_target(np.zeros((10, 12), np.uint8), width=3).sum() == 0
  # A lesion cut by the top and left frame: a band along its two inner edges only.
  mask = np.zeros((16, 16), np.uint8)
  mask[:8, :8] = 1
  band = boundary_target(mask, width=2)
  assert band[0, :6].sum() == 0 and band[:6, 0].sum() == 0
  assert band[0, 7] == 1 and band[7, 0] == 1


def test_multiclass_boundaries_between_foreground_classes():
  labels = np.zeros((6, 12), np.int32)
  labels[:, 4:8] = 1
  labels[:, 8:] = 2                          # 0 | 1 | 2 stripes
  band = boundary_target(labels, width=2)
  np.testing.assert_array_equal(band[0], [0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0])
  # A binary view would miss the 1|2 interface.
  assert boundary_target(labels > 0, width=2)[0, 7:9].sum() == 0


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match='width'):
    boundary_target(np.zeros((4, 4)), width=0)
  with pytest.raises(ValueError, match='width'):
    boundary_target(np.zeros((4, 4)), width=1.5)
  with pytest.raises(ValueError, match='shape'):
    boundary_target(np.zeros((4,)), width=2)
