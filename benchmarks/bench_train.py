"""End-to-end training images/s of the loop `python -m sgdc_jax.main` runs, next to the step alone.

  python benchmarks/bench_train.py                                 # demo config, synthetic
  python benchmarks/bench_train.py --name=isic2016 --data_dir=DIR  # a prepared TFDS data set
  python benchmarks/bench_train.py --config=configs/isic.py --config.train.batch_size=32

Each of `--rounds` rounds, in one process, runs
- end to end: `train.train_and_evaluate(config, workdir, run_eval=False, step_callback=...)`,
  the function `sgdc_jax.main` calls: real Grain pipeline (the config's workers and threads),
  device prefetch, metrics merged on the device and fetched, logged and written (TensorBoard,
  JSONL history) every `--log_every` steps; no validation; periodic checkpoints off
  (`checkpoint_every=0`; the final save after the last step is outside the timed windows).
  The loop waits for the device only at those log steps, so the step callbacks there are
  synchronisation points: images/s per window of `log_every` steps, after `--warmup_windows`.
- the step alone: the same jitted step (`train.make_train_step`), compiled ahead, on one fixed
  device batch (the pipeline's first), in windows of the same length ending in a device wait.
Printed: both rates per round and their medians, the gap `1 - end_to_end / step_alone` (median
of the per-round gaps), the input pipeline's own rate (`throughput.train_pipeline_rate`, same
config), MFU (XLA's FLOPs per step x steps/s / the device peak: measured with a float32
matmul on a CPU, data-sheet values for GPUs/TPUs, see `throughput.PEAK_TFLOPS`) and compile
times (the loop's, each round: the first may miss the persistent compilation cache, which
every entry point enables; and the step alone's). The last line is the same as JSON.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags
import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import throughput  # noqa: E402  (benchmarks/)
from sgdc_jax.run import config as config_lib  # noqa: E402
from sgdc_jax.run import experiment, train  # noqa: E402
from sgdc_jax.data import pipeline  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(_REPO, 'configs', 'demo.py'), 'Config file (default: the demo).',
    lock_config=True)
_NAME = flags.DEFINE_string('name', '', 'Train on this prepared TFDS data set (data.name).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'Its TFDS data dir (data.data_dir).')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'End-to-end / step-alone rounds.')
_WINDOWS = flags.DEFINE_integer('windows', 3, 'Timed windows per round.')
_WARMUP = flags.DEFINE_integer('warmup_windows', 1, 'Untimed windows first in each round.')
_LOG_EVERY = flags.DEFINE_integer('log_every', 5,
                                  'train.log_every = window length in steps (the loop fetches '
                                  'metrics there; smaller = more host waits than a real run).')
_WORKDIR = flags.DEFINE_string('workdir', '', 'Where the runs write (default: a temp dir).')


def end_to_end(config, workdir: str) -> tuple[list[float], train.TrainResult]:
  """Images/s of each timed window of one `train_and_evaluate` run."""
  log_every = int(config.train.log_every)
  marks = {}

  def on_step(step: int) -> None:
    if step % log_every == 0:
      marks[step] = time.perf_counter()

  result = train.train_and_evaluate(config, workdir, step_callback=on_step, run_eval=False)
  # Window k (k = 1, 2, ...) ends at mark warmup + k and starts at the mark before it.
  ends = sorted(marks)[_WARMUP.value - 1:]
  images = log_every * int(config.train.batch_size)
  return [images / (marks[b] - marks[a]) for a, b in zip(ends, ends[1:])], result


def bench_config():
  """The config under test with the benchmark's overrides."""
  config = _CONFIG.value.copy_and_resolve_references()
  if _NAME.value:
    config.data.name, config.data.data_dir = _NAME.value, _DATA_DIR.value
  config.train.log_every = _LOG_EVERY.value
  # Windows end at log steps; one more step so the final save falls after the last window.
  config.train.num_steps = (_WARMUP.value + _WINDOWS.value) * _LOG_EVERY.value + 1
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, config.train.num_steps - 1)
  config.train.eval_every = 0
  config.train.checkpoint_every = 0
  return config


