"""Parameter count and forward FLOPs per image of SGDCNet (default: ResNet-50, 256x256).

    python benchmarks/model_cost.py [--size 256] [--encoder resnet50] [--compile]

FLOPs come from XLA's cost analysis of the jitted eval-mode forward at batch 1 (a multiply-add
counts as 2 FLOPs), on the backend jax picks (CPU here). Nothing is executed: the variables and
the input are abstract (`jax.ShapeDtypeStruct`). `--compile` reads the cost of the compiled
executable instead of the lowered HLO (slower; backend-specific fusions).
"""
from __future__ import annotations

import argparse

import sgdc_jax  # noqa: F401  (XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np

from sgdc_jax.models import ResNet, build_model, default_model_config


def _flops(fn, *args, compile_: bool) -> float:
  lowered = jax.jit(fn).lower(*args)
  cost = lowered.compile().cost_analysis() if compile_ else lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per device
    cost = cost[0]
  return float(cost['flops'])


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--encoder', default='resnet50')
  parser.add_argument('--compile', action='store_true')
  args = parser.parse_args()

  x = jax.ShapeDtypeStruct((1, args.size, args.size, 3), jnp.float32)
  print(f'backend: {jax.default_backend()}, input 1x{args.size}x{args.size}x3, '
        f'encoder {args.encoder}, cost from {"compiled" if args.compile else "lowered"} HLO')
  for source in ('structure', 'pooled', 'none'):
    cfg = default_model_config()
    cfg.encoder = args.encoder
    cfg.kernel_source = source
    model = build_model(cfg)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
    params = variables['params']
    flops = _flops(lambda v, im: model.apply(v, im, train=False), variables, x,
                   compile_=args.compile)
    parts = ', '.join(f'{k} {_count(v) / 1e6:.3f}M' for k, v in sorted(params.items()))
    print(f'kernel_source={source:9s} params {_count(params):,} ({_count(params) / 1e6:.2f}M; '
          f'{parts})')
    print(f'{"":23s}forward GFLOPs/image {flops / 1e9:.2f}')

  encoder = ResNet(int(args.encoder.removeprefix('resnet')))
  enc_vars = jax.eval_shape(lambda: encoder.init(jax.random.key(0), jnp.zeros(x.shape)))
  enc_flops = _flops(lambda v, im: encoder.apply(v, im), enc_vars, x, compile_=args.compile)
  print(f'encoder alone: params {_count(enc_vars["params"]):,}, forward GFLOPs/image '
        f'{enc_flops / 1e9:.2f} (torchvision ResNet-50: 4.09 GMACs at 224 -> '
        f'{2 * 4.09 * (args.size / 224) ** 2:.2f} GFLOPs at {args.size} incl. fc)')


if __name__ == '__main__':
  main()
