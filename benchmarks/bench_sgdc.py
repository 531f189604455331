"""Speed and memory of one SGDC block and of the aggregation alone, per implementation.

    python benchmarks/bench_sgdc.py [--reference_dir=/path/to/SGDC] [--repeats=5]
        [--impls=unfold,shift,pallas] [--dtypes=float32,bfloat16] [--tables=block,aggregate]
        [--sizes=4x64x64x256,2x128x128x256] [--peak_gbps=3350]
        [--pallas_launch=8x8/4/2,16x8/8/3]

Two tables:
- `block`: the SGDC block (C=256, heads=4, k=7), optionally against the PyTorch reference.
  `fwd+bwd` differentiates with respect to the input and all parameters. Each (size,
  implementation) runs in its own subprocess so that peak memory is its own: `peak MB` is the
  growth of the process's peak resident set (CPU) or of the device's peak allocation (GPU)
  over the state just before the first call, i.e. what the computation itself needs.
  `bwd/fwd` is fwd+bwd time over fwd time of the same row; `fwd x` and `fwd+bwd x` are the
  speed-ups over the first row of the size (the PyTorch reference when given), measured in
  the same run, so they hold on a shared machine whose absolute times drift. The header
  gives the load average when the table starts.
- `aggregate`: `softmax_aggregate` alone (logits in, softmax over taps included), with the
  achieved bandwidth = minimum bytes / time. Minimum bytes: x, logits and out for the
  forward; plus g (the output cotangent), dx and dlogits for forward+backward. `% peak` is
  that bandwidth over the device's peak memory bandwidth (`--peak_gbps`, or a known GPU).
  `max err` compares out, dx and dlogits with `unfold` on the same inputs: the check of the
  compiled (not interpreted) Pallas kernel on the device. `--pallas_launch` adds one row per
  Triton launch configuration `THxTW/num_warps/num_stages` (e.g. `pallas@16x8/8/3`), to tune
  `TILE`, `NUM_WARPS` and `NUM_STAGES` of `sgdc_jax/ops/pallas_aggregate.py` on a GPU.

Times are medians of `--repeats` runs after one warm-up (compilation excluded). `pallas` rows
are skipped on CPU, where the kernel only runs in Pallas interpret mode (a correctness tool,
not a speed measurement).
"""
import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = ((4, 64, 64, 256), (2, 128, 128, 256))
HEADS, KERNEL = 4, 7
# Peak memory bandwidth, GB/s, of GPUs named by `device_kind` (vendor data sheets).
PEAK_GBPS = {'H100 80GB HBM3': 3350, 'H100 PCIe': 2000, 'H200': 4800, 'A100-SXM4-80GB': 2039,
             'A100-SXM4-40GB': 1555, 'A100 80GB PCIe': 1935, 'L4': 300}
INTERPRET_NOTE = 'skipped: Pallas runs in interpret mode on CPU (not a speed measurement)'


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


def _interpret_only(impl):
  import jax  # pylint: disable=g-import-not-at-top
  return impl.startswith('pallas') and jax.default_backend() == 'cpu'


def parse_launch(spec):
  """'16x8/8/3' -> dict(tile=(16, 8), num_warps=8, num_stages=3) (a --pallas_launch entry)."""
  try:
    tile, warps, stages = spec.split('/')
    th, tw = tile.split('x')
    return dict(tile=(int(th), int(tw)), num_warps=int(warps), num_stages=int(stages))
  except ValueError:
    raise SystemExit(f'--pallas_launch entry {spec!r}: expected THxTW/num_warps/num_stages, '
                     'e.g. 16x8/8/3') from None


def _aggregate_fn(impl):
  """`softmax_aggregate` for an impl name, or the Pallas kernel at a launch ('pallas@...')."""
  from sgdc_jax.ops import softmax_aggregate  # pylint: disable=g-import-not-at-top
  from sgdc_jax.ops.pallas_aggregate import softmax_aggregate_pallas
  if impl.startswith('pallas@'):
    launch = parse_launch(impl.split('@', 1)[1])
    return lambda x, l: softmax_aggregate_pallas(x, l, KERNEL, **launch)
  return lambda x, l: softmax_aggregate(x, l, KERNEL, impl)


