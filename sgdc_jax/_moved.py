"""Deprecation path for the module names of sgdc_jax 0.1's flat layout.

`import sgdc_jax.train`, `from sgdc_jax import config` and `python -m sgdc_jax.ablation` keep
working: a finder on `sys.meta_path` answers each old name with the module now holding its code
(`sgdc_jax.run.train`, ...) and warns once with a `DeprecationWarning` naming the new one.
`sgdc_jax.reporting` was split in four; its old name serves all of their public names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED = {
    'sgdc_jax.ablation': 'sgdc_jax.analysis.ablation',
    'sgdc_jax.ablation_report': 'sgdc_jax.analysis.report',
    'sgdc_jax.boundary': 'sgdc_jax.ops.boundary',
    'sgdc_jax.checkpoint_recovery': 'sgdc_jax.run.checkpoint_recovery',
    'sgdc_jax.checkpointing': 'sgdc_jax.run.checkpoints',
    'sgdc_jax.config': 'sgdc_jax.run.config',
    'sgdc_jax.convert': 'sgdc_jax.models.convert',
    'sgdc_jax.diagnose': 'sgdc_jax.analysis.diagnose',
    'sgdc_jax.evaluate': 'sgdc_jax.run.evaluate',
    'sgdc_jax.experiment': 'sgdc_jax.run.experiment',
    'sgdc_jax.inference': 'sgdc_jax.run.inference',
    'sgdc_jax.knockouts': 'sgdc_jax.analysis.knockouts',
    'sgdc_jax.losses': 'sgdc_jax.models.losses',
    'sgdc_jax.predict': 'sgdc_jax.run.predict',
    'sgdc_jax.sharding': 'sgdc_jax.run.sharding',
    'sgdc_jax.train': 'sgdc_jax.run.train',
    'sgdc_jax.train_state': 'sgdc_jax.run.train_state',
    'sgdc_jax.workdir': 'sgdc_jax.run.workdir',
}
# Old modules whose contents now live in several modules: every public name of each.
SPLIT = {
    'sgdc_jax.reporting': ('sgdc_jax.log', 'sgdc_jax.run.writers', 'sgdc_jax.run.hooks',
                           'sgdc_jax.run.outputs'),
}


def _warn(old: str, new: str) -> None:
  warnings.warn(f'{old} is deprecated and will be removed in sgdc_jax 0.3: use {new}',
                DeprecationWarning, stacklevel=4)


class _AliasLoader(importlib.abc.Loader):
  """Loads an old name as the module (or, for a split one, the union of modules) that
  replaced it; `get_code` lets `python -m <old name>` run the new module."""

  def __init__(self, old: str):
    self._old = old

  def create_module(self, spec):
    if self._old in MOVED:
      _warn(self._old, MOVED[self._old])
      return importlib.import_module(MOVED[self._old])
    parts = [importlib.import_module(name) for name in SPLIT[self._old]]
    _warn(self._old, ', '.join(SPLIT[self._old]))
    module = types.ModuleType(self._old, f'Deprecated: the names of {", ".join(SPLIT[self._old])}.')
    for part in parts:
      module.__dict__.update({k: v for k, v in vars(part).items() if not k.startswith('__')})
    return module

  def exec_module(self, module):
    del module  # created complete

  def get_code(self, fullname):
    new = MOVED.get(fullname)
    if new is None:
      raise ImportError(f'{fullname} has no command: its names moved to {SPLIT[fullname]}')
    print(f'warning: python -m {fullname} is deprecated: use python -m {new}', file=sys.stderr)
    return importlib.util.find_spec(new).loader.get_code(new)


class _AliasFinder(importlib.abc.MetaPathFinder):

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname in MOVED or fullname in SPLIT:
      # `python -m <old name>` sets sys.argv[0] to the origin (None crashes absl's flags).
      new = importlib.util.find_spec(MOVED[fullname]) if fullname in MOVED else None
      return importlib.util.spec_from_loader(fullname, _AliasLoader(fullname),
                                             origin=new.origin if new else None)
    return None


def install() -> None:
  """Puts the finder on `sys.meta_path` (once)."""
  if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.append(_AliasFinder())
