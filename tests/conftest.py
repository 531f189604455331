import os
import sys

import pytest

# tests/ mirrors the package (tests/run/test_train.py tests sgdc_jax/run/train.py); test file
# names are unique, and helpers (numpy_reference.py, run_script in run/test_train.py, ...) are
# imported by name from any folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
for _root, _dirs, _ in os.walk(_HERE):
  _dirs[:] = sorted(d for d in _dirs if not d.startswith(('.', '_')))
  sys.path.insert(0, _root)

# The newest-releases subset: `make test-newest` runs `pytest -m newest` in .venv-newest
# (requirements-newest.txt, Python 3.12), after `make test` ran everything on the pins. The
# layers that newer jax, flax, optax and orbax releases touch: the modules, the Pallas kernel
# (interpret mode, lowering, sharding), a few training steps with SIGTERM resume, orbax
# checkpoint layout and recovery, and evaluation of a trained checkpoint. A file maps to None
# (all its tests) or to the names of the tests taken from it; a name that no longer exists
# is an error, so a rename cannot shrink the subset unnoticed.
NEWEST = {
    'test_sgdc.py': None,
    'test_sge.py': None,
    'test_layers.py': None,
    'test_nnx.py': None,
    'test_pallas_aggregate.py': None,
    'test_checkpoints.py': None,
    'test_checkpoint_recovery.py': None,
    'test_train.py': (
        'test_schedule_warmup_then_cosine_matches_numpy',
        'test_weight_decay_only_on_kernels',
        'test_train_step_updates_params_bn_and_ema',
        'test_train_step_non_finite_keeps_state',
        'test_dropout_key_differs_per_step_and_is_reproducible',
        'test_eval_mode_writes_one_folder_per_dataset_split_and_step',
    ),
}


def pytest_ignore_collect(collection_path, config):
  # `-m newest` alone imports only the subset's files (and none whose imports need more than
  # the newest venv holds, e.g. nbformat).
  if (config.getoption('markexpr') == 'newest' and collection_path.suffix == '.py'
      and collection_path.name.startswith('test_') and collection_path.name not in NEWEST):
    return True
  return None


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marker
def pytest_collection_modifyitems(config, items):
  del config
  seen = {}
  for item in items:
    file = os.path.basename(item.path)
    if file not in NEWEST:
      continue
    name = getattr(item, 'originalname', item.name)
    seen.setdefault(file, set()).add(name)
    if NEWEST[file] is None or name in NEWEST[file]:
      item.add_marker(pytest.mark.newest)
  missing = [f'{file}::{name}' for file, names in seen.items()
             for name in NEWEST[file] or () if name not in names]
  if missing:
    raise pytest.UsageError(f'tests/conftest.py NEWEST names tests that do not exist: {missing}')
