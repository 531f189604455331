"""Tests of sgdc_jax.metrics.topology: the Guo-Hall skeleton against scikit-image's `thin`,
its topology, clDice against a NumPy reference written from the paper's definition and against
the clDice authors' skeleton (`skimage.morphology.skeletonize`), by hand, and its empty-mask
conventions in `image_metrics`."""
import math

import numpy as np
import pytest
from scipy import ndimage

from mask_examples import lesion, mask_pairs, vessel_tree
from sgdc_jax import metrics



@pytest.fixture(name='morphology')
def _morphology():
  """scikit-image's morphology module, the reference (the `test` extra installs it)."""
  return pytest.importorskip('skimage.morphology')


def _masks():
  """Lesions, rough many-part blobs, vessel trees, noise and the small cases thinning gets
  wrong most easily (2x2 squares, diagonal lines, masks filling the frame)."""
  rng = np.random.default_rng(0)
  out = [m for pair in mask_pairs(0) for m in pair]
  out += [vessel_tree(rng, 72, 96) for _ in range(4)]
  out += [rng.random((24, 32)) < f for f in (0.3, 0.5, 0.7, 0.9)]
  out += [np.ones((2, 2), bool), np.ones((5, 7), bool), np.eye(6, dtype=bool),
          np.eye(6, dtype=bool) | np.eye(6, k=1, dtype=bool), np.zeros((4, 4), bool)]
  ring = np.zeros((15, 15), bool)
  ring[2:13, 2:13] = True
  ring[5:10, 5:10] = False
  return out + [ring]


def _paper_cldice(pred, target, skeletonize):
  """clDice from the definition: Tprec = |S(P) n L| / |S(P)|, Tsens = |S(L) n P| / |S(L)|,
  their harmonic mean, 0 when both are 0 (both masks non-empty)."""
  sp, sl = skeletonize(pred), skeletonize(target)
  tprec = np.sum(sp & target) / np.sum(sp)
  tsens = np.sum(sl & pred) / np.sum(sl)
  return 2 * tprec * tsens / (tprec + tsens) if tprec + tsens else 0.0


def _vessel_predictions(rng, target):
  """Predictions a vessel model makes: dropped pixels (gaps), speckle, a shift, thickening."""
  noise = ndimage.gaussian_filter(rng.random(target.shape), 2) > 0.6
  return [target & (rng.random(target.shape) > 0.05), target ^ noise, np.roll(target, 1, axis=1),
          ndimage.binary_dilation(target)]


def test_skeleton_equals_scikit_image_thin(morphology):
  for mask in _masks():
    np.testing.assert_array_equal(metrics.skeleton(mask), morphology.thin(mask))


def test_skeleton_keeps_components_and_holes():
  eight = np.ones((3, 3), bool)
  for mask in _masks():
    skel = metrics.skeleton(mask)
    assert not np.any(skel & ~mask)
    assert ndimage.label(skel, eight)[1] == ndimage.label(mask, eight)[1]
    # Holes: 4-connected background components, the frame's one included.
    assert ndimage.label(~np.pad(skel, 1))[1] == ndimage.label(~np.pad(mask, 1))[1]
    np.testing.assert_array_equal(metrics.skeleton(skel), skel)  # nothing left to delete
  bar = np.zeros((20, 30), bool)
  bar[5:14, 3:27] = True                                   # 9 pixels thick
  skel = metrics.skeleton(bar)
  assert np.array_equal(np.flatnonzero(skel.any(axis=1)), [9])  # one row: the middle one
  line = np.zeros((9, 9), bool)
  line[4, 1:8] = True
  np.testing.assert_array_equal(metrics.skeleton(line), line)  # already thin: kept whole
  with pytest.raises(ValueError, match='2-D'):
    metrics.skeleton(np.ones((2, 3, 4), bool))


