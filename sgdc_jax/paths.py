"""The paths a user types, and how they are expanded: `~` and `$VARS`, once, on the command line.

A shell expands `~` only at the start of a word, so `--workdir=~/runs` or
`--config.model.pretrained=~/weights/r50.pth` reach the program with a literal `~`; config files
may hold such paths too. Every entry point (`main`, `demo`, `prepare`, `ablation`, `diagnose`)
parses its flags with `sgdc_jax.cli.parse_flags`, which passes each path below through
`expand` right after parsing (the config file path of `--config=` before it is read). Nothing
else expands paths: code called from Python takes paths as `open()` does, so a notebook passes
`os.path.expanduser(...)` itself.

`expand` replaces a leading `~` / `~user` (`os.path.expanduser`) and `$NAME` / `${NAME}` of
set environment variables (`os.path.expandvars`; unset ones stay as typed, so the error that
follows names them). Empty strings (the configs' "not set") stay empty.

This module imports nothing of the package: `sgdc_jax.cli` (and tests) use it.
"""

from __future__ import annotations

import os
from typing import Any, Optional

# Config fields holding a path (dotted, as `--config.<field>=...` names them).
CONFIG_FIELDS = (
    "compilation_cache_dir",
    "data.data_dir",
    "eval.output_dir",
    "model.pretrained",
    "predict.input_dir",
    "predict.output_dir",
)

# Flags (of any entry point) holding a path; config file flags (`--config=`) are expanded too.
FLAG_NAMES = ("workdir", "data_dir", "manual_dir", "reference_dir", "output_dir")


def expand(path: Optional[str]) -> Optional[str]:
  """`path` with `~` and set `$VARS` expanded; None, '' and non-strings are returned as they are."""
  if not isinstance(path, str) or not path:
    return path
  return os.path.expanduser(os.path.expandvars(path))


def expand_config(config: Any) -> list[str]:
  """Expands every `CONFIG_FIELDS` entry of `config` (a ConfigDict or nested dict) in place.

  Fields the config lacks are skipped (another part validates the fields).

  Returns:
    The dotted names of the fields that changed.
  """
  changed = []
  for name in CONFIG_FIELDS:
    *parents, leaf = name.split(".")
    section = config
    for part in parents:
      section = section.get(part) if hasattr(section, "get") else None
    if not hasattr(section, "get") or leaf not in section:
      continue
    value = section[leaf]
    new = expand(value)
    if new != value:
      section[leaf] = new
      changed.append(name)
  return changed
