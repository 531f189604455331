"""One line naming the machine a benchmark ran on (its figures depend on it)."""

from __future__ import annotations

import os
import platform


def machine() -> str:
  """`node: CPU model, N logical CPUs, Python X.Y.Z`."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{platform.node()}: {cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"
