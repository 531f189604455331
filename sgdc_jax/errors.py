"""The errors a command reports to its user, and the exit status each one ends with.

The bottom of the package: every layer raises these, only the command-line layer
(`sgdc_jax.cli`) turns them into one `error: ...` line and an exit status.

Exit status of every entry point (`main`, `demo`, `prepare`, `ablation`, `diagnose`):

  0  done
  2  a user error: bad flag or config field, missing or unreadable file, invalid data
  3  the training loss became NaN or Inf (the last good checkpoint is kept)
  4  the workdir cannot be used: another training holds it, it was trained with another model
     config, or no checkpoint in it restores
  5  a process of a multi-process run was lost (killed, crashed, unreachable): every other
     process stops within `mesh.peer_timeout_s` seconds (`sgdc_jax.run.peers`)
  130 interrupted (Ctrl-C) where the command says what it leaves behind (`prepare`)

One line `error: ...` on stderr, no traceback unless `SGDC_DEBUG=1` (see `sgdc_jax.cli`).
"""

from __future__ import annotations

from typing import Iterator, Optional

EXIT_USER_ERROR = 2
EXIT_NON_FINITE = 3
EXIT_WORKDIR = 4
EXIT_PEER_LOST = 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
# Set to 1 to get the Python traceback as well as the one-line message.
DEBUG_ENV = 'SGDC_DEBUG'


class ConfigError(ValueError):
  """The config cannot be run; the message lists every problem found."""


class ConversionError(ValueError):
  """A state_dict does not fit the module: lists missing, unknown or mis-shaped keys."""


class WorkdirError(ValueError):
  """The workdir cannot be used as asked (busy, or trained with another model config)."""


class WorkdirBusyError(WorkdirError):
  """Another training holds the workdir's lock."""


class ModelConfigMismatchError(WorkdirError):
  """The current config would not restore the workdir's checkpoints."""


class NoIntactCheckpointError(FileNotFoundError):
  """Every checkpoint step failed to restore; the message lists each with its damage."""


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (e.g. the disk is full); the message names the step,
  what was removed, the last complete checkpoint and how to resume."""


class DamagedDataError(ValueError):
  """A prepared data set's file is missing, cut short or corrupt; the message names the file
  and the command that rebuilds it."""


class PeerLostError(RuntimeError):
  """Another process of a multi-process run was lost; the message names it and the command
  that resumes."""


class NonFiniteLossError(FloatingPointError):
  """Raised when a training step produced a NaN or Inf loss."""


# Checked in order: the first class an error is an instance of gives the exit status. The
# generic ones last (ConfigError and WorkdirError are ValueErrors; NoIntactCheckpointError is a
# FileNotFoundError).
EXIT_CODES: tuple[tuple[tuple[type[BaseException], ...], int], ...] = (
    ((NonFiniteLossError,), EXIT_NON_FINITE),
    ((PeerLostError,), EXIT_PEER_LOST),
    ((WorkdirError, NoIntactCheckpointError), EXIT_WORKDIR),
    ((ValueError, OSError), EXIT_USER_ERROR),  # OSError includes FileNotFoundError
)


def chain(error: Optional[BaseException]) -> Iterator[BaseException]:
  """`error`, then the exception it was raised from or during, and so on (each once)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def exit_code(error: BaseException) -> int | None:
  """The exit status `error` ends a command with, or None for an error that is a bug."""
  return next((code for classes, code in EXIT_CODES if isinstance(error, classes)), None)
