"""Timing helpers shared by bench_input.py and bench_train.py.

- `window_rates`: items/s of an iterator over fixed-size windows, after a warm-up;
  `train_pipeline_rate`: that for a config's training pipeline alone.
- `StepAlone`: the jitted train step of a config (`train.make_train_step`, the one the loop
  runs) on one fixed device batch: compile time, XLA's FLOPs per step, images/s per window.
- `peak_flops`: the device's peak FLOP/s for MFU: measured with a large float32 matmul on a
  CPU, looked up in `PEAK_TFLOPS` for GPUs and TPUs.
"""
from __future__ import annotations

import time
from typing import Iterator, Optional

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import jax
import jax.numpy as jnp
import numpy as np

from sgdc_jax.run import experiment, train
from sgdc_jax.run import sharding as shd
from sgdc_jax.data import pipeline

# Dense peak TFLOP/s per device as (bfloat16, float32 as XLA runs it by default: TF32 tensor
# cores on NVIDIA, bf16 passes on TPU), from the vendors' data sheets. The first name that
# occurs in `jax.devices()[0].device_kind` wins, so specific names come first.
PEAK_TFLOPS = (
    ('H100 PCIe', (756.0, 378.0)),
    ('H100 NVL', (835.0, 418.0)),
    ('GH200', (989.0, 495.0)),
    ('H200', (989.0, 495.0)),
    ('H100', (989.0, 495.0)),     # SXM
    ('A100', (312.0, 156.0)),
    ('L40S', (362.0, 183.0)),
    ('L4', (121.0, 60.0)),
    ('TPU v6', (918.0, 918.0)),   # v6e ('TPU v6 lite')
    ('TPU v5 lite', (197.0, 197.0)),
    ('TPU v5e', (197.0, 197.0)),
    ('TPU v5', (459.0, 459.0)),   # v5p
    ('TPU v4', (275.0, 275.0)),
)


def window_rates(batches: Iterator, items_per_batch: int, windows: int, window_batches: int,
                 warmup_batches: int) -> list[float]:
  """Items/s of `windows` windows of `window_batches` `next()` calls each, after a warm-up."""
  for _ in range(warmup_batches):
    next(batches)
  rates = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(window_batches):
      next(batches)
    rates.append(window_batches * items_per_batch / (time.perf_counter() - start))
  return rates


def train_pipeline_rate(data_config, batch_size: int, windows: int = 3, window_batches: int = 4,
                        warmup_batches: int = 2, reference: bool = False) -> float:
  """Median images/s of `pipeline.create_train_dataset` (one process) over timed windows."""
  it = iter(pipeline.create_train_dataset(data_config, batch_size, 0, 0, 1, reference=reference))
  try:
    return median(window_rates(it, batch_size, windows, window_batches, warmup_batches))
  finally:
    it.close()


def first_batch(data_config, batch_size: int) -> dict:
  """The training pipeline's first batch (one process); its iterator is closed."""
  it = iter(pipeline.create_train_dataset(data_config, batch_size, 0, 0, 1))
  try:
    return next(it)
  finally:
    it.close()


def matmul_peak(sizes=(1024, 2048, 3072), repeats: int = 3) -> float:
  """Best float32 matmul FLOP/s over `sizes` (2 n^3 FLOPs per product): a CPU's usable peak."""
  best = 0.0
  matmul = jax.jit(lambda x, y: x @ y)
  for n in sizes:
    a = jnp.ones((n, n), jnp.float32)
    matmul(a, a).block_until_ready()
    for _ in range(repeats):
      start = time.perf_counter()
      matmul(a, a).block_until_ready()
      best = max(best, 2 * n**3 / (time.perf_counter() - start))
  return best


def peak_flops(dtype: str) -> tuple[Optional[float], str]:
  """`(peak FLOP/s or None, where it came from)` for the first device and `dtype`."""
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return matmul_peak(), 'measured float32 matmul (best of 1024-3072 squared)'
  for name, (bf16, fp32) in PEAK_TFLOPS:
    if name in device.device_kind:
      peak = bf16 if dtype == 'bfloat16' else fp32
      return peak * 1e12, f'data sheet: {name} {dtype} dense, per device'
  return None, f'unknown device kind {device.device_kind!r}: add it to PEAK_TFLOPS'


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


class StepAlone:
  """The config's jitted train step on one fixed device batch, compiled ahead.

  Attributes:
    compile_s: seconds of `lower(...).compile()` (a persistent-cache hit if enabled and warm).
    flops_per_step: XLA's cost analysis of the compiled step (forward, backward, update): the
      program one device runs, so MFU = flops_per_step * steps/s / the peak of one device.
  """

  def __init__(self, config, host_batch: dict):
    exp = experiment.build(config)
    self.state = experiment.init_state(exp)
    self.batch = shd.host_to_global(host_batch, exp.mesh)
    self.batch_size = int(config.train.batch_size)
    start = time.perf_counter()
    self.step = train.make_train_step(exp).lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - start
    self.flops_per_step = _flops(self.step)

  def rates(self, windows: int, window_steps: int, warmup_windows: int = 1) -> list[float]:
    """Images/s of each window of `window_steps` steps; each window ends with a device wait."""
    rates = []
    for k in range(warmup_windows + windows):
      start = time.perf_counter()
      for _ in range(window_steps):
        self.state, metrics = self.step(self.state, self.batch)
      jax.block_until_ready((self.state, metrics))
      if k >= warmup_windows:
        rates.append(window_steps * self.batch_size / (time.perf_counter() - start))
    return rates


def median(values) -> float:
  """Median of a non-empty sequence as a float."""
  return float(np.median(np.asarray(values, np.float64)))
