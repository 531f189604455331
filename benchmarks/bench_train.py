"""Training throughput (images/s) of SGDCNet and its model FLOP utilisation on this machine.

  python benchmarks/bench_train.py                      # default ResNet-50 net, 256x256, batch 4
  python benchmarks/bench_train.py --encoder=resnet18 --image_size=128 --batch_size=8

FLOPs per step come from XLA's cost analysis of the compiled train step (forward + backward +
optimizer update); the peak is measured here with a large float32 matmul (the best of several
sizes), so MFU = (step FLOPs / step time) / measured matmul FLOP/s. Prints one JSON line.
"""

import argparse
import functools
import importlib.util
import json
import os
import time

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def matmul_peak(sizes=(1024, 2048), reps=5) -> float:
  """Best measured float32 matmul FLOP/s over ``sizes`` (2 n^3 FLOPs per product)."""
  best = 0.0
  for n in sizes:
    a = jnp.ones((n, n), jnp.float32)
    b = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    for _ in range(reps):
      t = time.perf_counter()
      f(a, b).block_until_ready()
      best = max(best, 2 * n**3 / (time.perf_counter() - t))
  return best


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--encoder", default="resnet50")
  p.add_argument("--image_size", type=int, default=256)
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
  p.add_argument("--dtype", default="float32")
  args = p.parse_args()

  from sgdc_jax import sharding as shd, train  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, "configs", "default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.model.encoder = args.encoder
  config.model.dtype = args.dtype
  config.data.image_size = args.image_size
  config.train.batch_size = args.batch_size

  t0 = time.perf_counter()
  s = train.setup(config)
  jax.block_until_ready(s.state)
  init_s = time.perf_counter() - t0
  fn = functools.partial(train.train_step, apply_fn=s.model.apply,
                         loss_fn=train.make_loss_fn(config), tx=s.tx, schedule=s.schedule,
                         ema_decay=0.0, seed=0)
  step = train.jit_train_step(fn, s.shardings, s.mesh)
  b, n = args.batch_size, args.image_size
  rng = np.random.default_rng(0)
  host = {"image": rng.normal(size=(b, n, n, 3)).astype(np.float32),
          "mask": (rng.uniform(size=(b, n, n)) > 0.5).astype(np.int32),
          "edge": (rng.uniform(size=(b, n, n)) > 0.9).astype(np.uint8)}
  batch = shd.host_to_global(host, s.mesh)
  t0 = time.perf_counter()
  compiled = step.lower(s.state, batch).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan")))
  state = s.state
  state, m = compiled(state, batch)       # warm-up
  jax.block_until_ready(m)
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  step_s = float(np.median(times))
  peak = matmul_peak()
  result = {
      "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
      "cpu_count": os.cpu_count(), "encoder": args.encoder, "image_size": n, "batch_size": b,
      "dtype": args.dtype, "init_compile_s": round(init_s, 1), "step_compile_s": round(compile_s, 1),
      "step_s_median": round(step_s, 3), "step_s_all": [round(t, 3) for t in times],
      "images_per_s": round(b / step_s, 3),
      "train_gflop_per_image": round(flops / b / 1e9, 2),
      "achieved_gflops": round(flops / step_s / 1e9, 2),
      "matmul_peak_gflops": round(peak / 1e9, 2),
      "mfu": round(flops / step_s / peak, 4),
      "loss": float(m["loss"]),
  }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
