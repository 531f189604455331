"""Tests of sgdc_jax.data.pipeline, the input pipeline's face: every name it serves is the
one object of the module that defines it (the stages are tested in test_sources.py,
test_preprocess.py, test_batching.py, test_workers.py, test_resumable.py,
test_train_loader.py and test_eval_loader.py; per-example transforms in test_transforms.py)."""
import importlib

from sgdc_jax.data import pipeline

# The names config.py, train.py, inference.py, predict.py, the tests and benchmarks use.
HOMES = {
    'sources': ('SYNTHETIC', 'SYNTHETIC_SPLITS', 'open_source', 'synthetic_split_seed'),
    'data_config': ('default_data_config',),
    'preprocess': ('TrainTransform', 'EvalTransform', 'preprocess_eval'),
    'batching': ('eval_indices',),
    'workers': ('AUTO', 'MAX_AUTO_WORKERS', 'MAX_AUTO_READ_THREADS', 'usable_cpus',
                'validate_data_config', 'resolve_workers'),
    'resumable': ('ResumableBatches',),
    'train_loader': ('create_train_dataset', 'create_train_iterator'),
    'eval_loader': ('create_eval_dataset', 'create_eval_iterator'),
}


def test_every_name_is_served_from_its_home_module():
  served = set()
  for home, names in HOMES.items():
    module = importlib.import_module(f'sgdc_jax.data.{home}')
    for name in names:
      assert getattr(pipeline, name) is getattr(module, name), (home, name)
      served.add(name)
  assert set(pipeline.__all__) == served
  assert pipeline._undecoded_images is importlib.import_module(  # benchmarks/bench_input.py
      'sgdc_jax.data.sources').undecoded_images
