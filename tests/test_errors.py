"""Tests of sgdc_jax.errors: the exit status each error ends a command with."""
import pytest

from sgdc_jax import errors


@pytest.mark.parametrize('error, code', [
    (errors.NonFiniteLossError('nan'), errors.EXIT_NON_FINITE),
    (errors.WorkdirBusyError('held'), errors.EXIT_WORKDIR),          # a ValueError, yet 4
    (errors.ModelConfigMismatchError('other'), errors.EXIT_WORKDIR),
    (errors.NoIntactCheckpointError('none'), errors.EXIT_WORKDIR),   # a FileNotFoundError
    (errors.ConfigError('bad'), errors.EXIT_USER_ERROR),
    (errors.ConversionError('bad'), errors.EXIT_USER_ERROR),
    (ValueError('bad'), errors.EXIT_USER_ERROR),
    (FileNotFoundError('missing'), errors.EXIT_USER_ERROR),
    (KeyError('bug'), None),
    (ZeroDivisionError(), None),
])
def test_exit_code(error, code):
  assert errors.exit_code(error) == code


def test_exit_statuses_are_distinct_and_not_success():
  codes = [errors.EXIT_USER_ERROR, errors.EXIT_NON_FINITE, errors.EXIT_WORKDIR,
           errors.EXIT_INTERRUPTED]
  assert len(set(codes)) == len(codes) and 0 not in codes and 1 not in codes
