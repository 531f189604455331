"""Tests of the synthetic_lesions source: determinism, alignment, class balance, splits."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import numpy as np
import pytest

from sgdc_jax.data import pipeline
from sgdc_jax.data.synthetic import SyntheticLesions, generate

SIZE = (72, 96)


def _luma(image):
  return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_example_format():
  ex = SyntheticLesions(3, SIZE, seed=5)[2]
  assert ex['image'].dtype == np.uint8 and ex['image'].shape == SIZE + (3,)
  assert ex['mask'].dtype == np.uint8 and ex['mask'].shape == SIZE
  assert set(np.unique(ex['mask'])) <= {0, 1}
  assert ex['id'] == 'synthetic_5_2'


def test_deterministic_by_seed_and_index():
  a, b = SyntheticLesions(10, SIZE, seed=3), SyntheticLesions(10, SIZE, seed=3)
  for i in (0, 7):
    assert a[i]['image'].tobytes() == b[i]['image'].tobytes()
    assert a[i]['mask'].tobytes() == b[i]['mask'].tobytes()
  # Order of access does not matter: the example is a pure function of (seed, index).
  assert a[7]['image'].tobytes() == generate(3, 7, *SIZE)['image'].tobytes()
  assert a[0]['image'].tobytes() != a[1]['image'].tobytes()
  assert a[0]['mask'].tobytes() != a[1]['mask'].tobytes()
  other = SyntheticLesions(10, SIZE, seed=4)
  assert a[0]['image'].tobytes() != other[0]['image'].tobytes()


def test_lesions_darker_than_skin_and_fraction_bounds():
  source = SyntheticLesions(50, SIZE, seed=11)
  fractions = []
  for i in range(len(source)):
    ex = source[i]
    mask = ex['mask'].astype(bool)
    luma = _luma(ex['image'])
    # Image and mask agree: the lesion is clearly darker than the skin around it.
    assert luma[mask].mean() < luma[~mask].mean() - 15, i
    fractions.append(mask.mean())
  fractions = np.array(fractions)
  # Stated bounds (module docstring): each in [0.08, 0.5]; the mean mid-range.
  assert fractions.min() >= 0.08 and fractions.max() <= 0.5, fractions
  assert 0.15 <= fractions.mean() <= 0.4, fractions.mean()


def test_index_checks():
  source = SyntheticLesions(4, SIZE, seed=0)
  assert len(source) == 4
  assert source[-1]['id'] == source[3]['id']
  with pytest.raises(IndexError):
    source[4]
  with pytest.raises(ValueError, match='num_examples'):
    SyntheticLesions(0, SIZE)
  with pytest.raises(ValueError, match='image_size'):
    SyntheticLesions(4, (8, 8))


def test_splits_are_disjoint_streams():
  config = pipeline.default_data_config()
  config.synthetic.update(dict(train_size=5, validation_size=4, test_size=3, height=40, width=48))
  sources = {s: pipeline.open_source(config, s) for s in ('train', 'validation', 'test')}
  assert [len(s) for s in sources.values()] == [5, 4, 3]
  seeds = {s: src.seed for s, src in sources.items()}
  assert len(set(seeds.values())) == 3
  firsts = {s: src[0]['image'].tobytes() for s, src in sources.items()}
  assert len(set(firsts.values())) == 3
  # Seeds never collide across base seeds either.
  all_seeds = {pipeline.synthetic_split_seed(b, s) for b in range(20) for s in seeds}
  assert len(all_seeds) == 60
  with pytest.raises(ValueError, match='unknown split'):
    pipeline.open_source(config, 'all')
