"""Tests of sgdc_jax.data.eval_loader: every record once, in order, padded, across processes."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import numpy as np

from pipeline_helpers import small_config
from sgdc_jax.data import pipeline
from sgdc_jax.data import transforms as T


def test_eval_sees_every_example_once_with_padding():
  config = small_config(size=16)  # validation split: 10 records; 10 % 4 != 0
  source = pipeline.open_source(config, 'validation')
  per_process = []
  for process in (0, 1):
    batches = list(pipeline.create_eval_iterator(config, 'validation', 4, process_index=process,
                                                 process_count=2))
    assert len(batches) == 3  # ceil(10 / 4), the same on every process
    for b in batches:
      assert b['image'].shape == (2, 16, 16, 3) and b['valid'].dtype == bool
      assert b['index'].dtype == np.int32
      assert np.array_equal(b['valid'], b['index'] >= 0)
      assert not b['image'][~b['valid']].any() and not b['mask'][~b['valid']].any()
    per_process.append(batches)
  indices = [int(i) for p in per_process for b in p for i in b['index'][b['valid']]]
  assert sorted(indices) == list(range(10))
  padding = sum(int((~b['valid']).sum()) for p in per_process for b in p)
  assert padding == 2
  # Global batch k = records 4k..4k+3: process 0 holds the first half, process 1 the second.
  np.testing.assert_array_equal(per_process[0][1]['index'], [4, 5])
  np.testing.assert_array_equal(per_process[1][2]['index'], [-1, -1])
  # Content is the resized record, the same on every run.
  first = per_process[0][0]
  _, mask = T.resize_pair(source[1]['image'], source[1]['mask'], (16, 16))
  np.testing.assert_array_equal(first['mask'][1], mask)
  again = next(pipeline.create_eval_iterator(config, 'validation', 4, process_index=0,
                                             process_count=2))
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
