"""Input-pipeline throughput alone (images/s), new path vs the previous one, vs what training eats.

  python benchmarks/bench_input.py                                  # demo config, synthetic
  python benchmarks/bench_input.py --name=isic2016 --data_dir=DIR   # + a prepared TFDS set
  python benchmarks/bench_input.py --config=configs/isic.py --consume_rate=1200

What is measured, in one process, `--runs` times in turn (medians over runs; ratios are taken
within a run, so a machine whose load changes between runs still compares like with like):
- train: `pipeline.create_train_dataset(config.data, train.batch_size, ...)` of the config,
  images/s over `--windows` windows of `--window_batches` batches after `--warmup_batches`;
- eval: `pipeline.create_eval_iterator` over the eval split (the synthetic one enlarged to
  `--eval_records`), images/s of one pass after its first batch (worker start-up excluded);
- each with `data.num_workers` = -1 (auto: `pipeline.resolve_workers`) and 0, and with the
  new path and `reference=True` (the previous one: full-size decode, float32 colour jitter).
The consumer does nothing else, so this is what the pipeline can feed. Then the rate the
config's jitted train step consumes (`throughput.StepAlone`, unless `--consume_rate`), and the
check of the target: pipeline (new path, auto workers) >= `--target`x that rate.
The first lines give CPU ms per example of reading a record and of the transforms.
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import throughput  # noqa: E402  (benchmarks/)
from sgdc_jax.run import experiment  # noqa: E402
from sgdc_jax.data import pipeline  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(_REPO, 'configs', 'demo.py'), 'Config file (default: the demo).')
_NAME = flags.DEFINE_string('name', '', 'A prepared TFDS data set measured besides synthetic.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'TFDS data dir of --name.')
_TFDS_EVAL_SPLIT = flags.DEFINE_string('tfds_eval_split', 'test', 'Eval split of --name.')
_EVAL_RECORDS = flags.DEFINE_integer('eval_records', 128, 'Synthetic eval split size.')
_RUNS = flags.DEFINE_integer('runs', 3, 'Rounds over every setting.')
_WINDOWS = flags.DEFINE_integer('windows', 3, 'Timed windows per train measurement.')
_WINDOW_BATCHES = flags.DEFINE_integer('window_batches', 4, 'Batches per window.')
_WARMUP = flags.DEFINE_integer('warmup_batches', 2, 'Untimed batches first (workers start).')
_WORKERS = flags.DEFINE_list('workers', ['-1', '0'], 'data.num_workers values (-1 = auto).')
_CONSUME = flags.DEFINE_float('consume_rate', 0.0,
                              'Images/s the train step consumes; 0 = measure it here.')
_TARGET = flags.DEFINE_float('target', 4.0, 'Required pipeline / consumption ratio.')

PATHS = (('new', False), ('old', True))


def eval_rate(data_config, split: str, batch: int, reference: bool) -> float:
  """Images/s of one evaluation pass after its first batch."""
  it = pipeline.create_eval_iterator(data_config, split, batch, 0, 1, reference=reference)
  next(it)
  start, rows = time.perf_counter(), 0
  for b in it:
    rows += int(b['valid'].sum())
  if not rows:
    raise ValueError(f'eval split {split!r} fits in one batch of {batch}: nothing to time '
                     '(use a larger split)')
  return rows / (time.perf_counter() - start)


def component_ms(data_config, split: str, repeats: int = 20) -> dict[str, float]:
  """Median CPU ms per example: reading a record, and each transform on either path.

  Records are read as the pipeline reads them (TFDS images as their stored bytes), so the
  transforms' times include decoding.
  """
  source = pipeline._undecoded_images(pipeline.open_source(data_config, split))  # pylint: disable=protected-access
  indices = [i % len(source) for i in range(repeats)]
  records, read = [], []
  for i in indices:
    start = time.process_time()
    records.append(source[i])
    read.append(time.process_time() - start)
  out = {'read': 1000 * throughput.median(read)}
  rng = np.random.default_rng(0)
  for label, reference in PATHS:
    train_t = pipeline.TrainTransform(data_config, reference=reference)
    eval_t = pipeline.EvalTransform(dict(enumerate(records)), data_config, reference=reference)
    for kind, fn in (('train', lambda k: train_t.random_map(records[k], rng)),
                     ('eval', eval_t.map)):
      times = []
      for k in range(repeats):
        start = time.process_time()
        fn(k)
        times.append(time.process_time() - start)
      out[f'{kind} {label}'] = 1000 * throughput.median(times)
  return out


def measure_source(config, label: str, eval_split: str) -> dict:
  """Rates of every (pipeline, path, workers) setting of one source, per run."""
  data = config.data
  batch, eval_batch = int(config.train.batch_size), int(config.eval.batch_size)
  ms = component_ms(data, data.train_split)
  print(f'\n{label}: CPU ms per example (median of 20): read {ms["read"]:.2f}; train transform '
        f'new {ms["train new"]:.2f} / old {ms["train old"]:.2f}; eval transform '
        f'new {ms["eval new"]:.2f} / old {ms["eval old"]:.2f}', flush=True)
  rates = {}
  for run in range(_RUNS.value):
    for workers in (int(w) for w in _WORKERS.value):
      data.num_workers = workers
      for path, reference in PATHS:
        for kind in ('train', 'eval'):
          rate = (throughput.train_pipeline_rate(
              data, batch, _WINDOWS.value, _WINDOW_BATCHES.value, _WARMUP.value, reference)
                  if kind == 'train' else eval_rate(data, eval_split, eval_batch, reference))
          rates.setdefault((kind, workers, path), []).append(rate)
    print(f'  run {run + 1}/{_RUNS.value} done', flush=True)
  print(f'{"pipeline":>8} {"workers":>9} {"threads":>7} {"new img/s":>10} {"old img/s":>10} '
        f'{"new/old":>8}   (medians over {_RUNS.value} runs; ratio within each run)')
  for kind in ('train', 'eval'):
    for workers in (int(w) for w in _WORKERS.value):
      n_workers, n_threads = pipeline.resolve_workers(_with_workers(data, workers),
                                                      evaluation=kind == 'eval')
      new, old = rates[(kind, workers, 'new')], rates[(kind, workers, 'old')]
      shown = f'auto={n_workers}' if workers == pipeline.AUTO else str(n_workers)
      print(f'{kind:>8} {shown:>9} {n_threads:>7} {throughput.median(new):>10.1f} '
            f'{throughput.median(old):>10.1f} '
            f'{throughput.median(np.divide(new, old)):>7.2f}x')
  return rates


def _with_workers(data_config, workers: int):
  data_config = data_config.copy_and_resolve_references()
  data_config.num_workers = workers
  return data_config


def main(argv):
  """Measures every source and checks the pipeline-vs-step target."""
  del argv
  config = _CONFIG.value.copy_and_resolve_references()
  experiment.enable_compilation_cache(config)  # as every entry point does
  config.data.synthetic.validation_size = max(config.data.synthetic.validation_size,
                                              _EVAL_RECORDS.value)
  print(f'config: image_size {config.data.image_size}, train batch {config.train.batch_size}, '
        f'eval batch {config.eval.batch_size}; synthetic raw {config.data.synthetic.height}x'
        f'{config.data.synthetic.width}; usable CPUs {pipeline.usable_cpus()}; '
        f'load average {os.getloadavg()[0]:.1f}')
  sources = [(f'synthetic_lesions ({config.data.synthetic.height}x{config.data.synthetic.width})',
              config, config.data.eval_split)]
  if _NAME.value:
    tfds_config = config.copy_and_resolve_references()
    tfds_config.data.name, tfds_config.data.data_dir = _NAME.value, _DATA_DIR.value
    sources.append((f'{_NAME.value} (TFDS)', tfds_config, _TFDS_EVAL_SPLIT.value))
  results = {label: measure_source(c, label, split) for label, c, split in sources}

  consume = _CONSUME.value
  if not consume:
    host = throughput.first_batch(config.data, config.train.batch_size)
    step = throughput.StepAlone(config, host)
    consume = throughput.median(step.rates(windows=3, window_steps=3))
    print(f'\ntrain step alone (this config, batch {config.train.batch_size}): '
          f'{consume:.2f} images/s (median of 3 windows of 3 steps; compile {step.compile_s:.1f} s)')
  for label, rates in results.items():
    feed = throughput.median(rates[('train', pipeline.AUTO, 'new')]) if (
        ('train', pipeline.AUTO, 'new') in rates) else max(
            throughput.median(v) for k, v in rates.items() if k[0] == 'train' and k[2] == 'new')
    ratio = feed / consume
    verdict = 'met' if ratio >= _TARGET.value else 'NOT met'
    print(f'target {label}: train pipeline {feed:.1f} images/s = {ratio:.1f}x the '
          f'{consume:.2f} images/s the step consumes (>= {_TARGET.value:g}x: {verdict})')


if __name__ == '__main__':
  app.run(main)
