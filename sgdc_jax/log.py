"""The one console line a run prints: absl INFO everywhere, stdout on process 0.

The bottom of the package: anything may log through it, it imports nothing of ours."""

from __future__ import annotations

import jax
from absl import logging


def log(message: str) -> None:
  """Logs `message` (absl INFO) and prints it on process 0."""
  logging.info(message)
  if jax.process_index() == 0:
    print(message, flush=True)
