"""Our SGE/SGDC against the authors' PyTorch modules, weights moved with sgdc_jax.models.convert.

    python benchmarks/compare_reference.py --reference_dir=/path/to/SGDC

Needs torch and einops. Prints the max abs difference of each output (eval mode) for a few
sizes; the acceptance bar is 1e-4. On a GPU both frameworks use TF32 for fp32 matmuls by
default (differences ~4e-4); compare at full precision with
`JAX_DEFAULT_MATMUL_PRECISION=highest NVIDIA_TF32_OVERRIDE=0`.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import sgdc_jax  # pylint: disable=g-import-not-at-top
import numpy as np
import torch

from reference_loader import load_reference
from sgdc_jax import paths
from sgdc_jax.models.convert import torch_state_dict_to_flax


def _randomise(module, rng):
  """Non-trivial weights: random layer scales (default 1e-6 hides the branches) and BN stats."""
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name in ('ls1', 'ls2'):
        p.copy_(torch.from_numpy(rng.uniform(0.5, 1.0, p.shape).astype(np.float32)))
      elif name.endswith('bias'):
        p.copy_(torch.from_numpy(rng.normal(0, 0.1, p.shape).astype(np.float32)))
    for name, b in module.named_buffers():
      if name.endswith('running_mean'):
        b.copy_(torch.from_numpy(rng.normal(0, 0.2, b.shape).astype(np.float32)))
      elif name.endswith('running_var'):
        b.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, b.shape).astype(np.float32)))
  return module.eval()


def _nhwc(t):
  return t.detach().permute(0, 2, 3, 1).numpy()


def compare_sgdc(ref_cls, b, h, w, dim, guide, gh, gw, rng):
  ref = _randomise(ref_cls(dim, guide_ch=guide), rng)
  x = torch.from_numpy(rng.normal(size=(b, dim, h, w)).astype(np.float32))
  g = torch.from_numpy(rng.normal(size=(b, guide, gh, gw)).astype(np.float32))
  with torch.no_grad():
    expected = _nhwc(ref(x, g))
  variables = torch_state_dict_to_flax(ref.state_dict(), 'sgdc')
  diffs = {}
  for impl in ('unfold', 'shift'):
    ours = sgdc_jax.SGDC(dim, guide_channels=guide, impl=impl).apply(
        variables, _nhwc(x), _nhwc(g))
    diffs[impl] = float(np.abs(np.asarray(ours) - expected).max())
  return diffs, float(np.abs(expected).max())


def compare_sge(ref_cls, b, deep_shape, shallow_shape, rng):
  (hd, wd, cd), (hs, ws, cs) = deep_shape, shallow_shape
  ref = _randomise(ref_cls(s4_in=cd, s1_in=cs), rng)
  deep = torch.from_numpy(rng.normal(size=(b, cd, hd, wd)).astype(np.float32))
  shallow = torch.from_numpy(rng.normal(size=(b, cs, hs, ws)).astype(np.float32))
  with torch.no_grad():
    edge_ref, guide_ref = ref(deep, shallow)
  variables = torch_state_dict_to_flax(ref.state_dict(), 'sge')
  edge, guide = sgdc_jax.SGE().apply(variables, _nhwc(deep), _nhwc(shallow))
  return {'edge_logits': float(np.abs(np.asarray(edge) - _nhwc(edge_ref)).max()),
          'guidance': float(np.abs(np.asarray(guide) - _nhwc(guide_ref)).max())}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--reference_dir', required=True, type=paths.expand)  # `=~/...` too
  args = parser.parse_args()
  ref_sgdc, ref_sge = load_reference(args.reference_dir)
  rng = np.random.default_rng(0)
  torch.manual_seed(0)
  worst = 0.0
  print('module  size                                 max|ours - reference|')
  for size in [(2, 16, 24, 64, 16, 8, 12), (1, 33, 17, 256, 16, 9, 5), (4, 64, 64, 256, 16, 64, 64)]:
    diffs, scale = compare_sgdc(ref_sgdc, *size, rng)
    worst = max(worst, *diffs.values())
    print(f'SGDC    x {size[:4]} g {size[4:]}  ' +
          '  '.join(f'{k}={v:.2e}' for k, v in diffs.items()) + f'  (|y|max {scale:.1f})')
  for b, deep, shallow in [(2, (8, 8, 2048), (64, 64, 256)), (1, (5, 7, 2048), (19, 27, 256))]:
    diffs = compare_sge(ref_sge, b, deep, shallow, rng)
    worst = max(worst, *diffs.values())
    print(f'SGE     deep {deep} shallow {shallow}  ' +
          '  '.join(f'{k}={v:.2e}' for k, v in diffs.items()))
  print(f'worst max abs difference: {worst:.2e} ({"PASS" if worst < 1e-4 else "FAIL"} at 1e-4)')
  return 0 if worst < 1e-4 else 1


if __name__ == '__main__':
  sys.exit(main())
