"""Parameter count and forward FLOPs per image of SGDCNet (default: ResNet-50, 256x256).

    python benchmarks/model_cost.py [--size 256] [--encoder resnet50] [--compile]
    python benchmarks/model_cost.py --output_strides [--compile]

FLOPs come from XLA's cost analysis of the jitted eval-mode forward at batch 1 (a multiply-add
counts as 2 FLOPs), on the backend jax picks (CPU here). Nothing is executed: the variables and
the input are abstract (`jax.ShapeDtypeStruct`). `--compile` reads the cost of the compiled
executable instead of the lowered HLO (slower; backend-specific fusions).

`--output_strides` prints, instead, a table over `model.output_stride` 4 / 2 / 1 for the default
network (ResNet-50, D=256) at 256x256 and the CPU network of the demo and the `:cpu` variants
(`sgdc_jax.run.config.use_cpu_model`: ResNet-18, D=64) at 96x96 and 576x576.
"""
from __future__ import annotations

import argparse

import sgdc_jax  # noqa: F401  (XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np

from sgdc_jax.models import ResNet, build_model, default_model_config
from sgdc_jax.run.config import get_config, use_cpu_model


def _flops(fn, *args, compile_: bool) -> float:
  lowered = jax.jit(fn).lower(*args)
  cost = lowered.compile().cost_analysis() if compile_ else lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per device
    cost = cost[0]
  return float(cost['flops'])


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _cost(model_config, size: int, compile_: bool) -> tuple[int, float]:
  """(parameters, forward FLOPs per image) of the network at a `size` x `size` input."""
  model = build_model(model_config)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
  flops = _flops(lambda v, im: model.apply(v, im, train=False), variables, x, compile_=compile_)
  return _count(variables['params']), flops


def output_stride_table(compile_: bool) -> None:
  """Markdown table of parameters and FLOPs per `model.output_stride` (see module docstring)."""
  cpu = get_config()
  use_cpu_model(cpu)
  networks = [('default (ResNet-50, D=256)', default_model_config(), (256,)),
              ('CPU (ResNet-18, D=64)', cpu.model, (96, 576))]
  print(f'backend: {jax.default_backend()}, batch 1, eval-mode forward, cost from '
        f'{"compiled" if compile_ else "lowered"} HLO')
  print('| network | input | output_stride | parameters | added | forward GFLOPs / image | '
        'added |')
  print('|---|---|---|---|---|---|---|')
  for name, model_config, sizes in networks:
    for size in sizes:
      base = None
      for stride in (4, 2, 1):
        cfg = model_config.copy_and_resolve_references()
        cfg.output_stride = stride
        params, flops = _cost(cfg, size, compile_)
        base = base or (params, flops)
        added = (f'+{params - base[0]:,}', f'+{(flops - base[1]) / 1e9:.2f} '
                 f'(+{100 * (flops / base[1] - 1):.1f}%)') if stride != 4 else ('', '')
        print(f'| {name} | {size}x{size} | {stride} | {params:,} | {added[0]} | '
              f'{flops / 1e9:.2f} | {added[1]} |', flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--encoder', default='resnet50')
  parser.add_argument('--compile', action='store_true')
  parser.add_argument('--output_strides', action='store_true',
                      help='table over model.output_stride 4/2/1 (see the module docstring)')
  args = parser.parse_args()
  if args.output_strides:
    output_stride_table(args.compile)
    return

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
