"""Speed and peak memory of one SGDC block (fp32), per implementation, optionally vs PyTorch.

    python benchmarks/bench_sgdc.py [--reference_dir=/path/to/SGDC] [--repeats=5]

Each (size, implementation) runs in its own subprocess so that peak memory is its own:
`peak MB` is the growth of the process's peak resident set over its state just before the
first call (inputs and weights already allocated), i.e. what the computation itself needs.
Times are medians of `--repeats` runs after one warm-up (compilation excluded).
`fwd+bwd` differentiates with respect to the input and all parameters.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = ((4, 64, 64, 256), (2, 128, 128, 256))


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_time(fn, repeats):
  fn()  # warm-up (compiles)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def worker_jax(impl, size, repeats):
  import sgdc_jax  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  b, h, w, c = size
  block = sgdc_jax.SGDC(c, impl=impl)
  x = jax.random.normal(jax.random.key(0), (b, h, w, c))
  g = jax.random.normal(jax.random.key(1), (b, h // 4, w // 4, 16))
  variables = block.init(jax.random.key(2), x, g)
  cot = jax.random.normal(jax.random.key(3), x.shape)
  fwd = jax.jit(block.apply)
  # Every array is an argument: closed-over arrays would become HLO constants that XLA may
  # fold at compile time, flattering the timing.
  fwd_bwd = jax.jit(jax.grad(lambda v, x, g, cot: jnp.sum(block.apply(v, x, g) * cot),
                             argnums=(0, 1)))
  jax.block_until_ready((x, g, variables, cot))
  device = jax.devices()[0]
  on_cpu = device.platform == 'cpu'
  base = _peak_rss_mb() if on_cpu else device.memory_stats()['bytes_in_use'] / 2**20
  t_fwd = _median_time(lambda: jax.block_until_ready(fwd(variables, x, g)), repeats)
  t_bwd = _median_time(lambda: jax.block_until_ready(fwd_bwd(variables, x, g, cot)), repeats)
  peak = _peak_rss_mb() if on_cpu else device.memory_stats()['peak_bytes_in_use'] / 2**20
  temp = fwd_bwd.lower(variables, x, g, cot).compile().memory_analysis()
  return dict(fwd=t_fwd, fwd_bwd=t_bwd, peak_mb=peak - base, device=device.device_kind,
              xla_temp_mb=getattr(temp, 'temp_size_in_bytes', 0) / 2**20)


def worker_torch(reference_dir, size, repeats):
  sys.path.insert(0, os.path.dirname(__file__))
  import torch  # pylint: disable=g-import-not-at-top
  from reference_loader import load_reference
  ref_sgdc, _ = load_reference(reference_dir)
  b, h, w, c = size
  dev = 'cuda' if torch.cuda.is_available() else 'cpu'
  sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
  torch.manual_seed(0)
  block = ref_sgdc(c, guide_ch=16).to(dev)
  x = torch.randn(b, c, h, w, device=dev, requires_grad=True)
  g = torch.randn(b, 16, h // 4, w // 4, device=dev)
  cot = torch.randn(b, c, h, w, device=dev)
  sync()
  base = _peak_rss_mb() if dev == 'cpu' else torch.cuda.memory_allocated() / 2**20

  def fwd():
    with torch.no_grad():
      block(x, g)
    sync()

  def fwd_bwd():
    block.zero_grad()
    x.grad = None
    block(x, g).backward(cot)
    sync()

  t_fwd, t_bwd = _median_time(fwd, repeats), _median_time(fwd_bwd, repeats)
  peak = _peak_rss_mb() if dev == 'cpu' else torch.cuda.max_memory_allocated() / 2**20
  return dict(fwd=t_fwd, fwd_bwd=t_bwd, peak_mb=peak - base, xla_temp_mb=float('nan'),
              device=torch.cuda.get_device_name() if dev == 'cuda' else 'cpu')


def run_worker(kind, size, args):
  cmd = [sys.executable, __file__, '--worker', kind, '--size', ','.join(map(str, size)),
         '--repeats', str(args.repeats)]
  if args.reference_dir:
    cmd += ['--reference_dir', args.reference_dir]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode:
    return {'error': (proc.stderr.strip().splitlines() or ['?'])[-1]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--reference_dir', default='', help='folder with the authors\' sgdc.py')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--impls', default='unfold,shift')
  parser.add_argument('--worker', default='')
  parser.add_argument('--size', default='')
  args = parser.parse_args()
  if args.worker:
    size = tuple(int(v) for v in args.size.split(','))
    if args.worker == 'torch':
      result = worker_torch(args.reference_dir, size, args.repeats)
    else:
      result = worker_jax(args.worker, size, args.repeats)
    print(json.dumps(result))
    return
  kinds = (['torch'] if args.reference_dir else []) + args.impls.split(',')
  print(f'SGDC block, fp32, C=256, heads=4, k=7; median of {args.repeats}; '
        f'{os.cpu_count()} CPUs; peak MB = growth of peak RSS (CPU) or device peak (GPU)')
  print(f"{'size (B,H,W,C)':18} {'impl':14} {'fwd s':>8} {'fwd+bwd s':>10} {'peak MB':>9} "
        f"{'XLA temp MB':>12} {'fwd+bwd speed-up':>17}")
  for size in SIZES:
    results = {kind: run_worker(kind, size, args) for kind in kinds}
    base = results[kinds[0]]
    for kind, r in results.items():
      name = 'pytorch-ref' if kind == 'torch' else f'jax-{kind}'
      if 'error' in r:
        print(f'{str(size):18} {name:14} failed: {r["error"]}')
        continue
      speedup = base.get('fwd_bwd', float('nan')) / r['fwd_bwd']
      print(f"{str(size):18} {name:14} {r['fwd']:8.4f} {r['fwd_bwd']:10.4f} "
            f"{r['peak_mb']:9.0f} {r['xla_temp_mb']:12.0f} {speedup:16.2f}x  {r['device']}")
  print(f'speed-up: relative to {"the PyTorch reference" if args.reference_dir else kinds[0]}')


if __name__ == '__main__':
  main()
