"""How every command-line entry point talks to its user: flags in, one error line out.

Used by `sgdc_jax.main`, `sgdc_jax.demo`, `sgdc_jax.data.prepare`, `sgdc_jax.analysis.ablation`
and `sgdc_jax.analysis.diagnose`:

    app.run(main, flags_parser=cli.parse_flags)   # flag and config-file errors; paths expanded
    cli.run(lambda: ...)                           # errors raised while running

A user error (bad flag, unknown config field, missing or broken config file, invalid config,
missing checkpoint or weights file, busy workdir, ...) ends the command with ONE line on
stderr, `error: ...` (a config error lists its problems on the lines after it), and the exit
status of `sgdc_jax.errors` (2 user error, 3 non-finite loss, 4 workdir unusable; 130 when
interrupted with a message). No traceback, unless `SGDC_DEBUG=1`, which prints it before the
message. An error that is not a user error (a bug) keeps its traceback.

`parse_flags` also expands `~` and `$VARS` in every path the user typed (`sgdc_jax.paths`):
the config file of `--config=`, the path fields of every parsed config, and the path flags.

Nothing here imports the run machinery (train, evaluate, ...): only `sgdc_jax.errors` and
`sgdc_jax.paths`.
"""
from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Callable, NoReturn, Optional, Sequence

from absl import flags, logging
# `is_config_flag` is meant for users of the library but not exported by its package.
from ml_collections.config_flags.config_flags import is_config_flag

from sgdc_jax import paths
from sgdc_jax.log import printable
from sgdc_jax.errors import (DEBUG_ENV, EXIT_CODES, EXIT_INTERRUPTED,  # noqa: F401
                             EXIT_NON_FINITE, EXIT_USER_ERROR, EXIT_WORKDIR, exit_code)


def debug() -> bool:
  """Whether `SGDC_DEBUG` asks for tracebacks (set and not '0')."""
  return os.environ.get(DEBUG_ENV, '') not in ('', '0')


def fail(message: str, code: int = EXIT_USER_ERROR,
         error: Optional[BaseException] = None) -> NoReturn:
  """Prints `error: message` and exits with `code`; with SGDC_DEBUG=1 the traceback of `error`
  (default: the exception being handled) comes first."""
  error = error if error is not None else sys.exc_info()[1]
  if debug() and error is not None:
    traceback.print_exception(type(error), error, error.__traceback__)
  sys.stderr.flush()
  print(f'error: {printable(message)}', file=sys.stderr, flush=True)
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


def _is_config_flag(name: str) -> bool:
  return name in flags.FLAGS and is_config_flag(flags.FLAGS[name])


def _expand_config_files(argv: Sequence[str]) -> list[str]:
  """`argv` with the path of each `--<config flag>=PATH` expanded: the file is read while the
  flags are parsed. (`--config PATH` needs nothing: the shell expands a word-initial `~`.)"""
  out = []
  for arg in argv:
    name, eq, value = arg[2:].partition('=') if arg.startswith('--') else ('', '', '')
    out.append(f'--{name}={paths.expand(value)}' if eq and _is_config_flag(name) else arg)
  return out


def _expand_parsed_paths() -> None:
  """Expands the path flags (`paths.FLAG_NAMES`) and the path fields of every config flag."""
  for name in list(flags.FLAGS):
    flag = flags.FLAGS[name]
    if is_config_flag(flag):
      if flag.value is not None:
        paths.expand_config(flag.value)
    elif name in paths.FLAG_NAMES and isinstance(flag.value, str):
      flag.value = paths.expand(flag.value)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl `flags_parser`: parses `argv` and expands the paths in it; a flag or config-file
  error, or an argument that is not a flag, ends the command with one message (exit 2)."""
  argv = _expand_config_files(argv)
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
      fail(f'--{name}: cannot load the config file: {str(error).strip().splitlines()[-1].strip()}',
           error=error)
  if len(rest) > 1:
    fail(f'unexpected arguments {rest[1:]}: all options are --flag=value '
         f'(--helpshort lists the flags)')
  _expand_parsed_paths()
  return rest


def log_warnings_only() -> None:
  """Shows absl (and so library) log messages from WARNING up, unless `--verbosity`/`-v` was
  given: `app.run` otherwise logs INFO to stderr, which repeats every `sgdc_jax.log` line."""
  if 'verbosity' in flags.FLAGS and not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def run(body: Callable[[], None], *, interrupted: Optional[str] = None) -> None:
  """Runs `body`; a user error (`errors.exit_code` is not None) ends the command with one
  message and its exit status. With `interrupted`, Ctrl-C ends it with that message (exit
  130) instead of a traceback."""
  try:
    body()
  except KeyboardInterrupt:
    if interrupted is None:
      raise
    fail(interrupted, EXIT_INTERRUPTED)
  except Exception as e:  # pylint: disable=broad-except  (re-raised unless a user error)
    code = exit_code(e)
    if code is None:
      raise
    fail(str(e), code)
