"""Time and memory per image of inference at the stored resolution (`eval.resolution='native'`).

    python benchmarks/bench_inference.py [--runs 3] [--sizes 565x584,4000x3000] \
        [--tta none,flips] [--window 512] [--overlap 0.5] [--window_batch 4]

The CPU network (`config.use_cpu_model`: ResNet-18, D=64), randomly initialised, predicts one
random uint8 image through `inference.ImagePredictor` (`run.windows`), as the Scorer and
`--mode=predict` do. Each (size, tta) case runs in its own subprocess, so its peak resident set
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`, the whole process: runtime, compiled programs,
weights, host arrays) is its own. Per case: one warm-up call (compiles), then `--runs` timed
calls (median and min reported), then one call under `tracemalloc` for the peak of the host
arrays allocated by the call itself (image, padded canvas, blended sums, window batches), and
XLA's memory analysis of the compiled window-batch program (arguments + outputs + temporaries:
what one forward needs on the device, whatever the image size). The table names the machine
and its load average before and after: on a shared host the times are upper bounds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc

from host import machine  # benchmarks/host.py

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def run_case(height: int, width: int, tta: str, args: argparse.Namespace) -> dict:
  """One case in this process (the subprocess side); returns its measurements."""
  sys.path.insert(0, REPO)
  import sgdc_jax  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from sgdc_jax.run import config as config_lib  # pylint: disable=import-outside-toplevel
  from sgdc_jax.run import experiment, inference, windows  # pylint: disable=import-outside-toplevel

  config = config_lib.get_config()
  config_lib.use_cpu_model(config)
  e = config.eval
  e.resolution, e.window, e.overlap = "native", args.window, args.overlap
  e.window_batch, e.tta = args.window_batch, tta
  exp = experiment.build(config)
  variables = experiment.init_state(exp).eval_variables(use_ema=False)
  predictor = inference.ImagePredictor(config, exp.model, exp.mesh)
  image = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)

  t0 = time.perf_counter()
  predictor(variables, image, with_edge=False)
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.runs):
    t0 = time.perf_counter()
    probs, _ = predictor(variables, image, with_edge=False)
    times.append(time.perf_counter() - t0)
  assert probs.shape == (height, width)
  tracemalloc.start()
  predictor(variables, image, with_edge=False)
  host_peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()

  ph, pw = (windows.round_up(s, windows.STRIDE) for s in (height, width))
  wh, ww = min(args.window, ph), min(args.window, pw)
  n_windows = (len(windows.window_starts(ph, wh, args.overlap)) *
               len(windows.window_starts(pw, ww, args.overlap)))
  items = n_windows * (4 if tta == "flips" else 1)
  batch = min(windows.round_up(args.window_batch, predictor.devices),
              windows.round_up(items, predictor.devices))
  x = jax.ShapeDtypeStruct((batch, wh, ww, 3), np.float32)
  mem = predictor._predict.lower(variables, x).compile().memory_analysis()  # pylint: disable=protected-access
  device_bytes = None
  if mem is not None:
    device_bytes = int(mem.argument_size_in_bytes + mem.output_size_in_bytes +
                       mem.temp_size_in_bytes)
  return {"size": f"{height}x{width}", "tta": tta, "windows": n_windows, "batch": batch,
          "calls": -(-items // batch), "window": f"{wh}x{ww}", "first_s": first,
          "median_s": statistics.median(times), "min_s": min(times), "runs": len(times),
          "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "host_peak_mib": host_peak / 2**20,
          "device_mib": None if device_bytes is None else device_bytes / 2**20}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--sizes", default="565x584,4000x3000", help="WxH,... (width first)")
  parser.add_argument("--tta", default="none,flips")
  parser.add_argument("--window", type=int, default=512)
  parser.add_argument("--overlap", type=float, default=0.5)
  parser.add_argument("--window_batch", type=int, default=4)
  parser.add_argument("--case", default="", help=argparse.SUPPRESS)  # 'H,W,tta': child side
  args = parser.parse_args()
  if args.case:
    h, w, tta = args.case.split(",")
    print("RESULT" + json.dumps(run_case(int(h), int(w), tta, args)))
    return

  load_before = os.getloadavg()
  results = []
  for size in args.sizes.split(","):
    width, height = (int(v) for v in size.split("x"))
    for tta in args.tta.split(","):
      cmd = [sys.executable, os.path.abspath(__file__), f"--case={height},{width},{tta}",
             f"--runs={args.runs}", f"--window={args.window}", f"--overlap={args.overlap}",
             f"--window_batch={args.window_batch}"]
      proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
      if proc.returncode:
        sys.exit(f"case {size} tta={tta} failed:\n{proc.stderr[-3000:]}")
      line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
      results.append(json.loads(line[len("RESULT"):]))
      print(f"done: {size} tta={tta}", file=sys.stderr)
  import jax  # pylint: disable=import-outside-toplevel
  print(machine())
  print(f"JAX {jax.__version__}, backend {jax.default_backend()}; load average (1/5/15 min) "
        f"{'/'.join(f'{v:.2f}' for v in load_before)} before, "
        f"{'/'.join(f'{v:.2f}' for v in os.getloadavg())} after")
  print(f"ResNet-18 D=64 random init; window {args.window}, overlap {args.overlap}, window "
        f"batch {args.window_batch}; {args.runs} timed runs after one warm-up (compile)\n")
  print("| image (H x W) | TTA | windows | forward calls (batch) | first call s | median s "
        "| min s | peak RSS MiB | host arrays peak MiB | XLA per call MiB |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in results:
    dev = "-" if r["device_mib"] is None else f"{r['device_mib']:.0f}"
    print(f"| {r['size']} | {r['tta']} | {r['windows']} of {r['window']} | {r['calls']} "
          f"({r['batch']}) | {r['first_s']:.1f} | {r['median_s']:.2f} | {r['min_s']:.2f} | "
          f"{r['maxrss_mib']:.0f} | {r['host_peak_mib']:.0f} | {dev} |")


if __name__ == "__main__":
  main()
