"""Tests of sgdc_jax.data.workers: worker processes and read threads sized to the host, and
the checks of the speed settings."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax is used anywhere)

import ml_collections
import pytest

from pipeline_helpers import small_config
from sgdc_jax.data import pipeline, workers


def test_workers_and_read_threads_sized_to_the_host_unless_set(monkeypatch):
  config = small_config()
  config.num_workers, config.read_threads = -1, -1
  assert pipeline.resolve_workers(config, cpus=1) == (0, 1)
  assert pipeline.resolve_workers(config, cpus=2) == (1, 2)
  assert pipeline.resolve_workers(config, cpus=8) == (7, 1)
  assert pipeline.resolve_workers(config, cpus=64) == (pipeline.MAX_AUTO_WORKERS, 4)
  # Evaluation: threads only (worker start-up would outweigh a validation pass).
  assert pipeline.resolve_workers(config, cpus=64, evaluation=True) == (0, 4)
  assert pipeline.resolve_workers(config, cpus=2, evaluation=True) == (0, 2)
  config.num_workers = 3                     # an explicit value wins ...
  assert pipeline.resolve_workers(config, cpus=64) == (3, 4)
  assert pipeline.resolve_workers(config, cpus=64, evaluation=True) == (3, 4)
  config.read_threads = 0                    # ... for either field
  assert pipeline.resolve_workers(config, cpus=64) == (3, 0)
  config.num_workers, config.read_threads = 0, -1
  assert pipeline.resolve_workers(config, cpus=2) == (0, 2)
  # The iterators resolve -1 through `usable_cpus` (one CPU here: no worker processes).
  monkeypatch.setattr(workers, 'usable_cpus', lambda: 1)
  config.num_workers = -1
  it = pipeline.create_train_iterator(config, 4, seed=0, process_index=0, process_count=1)
  assert next(it)['image'].shape == (4, 24, 24, 3)
  for field, value in (('num_workers', -2), ('read_threads', -3), ('worker_buffer_size', 0),
                       ('jpeg_draft', 'yes')):
    bad = small_config().to_dict()
    bad[field] = value  # via a dict: the base config's typed bool field refuses 'yes' itself
    bad = ml_collections.ConfigDict(bad)
    with pytest.raises(ValueError, match=f'data.{field}'):
      pipeline.create_train_iterator(bad, 4, seed=0, process_index=0, process_count=1)
