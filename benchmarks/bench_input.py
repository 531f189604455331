"""Input-pipeline throughput: training examples per second for 0, 1, 2 Grain worker processes.

Run: `python benchmarks/bench_input.py [--image_size 256] [--batch_size 16] [--workers 0,1,2]
[--synthetic_size 240,320] [--dataset NAME --data_dir DIR]` (CPU only, 1-2 min on 2 cores).

What is measured: `create_train_iterator` with the default data config (synthetic lesions
generated on the fly at 240x320, random scale-crop to `image_size`, flips, 90-degree turns,
colour jitter, ImageNet normalisation, boundary target), one JAX process. After
`--warmup` batches (worker start-up, buffers filling), `--windows` windows of
`--window_batches` batches are timed; the table gives the median and the range of
examples/s over the windows. The consumer does nothing else, so this is the rate the
pipeline can feed; compare it with the training step's examples/s on the same machine.

Columns:
  workers     Grain worker processes (`data.num_workers`); 0 = the calling process only
  threads     read threads per process (`data.read_threads`)
  ex/s        median examples/s over the timed windows
  min, max    slowest and fastest window
  ms/example  1000 / median ex/s
A first line gives the CPU cost per example of reading (here: generating) a raw example and
of the training transform, measured in the calling process.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sgdc_jax  # noqa: E402,F401  (XLA flags first)
from sgdc_jax.data import pipeline  # noqa: E402


def measure(config, batch_size: int, warmup: int, windows: int, window_batches: int):
  """Returns examples/s of each timed window."""
  it = pipeline.create_train_iterator(config, batch_size, seed=0, process_index=0, process_count=1)
  try:
    for _ in range(warmup):
      next(it)
    rates = []
    for _ in range(windows):
      start = time.perf_counter()
      for _ in range(window_batches):
        batch = next(it)
      rates.append(window_batches * batch['image'].shape[0] / (time.perf_counter() - start))
    return rates
  finally:
    if hasattr(it, 'close'):
      it.close()


def component_ms(config, repeats: int = 20):
  """Median CPU ms per example of raw generation/reading and of the training transform."""
  source = pipeline.open_source(config, config.train_split)
  transform = pipeline.TrainTransform(config)
  rng = np.random.default_rng(0)
  read, prep = [], []
  for i in range(repeats):
    start = time.process_time()
    example = source[i % len(source)]
    mid = time.process_time()
    transform.random_map(example, rng)
    read.append(mid - start)
    prep.append(time.process_time() - mid)
  return 1000 * float(np.median(read)), 1000 * float(np.median(prep))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--image_size', type=int, default=256)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--workers', default='0,1,2', help='comma-separated worker counts')
  parser.add_argument('--read_threads', type=int, default=None,
                      help='read threads per process (default: the data config default)')
  parser.add_argument('--dataset', default=pipeline.SYNTHETIC)
  parser.add_argument('--synthetic_size', default='240,320',
                      help='raw H,W of the generated synthetic images')
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--windows', type=int, default=5)
  parser.add_argument('--window_batches', type=int, default=4)
  args = parser.parse_args()

  config = pipeline.default_data_config()
  config.name, config.data_dir, config.image_size = args.dataset, args.data_dir, args.image_size
  config.synthetic.height, config.synthetic.width = (int(v) for v in args.synthetic_size.split(','))
  if args.read_threads is not None:
    config.read_threads = args.read_threads
  raw = f' raw={args.synthetic_size}' if config.name == pipeline.SYNTHETIC else ''
  print(f'dataset={config.name}{raw} image_size={args.image_size} batch={args.batch_size} '
        f'augment={config.augment.enabled} cpus={os.cpu_count()} '
        f'windows={args.windows}x{args.window_batches} batches after {args.warmup} warm-up')
  read_ms, prep_ms = component_ms(config)
  print(f'per example (CPU ms, median): read/generate {read_ms:.2f}, train transform {prep_ms:.2f}')
  print(f'{"workers":>7} {"threads":>7} {"ex/s":>8} {"min":>8} {"max":>8} {"ms/example":>10}')
  for workers in [int(w) for w in args.workers.split(',')]:
    config.num_workers = workers
    rates = measure(config, args.batch_size, args.warmup, args.windows, args.window_batches)
    median = float(np.median(rates))
    print(f'{workers:>7} {config.read_threads:>7} {median:>8.1f} {min(rates):>8.1f} '
          f'{max(rates):>8.1f} {1000 / median:>10.2f}', flush=True)


if __name__ == '__main__':
  main()
