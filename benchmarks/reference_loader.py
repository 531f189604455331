"""Imports the authors' PyTorch modules from a local checkout, for comparisons only.

The reference code is never part of this project: point `--reference_dir` at a folder that
holds `SGE.py` and `sgdc.py` from the public repository solstice0621/SGDC. Two things are
adjusted at import time, without editing the files:
- `sgdc.py`'s einops pattern `(hgt*wdt)` raises an EinopsError; the intended `(hgt wdt)` is
  substituted (docs/design.md section 3);
- `timm` (only `timm.models.layers.DropPath`, unused at drop_path=0) is stubbed when absent,
  because timm needs a torchvision that matches the installed torch.
"""
import importlib.util
import os
import sys
import types


def _stub_timm():
  if importlib.util.find_spec('timm') is not None:
    return
  import torch.nn as nn  # pylint: disable=g-import-not-at-top

  class DropPath(nn.Module):
    def __init__(self, p):
      super().__init__()
      if p:
        raise NotImplementedError('the timm stub only supports drop_path=0')

    def forward(self, x):
      return x

  layers = types.ModuleType('timm.models.layers')
  layers.DropPath = DropPath
  models = types.ModuleType('timm.models')
  models.layers = layers
  timm = types.ModuleType('timm')
  timm.models = models
  sys.modules.update({'timm': timm, 'timm.models': models, 'timm.models.layers': layers})


def load_reference(reference_dir: str):
  """Returns the reference `(SGDC, SGE)` classes."""
  paths = {name: os.path.join(reference_dir, name) for name in ('sgdc.py', 'SGE.py')}
  missing = [p for p in paths.values() if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f'reference files not found: {missing}')
  _stub_timm()
  modules = {}
  for name, path in paths.items():
    with open(path) as f:
      source = f.read()
    if name == 'sgdc.py':
      if '(hgt*wdt)' not in source:
        raise ValueError(f'{path}: expected the published einops pattern "(hgt*wdt)"')
      source = source.replace('(hgt*wdt)', '(hgt wdt)')
    module = types.ModuleType(f'reference_{name[:-3].lower()}')
    module.__file__ = path
    exec(compile(source, path, 'exec'), module.__dict__)  # pylint: disable=exec-used
    modules[name] = module
  return modules['sgdc.py'].SGDC, modules['SGE.py'].SGE
