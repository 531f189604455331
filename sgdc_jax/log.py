"""The one console line a run prints: absl INFO everywhere, stdout on process 0.

The bottom of the package: anything may log through it, it imports nothing of ours."""

from __future__ import annotations

import os
import sys

from absl import logging


def shown_path(path) -> str:
  """`path` (str, bytes or path-like) printable on any UTF-8 stream: bytes of an undecodable
  file name (held by Python as lone surrogates, e.g. from `os.listdir`) shown as `\\xfe`,
  other lone surrogates as `\\ud800`. The one escaping of names in messages."""
  text = os.fsdecode(path)
  try:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
  except UnicodeEncodeError:  # a lone surrogate not from a file name
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(text: str) -> str:
  """`text` that any stream can take: undecodable bytes and lone surrogates escaped
  (`shown_path`); then what the console's encoding cannot hold (an ASCII terminal) escaped
  too (`\\xe9`)."""
  text = shown_path(text)
  encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
  try:
    return text.encode(encoding, "backslashreplace").decode(encoding)
  except LookupError:  # an encoding Python does not know: keep the UTF-8 text
    return text


def log(message: str) -> None:
  """Logs `message` (absl INFO) and prints it on process 0; text no console could show is
  escaped (`printable`), so no log line can stop a run."""
  message = printable(message)
  logging.info(message)
  # JAX only when the command already loaded it: the JAX-free commands (prepare) log too, and
  # without JAX there is one process.
  jax = sys.modules.get("jax")
  if jax is None or jax.process_index() == 0:
    print(message, flush=True)