def worker_jax(impl, size, repeats, dtype, allow_interpret=False):
  """Times the SGDC block (fwd, fwd+bwd); `allow_interpret` times Pallas in interpret mode."""
  import sgdc_jax  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  if _interpret_only(impl) and not allow_interpret:
    return {'skipped': INTERPRET_NOTE}
  dtype = jnp.dtype(dtype)
  b, h, w, c = size
  block = sgdc_jax.SGDC(c, num_heads=HEADS, kernel_size=KERNEL, impl=impl, dtype=dtype)
  x = jax.random.normal(jax.random.key(0), (b, h, w, c), dtype)
  g = jax.random.normal(jax.random.key(1), (b, h // 4, w // 4, 16), dtype)
  variables = block.init(jax.random.key(2), x, g)
  cot = jax.random.normal(jax.random.key(3), x.shape, dtype)
  fwd = jax.jit(block.apply)
  # Every array is an argument: closed-over arrays would become HLO constants that XLA may
  # fold at compile time, flattering the timing.
  # Compiled once, for the timing and the memory analysis alike.
  fwd_bwd = jax.jit(jax.grad(
      lambda v, x, g, cot: jnp.sum((block.apply(v, x, g) * cot).astype(jnp.float32)),
      argnums=(0, 1))).lower(variables, x, g, cot).compile()
  jax.block_until_ready((x, g, variables, cot))
  device = jax.devices()[0]
  on_cpu = device.platform == 'cpu'
  base = _peak_rss_mb() if on_cpu else device.memory_stats()['bytes_in_use'] / 2**20
  t_fwd = _median_time(lambda: jax.block_until_ready(fwd(variables, x, g)), repeats)
  t_bwd = _median_time(lambda: jax.block_until_ready(fwd_bwd(variables, x, g, cot)), repeats)
  peak = _peak_rss_mb() if on_cpu else device.memory_stats()['peak_bytes_in_use'] / 2**20
  temp = fwd_bwd.memory_analysis()
  return dict(fwd=t_fwd, fwd_bwd=t_bwd, peak_mb=peak - base, device=device.device_kind,
              xla_temp_mb=getattr(temp, 'temp_size_in_bytes', 0) / 2**20)


# unfold's (out, (dx, dlogits)) per (size, dtype), for the max err of every other impl: one
# compile of the reference per shape when one process times many impls and launches.
_UNFOLD_REFERENCE = {}


def worker_aggregate(impl, size, repeats, dtype, allow_interpret=False):
  """Times `softmax_aggregate` alone; returns times and the minimum bytes moved.

  `allow_interpret` runs Pallas rows on CPU too, in interpret mode (a test of the code path
  with meaningless times: `benchmarks/device_check.py --cpu`).
  """
  import sgdc_jax  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  import jax
  import jax.numpy as jnp
  if _interpret_only(impl) and not allow_interpret:
    return {'skipped': INTERPRET_NOTE}
  dtype = jnp.dtype(dtype)
  b, h, w, c = size
  x = jax.random.normal(jax.random.key(0), (b, h, w, c), dtype)
  logits = jax.random.normal(jax.random.key(1), (b, h, w, HEADS, KERNEL**2), dtype)
  cot = jax.random.normal(jax.random.key(2), x.shape, dtype)
  fwd = jax.jit(_aggregate_fn(impl))

  def vjp(x, l, cot, impl=impl):
    out, pullback = jax.vjp(_aggregate_fn(impl), x, l)
    return out, pullback(cot)

  fwd_bwd = jax.jit(vjp)
  jax.block_until_ready((x, logits, cot))
  t_fwd = _median_time(lambda: jax.block_until_ready(fwd(x, logits)), repeats)
  t_bwd = _median_time(lambda: jax.block_until_ready(fwd_bwd(x, logits, cot)), repeats)
  # The compiled kernel checked on the device against the reference (tests only cover
  # interpret mode): largest |difference| over out, dx and dlogits, float32.
  got = fwd_bwd(x, logits, cot)
  key = (tuple(size), str(dtype))  # the inputs depend on nothing else
  if impl == 'unfold':
    _UNFOLD_REFERENCE[key] = got
  elif key not in _UNFOLD_REFERENCE:
    _UNFOLD_REFERENCE[key] = jax.jit(functools.partial(vjp, impl='unfold'))(x, logits, cot)
  want = _UNFOLD_REFERENCE[key]
  max_err = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
  fwd_bytes = 2 * x.nbytes + logits.nbytes  # x, logits, out
  return dict(fwd=t_fwd, fwd_bwd=t_bwd, fwd_bytes=fwd_bytes,
              fwd_bwd_bytes=2 * fwd_bytes,  # + g, dx, dlogits
              max_err=max_err, device=jax.devices()[0].device_kind)


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


def run_worker(kind, size, args, dtype='float32'):
  cmd = [sys.executable, __file__, '--worker', kind, '--size', ','.join(map(str, size)),
         '--repeats', str(args.repeats), '--dtypes', dtype]
  if args.reference_dir:
    cmd += ['--reference_dir', args.reference_dir]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode:
    return {'error': (proc.stderr.strip().splitlines() or ['?'])[-1]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_gbps(args, device):
  if args.peak_gbps:
    return args.peak_gbps
  return next((v for k, v in PEAK_GBPS.items() if k in device), float('nan'))


def block_table(args, impls, dtype):
  kinds = (['torch'] if args.reference_dir and dtype == 'float32' else []) + impls
  load = ', '.join(f'{v:.2f}' for v in os.getloadavg())
  print(f'\nSGDC block, {dtype}, C=256, heads={HEADS}, k={KERNEL}; median of {args.repeats}; '
        f'{os.cpu_count()} CPUs, load average {load}; peak MB = growth of peak RSS (CPU) or '
        'device peak (GPU)')
  print(f"{'size (B,H,W,C)':18} {'impl':14} {'fwd s':>8} {'fwd+bwd s':>10} {'bwd/fwd':>8} "
        f"{'peak MB':>9} {'XLA temp MB':>12} {'fwd x':>7} {'fwd+bwd x':>10}")
  for size in args.sizes:
    results = {kind: run_worker(kind, size, args, dtype) for kind in kinds}
    base = results[kinds[0]]
    for kind, r in results.items():
      name = 'pytorch-ref' if kind == 'torch' else f'jax-{kind}'
      if 'error' in r or 'skipped' in r:
        print(f'{str(size):18} {name:14} {r.get("error") or r["skipped"]}')
        continue
      fwd_x = base.get('fwd', float('nan')) / r['fwd']
      speedup = base.get('fwd_bwd', float('nan')) / r['fwd_bwd']
      print(f"{str(size):18} {name:14} {r['fwd']:8.4f} {r['fwd_bwd']:10.4f} "
            f"{r['fwd_bwd'] / r['fwd']:8.2f} {r['peak_mb']:9.0f} {r['xla_temp_mb']:12.0f} "
            f"{fwd_x:6.2f}x {speedup:9.2f}x  {r['device']}")
  print(f'fwd x, fwd+bwd x: speed-ups relative to '
        f'{"the PyTorch reference" if kinds[0] == "torch" else kinds[0]} in this run')


def aggregate_table(args, impls, dtype):
  print(f'\nAggregation alone (softmax over taps + k x k aggregation), {dtype}, heads={HEADS}, '
        f'k={KERNEL}; median of {args.repeats}; GB/s = minimum bytes / time')
  print(f"{'size (B,H,W,C)':18} {'impl':16} {'fwd ms':>9} {'GB/s':>7} {'% peak':>7} "
        f"{'fwd+bwd ms':>11} {'GB/s':>7} {'% peak':>7} {'fwd+bwd speed-up':>17} "
        f"{'max err':>8}")
  launches = [f'pallas@{spec}' for spec in args.pallas_launch.split(',') if spec]
  for size in args.sizes:
    results = {impl: run_worker(f'aggregate:{impl}', size, args, dtype)
               for impl in impls + launches}
    base = next((r for r in results.values() if 'fwd_bwd' in r), {})
    for impl, r in results.items():
      if 'error' in r or 'skipped' in r:
        print(f'{str(size):18} {impl:16} {r.get("error") or r["skipped"]}')
        continue
      peak = _peak_gbps(args, r['device'])
      cells = []
      for key in ('fwd', 'fwd_bwd'):
        gbps = r[f'{key}_bytes'] / r[key] / 1e9
        share = f'{100 * gbps / peak:6.0f}%' if peak == peak else '      -'  # nan: unknown
        cells.append(f'{r[key] * 1e3:{9 if key == "fwd" else 11}.2f} {gbps:7.3g} {share}')
      speedup = base.get('fwd_bwd', float('nan')) / r['fwd_bwd']
      print(f"{str(size):18} {impl:16} {' '.join(cells)} {speedup:16.2f}x {r['max_err']:8.1e}  "
            f"{r['device']}")
  print('% peak: of --peak_gbps or the data-sheet bandwidth of a known GPU (- if unknown); '
        'speed-up: relative to the first implementation; max err: largest |difference| of '
        'out, dx, dlogits from unfold')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--reference_dir', default='', help='folder with the authors\' sgdc.py')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--impls', default='unfold,shift,pallas')
  parser.add_argument('--dtypes', default='float32', help='comma-separated: float32,bfloat16')
  parser.add_argument('--tables', default='block,aggregate')
  parser.add_argument('--sizes', default=','.join('x'.join(map(str, s)) for s in SIZES),
                      help='comma-separated BxHxWxC sizes of both tables')
  parser.add_argument('--peak_gbps', type=float, default=0.0,
                      help='device memory bandwidth for the %% peak column (GB/s)')
  parser.add_argument('--pallas_launch', default='',
                      help='extra aggregate rows: comma-separated THxTW/num_warps/num_stages')
  parser.add_argument('--worker', default='')
  parser.add_argument('--size', default='')
  args = parser.parse_args()
  if args.worker:
    size = tuple(int(v) for v in args.size.split(','))
    if args.worker == 'torch':
      result = worker_torch(args.reference_dir, size, args.repeats)
    elif args.worker.startswith('aggregate:'):
      result = worker_aggregate(args.worker.split(':', 1)[1], size, args.repeats, args.dtypes)
    else:
      result = worker_jax(args.worker, size, args.repeats, args.dtypes)
    print(json.dumps(result))
    return
  for spec in filter(None, args.pallas_launch.split(',')):
    parse_launch(spec)  # a malformed entry stops here, before any worker runs
  args.sizes = [tuple(int(v) for v in spec.split('x')) for spec in args.sizes.split(',')]
  impls = args.impls.split(',')
  for dtype in args.dtypes.split(','):
    if 'block' in args.tables:
      block_table(args, impls, dtype)
    if 'aggregate' in args.tables:
      aggregate_table(args, impls, dtype)


if __name__ == '__main__':
  main()
