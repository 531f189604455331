"""Shared plumbing of the command-line entry points (`sgdc_jax.main`, `sgdc_jax.analysis.ablation`).

A user error (bad flag, unknown config field, missing or broken config file, invalid config,
missing checkpoint or weights file) ends the command with ONE line on stderr, `error: ...`, and
a non-zero exit status instead of a Python traceback; `SGDC_DEBUG=1` prints the traceback too.

    app.run(main, flags_parser=cli.parse_flags)   # flag and config-file errors
    cli.run(lambda: ...)                           # errors raised while running

Exit status: 0 done, 2 invalid flags/config or other user error, 3 non-finite loss, 4 workdir
busy (another training holds its lock) or no intact checkpoint to resume from.
"""
from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Callable, NoReturn, Sequence

from absl import flags

from sgdc_jax.errors import (DEBUG_ENV, EXIT_CODES, EXIT_NON_FINITE,  # noqa: F401
                             EXIT_USER_ERROR, EXIT_WORKDIR)


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
  """Prints `error: message` (and the active traceback with SGDC_DEBUG=1) and exits."""
  if os.environ.get(DEBUG_ENV) and sys.exc_info()[0] is not None:
    traceback.print_exc()
  print(f'error: {message}', file=sys.stderr)
  sys.exit(code)


def _unknown_field(error: BaseException, argv: Sequence[str]) -> str:
  """'--config.model.encodr: no such field (did you mean "encoder"?)' from ml_collections'
  KeyError/AttributeError ("'encodr'\\nDid you mean "encoder" instead of "encodr"?")."""
  while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError)
    error = error.args[0]
  text = str(error.args[0]) if error.args else str(error)
  key = re.search(r"'([^'\n]+)'", text)
  key = key.group(1) if key else text.strip()
  hint = re.search(r'Did you mean "([^"]+)"', text)
  name = f'config field {key!r}'
  for arg in argv:  # the override that names the field
    m = re.match(r'--(config(?:\.[^=\s]+)+)', arg)
    if m and key in m.group(1).split('.')[1:]:
      name = f'--{m.group(1)}'
      break
  return f'{name}: no such field' + (f' (did you mean "{hint.group(1)}"?)' if hint else '')


def _config_load_error(value) -> BaseException | None:
  """The error ml_collections stored for a config file it could not read (it returns a
  placeholder, `_ErrorConfig`, that raises only when first used); None for a loaded config."""
  if type(value).__name__ == '_ErrorConfig':
    return vars(value).get('_error')
  return None


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl `flags_parser`: parses `argv`; a flag or config-file error ends the command with one
  message (exit 2)."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    fail(f'{e} (--helpshort lists the flags)')
  except (AttributeError, KeyError) as e:  # --config.<path>=...: no such field
    fail(_unknown_field(e, argv))
  except SyntaxError as e:
    fail(f'config file {e.filename}:{e.lineno}: syntax error: {e.msg}')
  except Exception as e:  # pylint: disable=broad-except  (any error raised by a config file)
    fail(f'cannot load the config: {type(e).__name__}: {e}')
  for name in flags.FLAGS:
    error = _config_load_error(flags.FLAGS[name].value)
    if error is not None:
      # ml_collections lists every path it tried; the last line holds the cause.
      fail(f'--{name}: cannot load the config file: {str(error).strip().splitlines()[-1].strip()}')
  return rest


def run(body: Callable[[], None]) -> None:
  """Runs `body`; a user error (see `EXIT_CODES`) ends the command with one message."""
  try:
    body()
  except tuple(c for classes, _ in EXIT_CODES for c in classes) as e:
    code = next(code for classes, code in EXIT_CODES if isinstance(e, classes))
    fail(str(e), code)
