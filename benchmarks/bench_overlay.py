"""Time and memory per evaluation overlay of a full-size photograph.

    python benchmarks/bench_overlay.py [--runs 5] [--sizes 4000x3000,1024x768]

One overlay PNG (photo with ground-truth and predicted contours, SGE edge map beside it), as
`--mode=eval` writes for its first `eval.overlays` images. Two paths:

- `full`: the previous path, the drawing (`outputs.draw_overlay`, unchanged) given the
  full-size photo, masks and edge map: matplotlib resamples the photo and traces the contours
  on full-size float copies;
- `reduced`: `outputs.save_overlay` today: the arrays reduced to the panel size first
  (`outputs.downsample_for_overlay`: box filter for the photo, block maximum for the masks and
  the edge map), then drawn.

Each (size, path) runs in its own subprocess: one warm-up overlay, then `--runs` timed ones
(median and min), then one under `tracemalloc` (peak of the host memory the call allocates:
numpy arrays and Python objects, not matplotlib's C++ raster) and the process's peak resident
set (`ru_maxrss`, the inputs included: photo uint8, masks uint8, edge map float32). The table
names the machine and its load average before and after: on a shared host the times are upper
bounds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

from host import machine  # benchmarks/host.py

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def inputs(height: int, width: int):
  """A smooth photo, a disc target, a shifted disc with a one-pixel line as the prediction,
  and an edge map (float32, like the Scorer's)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  yy, xx = np.ogrid[0:height, 0:width]
  image = np.empty((height, width, 3), np.uint8)
  image[..., 0] = (xx * 255 // width).astype(np.uint8)
  image[..., 1] = (yy * 255 // height).astype(np.uint8)
  image[..., 2] = 128
  r2 = (min(height, width) // 4) ** 2
  target = (((yy - height // 2) ** 2 + (xx - width // 2) ** 2) < r2).astype(np.uint8)
  pred = (((yy - height // 2) ** 2 + (xx - width // 2 - width // 20) ** 2) < r2).astype(np.uint8)
  pred[height // 8, width // 8:width // 2] = 1
  edge = np.zeros((height, width), np.float32)
  edge[height // 3, :] = 1.0
  return image, target, pred, edge


def run_case(height: int, width: int, path: str, runs: int) -> dict:
  """One case in this process (the subprocess side)."""
  sys.path.insert(0, REPO)
  from sgdc_jax.run import outputs  # pylint: disable=import-outside-toplevel

  arrays = inputs(height, width)
  draw = outputs.draw_overlay if path == "full" else outputs.save_overlay
  with tempfile.TemporaryDirectory() as tmp:
    png = os.path.join(tmp, "overlay.png")
    draw(png, *arrays, "warm-up")
    times = []
    for i in range(runs):
      t0 = time.perf_counter()
      draw(png, *arrays, f"run {i}")
      times.append(time.perf_counter() - t0)
    tracemalloc.start()
    draw(png, *arrays, "traced")
    host_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
  return {"size": f"{height}x{width}", "path": path, "median_s": statistics.median(times),
          "min_s": min(times), "runs": runs, "host_peak_mib": host_peak / 2**20,
          "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--sizes", default="4000x3000,1024x768", help="WxH,... (width first)")
  parser.add_argument("--case", default="", help=argparse.SUPPRESS)  # 'H,W,path': child side
  args = parser.parse_args()
  if args.case:
    h, w, path = args.case.split(",")
    print("RESULT" + json.dumps(run_case(int(h), int(w), path, args.runs)))
    return

  load_before = os.getloadavg()
  results = []
  for size in args.sizes.split(","):
    width, height = (int(v) for v in size.split("x"))
    for path in ("full", "reduced"):
      cmd = [sys.executable, os.path.abspath(__file__), f"--case={height},{width},{path}",
             f"--runs={args.runs}"]
      proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
      if proc.returncode:
        sys.exit(f"case {size} {path} failed:\n{proc.stderr[-3000:]}")
      line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
      results.append(json.loads(line[len("RESULT"):]))
      print(f"done: {size} {path}", file=sys.stderr)
  print(machine())
  print(f"load average (1/5/15 min) {'/'.join(f'{v:.2f}' for v in load_before)} before, "
        f"{'/'.join(f'{v:.2f}' for v in os.getloadavg())} after; {args.runs} timed overlays "
        f"after one warm-up\n")
  print("| photo (W x H) | path | median s | min s | host arrays peak MiB | peak RSS MiB |")
  print("|---|---|---|---|---|---|")
  for r in results:
    h, w = r["size"].split("x")
    print(f"| {w} x {h} | {r['path']} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
          f"{r['host_peak_mib']:.1f} | {r['maxrss_mib']:.0f} |")


if __name__ == "__main__":
  main()
