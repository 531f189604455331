"""Tests of sgdc_jax.data.resumable: the training iterator resumes at the exact next batch,
with any number of worker processes, from its own or a single-process Grain state."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import json

import pytest

from pipeline_helpers import assert_batches_equal, small_config
from sgdc_jax.data import pipeline


def test_iterator_state_resumes_at_the_exact_next_batch():
  config = small_config()
  it = pipeline.create_train_iterator(config, 4, seed=5, process_index=1, process_count=2)
  for _ in range(3):  # crosses the epoch boundary (12 examples / 2 processes / 2 per batch)
    next(it)
  state = it.get_state()
  json.dumps(state)  # checkpointable as JSON
  after = [next(it) for _ in range(4)]
  it.set_state(state)
  assert_batches_equal([next(it) for _ in range(4)], after)
  fresh = pipeline.create_train_iterator(config, 4, seed=5, process_index=1, process_count=2)
  fresh.set_state(state)
  assert_batches_equal([next(fresh) for _ in range(4)], after)


def test_worker_processes_give_the_same_batches_and_resume_with_any_worker_count():
  config = small_config()
  reference = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
  want = [next(reference) for _ in range(5)]
  config.num_workers = 2
  it = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
  try:
    got = [next(it) for _ in range(2)]
    state = it.get_state()
    got += [next(it) for _ in range(3)]
    assert_batches_equal(got, want)
    it.set_state(state)
    assert_batches_equal([next(it) for _ in range(3)], want[2:])
  finally:
    it.close()
  assert state == {'next_batch': 2}
  # A state saved with 2 workers resumes with 1 or none (e.g. auto-sized on another host).
  for workers in (1, 0):
    config.num_workers = workers
    it = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
    try:
      it.set_state(state)
      assert_batches_equal([next(it) for _ in range(3)], want[2:])
    finally:
      it.close()
  # Evaluation keeps its order with workers too.
  config.num_workers = 2
  got = list(pipeline.create_eval_iterator(config, 'validation', 4, process_index=0,
                                           process_count=1))
  config.num_workers = 0
  want = list(pipeline.create_eval_iterator(config, 'validation', 4, process_index=0,
                                            process_count=1))
  assert_batches_equal(got, want)


def test_iterator_accepts_single_process_grain_states_and_rejects_per_worker_ones():
  config = small_config()
  want = [next(pipeline.create_train_iterator(config, 4, seed=2, process_index=0,
                                              process_count=1)) for _ in range(1)]
  it = pipeline.create_train_iterator(config, 4, seed=2, process_index=0, process_count=1)
  batches = [next(it) for _ in range(3)]
  it.set_state({'next_index': 1})   # Grain's own state of this pipeline without workers
  assert_batches_equal([next(it)], batches[1:2])
  assert_batches_equal(batches[:1], want)
  with pytest.raises(ValueError, match='multi-worker'):
    it.set_state({'next_index_in_cycle': 1, 'iterators_in_use_states': [{'next_index': 1}]})
