"""Tests of sgdc_jax.data.batching: which records each process batches."""
import pytest

from sgdc_jax.data import batching, pipeline


def test_eval_indices_single_process():
  assert pipeline.eval_indices(5, 4, 0, 1) == [0, 1, 2, 3, 4, -1, -1, -1]
  assert pipeline.eval_indices(4, 4, 0, 1) == [0, 1, 2, 3]


def test_eval_indices_two_processes_take_halves_of_each_global_batch():
  # Global batches of 4 over 2 processes: process p holds rows 2p, 2p + 1 of each.
  assert batching.eval_indices(6, 4, 0, 2) == [0, 1, 4, 5]
  assert batching.eval_indices(6, 4, 1, 2) == [2, 3, -1, -1]
  # An empty split still gives one (all-padding) batch, so every process steps once.
  assert batching.eval_indices(0, 2, 0, 1) == [-1, -1]


def test_per_process_batch_and_processes_check_their_arguments():
  assert batching.per_process_batch(8, 4) == 2
  with pytest.raises(ValueError, match='not divisible'):
    batching.per_process_batch(6, 4)
  with pytest.raises(ValueError, match='positive integer'):
    batching.per_process_batch(2.5, 1)
  with pytest.raises(ValueError, match='positive integer'):
    batching.per_process_batch(0, 1)
  assert batching.processes(1, 3) == (1, 3)
  with pytest.raises(ValueError, match='process_index 3'):
    batching.processes(3, 3)
  assert batching.processes(None, None) == (0, 1)  # this test process: jax's single process