def main(argv):
  """Runs the rounds and prints the comparison."""
  del argv
  if _WARMUP.value < 1 or _WINDOWS.value < 1:
    raise app.UsageError('--warmup_windows and --windows must be >= 1 (the first window has '
                         'no start mark)')
  config = bench_config()
  config_lib.validate_config(config, mode='train')  # before the step alone compiles
  cache_dir = experiment.enable_compilation_cache(config)
  batch = int(config.train.batch_size)
  workers, threads = pipeline.resolve_workers(config.data)
  device = jax.devices()[0]
  print(f'device {device.device_kind} x{jax.device_count()}; usable CPUs '
        f'{pipeline.usable_cpus()}, load average {os.getloadavg()[0]:.1f}; data '
        f'{config.data.name} at {config.data.image_size}x{config.data.image_size}, batch {batch}, '
        f'dtype {config.model.dtype}; Grain workers {workers}, read threads {threads}; '
        f'compilation cache {cache_dir}', flush=True)
  root = _WORKDIR.value or tempfile.mkdtemp(prefix='bench_train_')

  host = throughput.first_batch(config.data, batch)
  alone = throughput.StepAlone(config, host)
  rounds = []
  for r in range(_ROUNDS.value):
    e2e, result = end_to_end(config, os.path.join(root, f'round{r}'))
    compile_s = result.compile_s
    del result  # its Grain iterator: idle worker processes end before the step-alone timing
    gc.collect()
    step = alone.rates(_WINDOWS.value, _LOG_EVERY.value, _WARMUP.value)
    rounds.append(dict(e2e=throughput.median(e2e), step=throughput.median(step),
                       compile_s=compile_s))
    print(f'round {r + 1}: end to end {rounds[-1]["e2e"]:.2f} images/s '
          f'(windows {", ".join(f"{v:.2f}" for v in e2e)}), step alone '
          f'{rounds[-1]["step"]:.2f} (windows {", ".join(f"{v:.2f}" for v in step)}); '
          f'loop compile {compile_s:.1f} s', flush=True)
  feed = throughput.train_pipeline_rate(config.data, batch)

  e2e = throughput.median([r['e2e'] for r in rounds])
  step = throughput.median([r['step'] for r in rounds])
  gap = throughput.median([1 - r['e2e'] / r['step'] for r in rounds])
  peak, peak_source = throughput.peak_flops(str(config.model.dtype))
  flops = alone.flops_per_step
  mfu = {k: (flops * v / batch / peak if peak else None) for k, v in
         (('e2e', e2e), ('step', step))}
  print(f'\nend to end {e2e:.2f} images/s, step alone {step:.2f} images/s: gap {100 * gap:.1f} % '
        f'(median over {_ROUNDS.value} rounds of {_WINDOWS.value} windows x '
        f'{_LOG_EVERY.value} steps)')
  print(f'input pipeline alone: {feed:.1f} images/s = {feed / step:.1f}x the step alone')
  print(f'XLA: {flops / batch / 1e9:.2f} GFLOP per image; peak '
        f'{peak / 1e9 if peak else float("nan"):.1f} GFLOP/s ({peak_source}); MFU end to end '
        f'{mfu["e2e"] if peak else float("nan"):.3f}, step alone '
        f'{mfu["step"] if peak else float("nan"):.3f}')
  loop_compile = ', '.join(f'{r["compile_s"]:.1f}' for r in rounds)
  print(f'compile: loop {loop_compile} s by round; step alone {alone.compile_s:.1f} s')
  print(json.dumps(dict(
      device=device.device_kind, devices=jax.device_count(), cpus=pipeline.usable_cpus(),
      data=config.data.name, image_size=int(config.data.image_size), batch=batch,
      dtype=str(config.model.dtype), encoder=str(config.model.encoder), workers=workers,
      read_threads=threads, e2e_images_per_s=round(e2e, 3), step_images_per_s=round(step, 3),
      gap=round(gap, 4), pipeline_images_per_s=round(feed, 1),
      gflop_per_image=round(flops / batch / 1e9, 3),
      peak_gflops=round(peak / 1e9, 1) if peak else None,
      mfu_e2e=round(mfu['e2e'], 4) if peak else None,
      mfu_step=round(mfu['step'], 4) if peak else None,
      loop_compile_s=[round(r['compile_s'], 1) for r in rounds],
      step_compile_s=round(alone.compile_s, 1))))


if __name__ == '__main__':
  app.run(main)