def test_cldice_equals_the_paper_definition(morphology):
  rng = np.random.default_rng(1)
  pairs = list(mask_pairs(1))
  for _ in range(3):
    target = vessel_tree(rng, 96, 128)
    pairs += [(pred, target) for pred in _vessel_predictions(rng, target)]
  for pred, target in pairs:
    got = metrics.centreline_scores(pred, target)
    assert got['cldice'] == pytest.approx(_paper_cldice(pred, target, morphology.thin),
                                          abs=1e-12)
    assert metrics.cldice(pred, target) == got['cldice']
    assert metrics.image_metrics(pred, target)['cldice'] == got['cldice']
    sp = metrics.skeleton(pred)
    assert got['cl_tprec'] == pytest.approx(np.sum(sp & target) / np.sum(sp))


def test_cldice_is_close_to_the_authors_skeletonize(morphology):
  # The clDice authors' code skeletonises with skimage's `skeletonize`; the Guo-Hall skeleton
  # differs at line ends and junctions (module docstring of sgdc_jax.metrics.topology).
  rng = np.random.default_rng(2)
  diffs = []
  for _ in range(4):
    target = vessel_tree(rng, 96, 128)
    for pred in _vessel_predictions(rng, target):
      diffs.append(metrics.cldice(pred, target)
                   - _paper_cldice(pred, target, morphology.skeletonize))
  diffs = np.abs(diffs)
  assert diffs.max() < 0.06 and np.median(diffs) < 0.02, diffs


def test_cldice_by_hand():
  # Label: a one-pixel cross (19 px, its own skeleton). Prediction: a 3-pixel-wide vertical
  # bar over the cross's vertical arm, whose skeleton is the arm's middle 8 pixels.
  target = np.zeros((21, 21), bool)
  target[5:15, 10] = True
  target[10, 5:15] = True
  pred = np.zeros_like(target)
  pred[5:15, 9:12] = True
  sp = metrics.skeleton(pred)
  assert np.array_equal(np.argwhere(sp), [[r, 10] for r in range(6, 14)])
  np.testing.assert_array_equal(metrics.skeleton(target), target)
  got = metrics.centreline_scores(pred, target)
  assert got['cl_tprec'] == 1.0                       # every skeleton pixel lies on the label
  assert got['cl_tsens'] == pytest.approx(12 / 19)    # the vertical arm + 2 horizontal pixels
  assert got['cldice'] == pytest.approx(2 * (12 / 19) / (1 + 12 / 19))  # = 24/31


def test_a_missed_thin_branch_costs_cldice_more_than_dice():
  target = np.zeros((64, 64), bool)
  target[10:54, 28:37] = True       # a thick trunk
  target[30, 37:62] = True          # a one-pixel branch
  pred = target.copy()
  pred[30, 37:62] = False           # the branch is missed
  m = metrics.image_metrics(pred, target)
  assert m['dice'] > 0.95
  assert m['cldice'] < m['dice'] - 0.1
  assert metrics.image_metrics(target, target)['cldice'] == 1.0


@pytest.mark.parametrize('policy', metrics.EMPTY_POLICIES)
def test_empty_masks(policy):
  z = np.zeros((20, 30), bool)
  m = lesion(np.random.default_rng(3), 20, 30)
  assert metrics.centreline_scores(z, z) == {'cl_tprec': 1.0, 'cl_tsens': 1.0, 'cldice': 1.0}
  assert metrics.centreline_scores(z, m) == {'cl_tprec': 0.0, 'cl_tsens': 0.0, 'cldice': 0.0}
  assert metrics.centreline_scores(m, z)['cl_tprec'] == 0.0
  for pred, target in ((z, m), (m, z)):
    out = metrics.image_metrics(pred, target, empty_policy=policy)
    # Like Dice, clDice has a value when one mask is empty: it is never excluded.
    assert out['cldice'] == 0.0 and 'cldice' not in out['excluded']
  assert metrics.image_metrics(z, z, empty_policy=policy)['cldice'] == 1.0


def test_cldice_is_2d_only_in_image_metrics():
  a = np.zeros((3, 8, 8), bool)
  a[1, 2:6, 2:6] = True
  out = metrics.image_metrics(a, a)
  assert math.isnan(out['cldice']) and out['excluded'] == ('cldice',)
  assert out['dice'] == 1.0
  summary = metrics.summarize([out, metrics.image_metrics(a, a)])
  assert summary['excluded']['cldice'] == 2 and summary['n']['dice'] == 2
