"""Tests of sgdc_jax._xla_flags: the YNNPACK fusion flag is added once, never over the user's."""
import os
import warnings

import pytest

from sgdc_jax import _xla_flags

FLAG = '--xla_cpu_experimental_ynn_fusion_type'


@pytest.fixture
def environ(monkeypatch):
  monkeypatch.delenv('SGDC_JAX_KEEP_YNN_FUSION', raising=False)
  monkeypatch.setattr(_xla_flags, '_backends_started', lambda: False)
  return monkeypatch


def test_flag_added_after_the_users_flags(environ):
  environ.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  _xla_flags.disable_ynn_fusion()
  want = f'--xla_force_host_platform_device_count=2 {FLAG}='
  assert os.environ['XLA_FLAGS'] == want
  _xla_flags.disable_ynn_fusion()  # once only
  assert os.environ['XLA_FLAGS'].count(FLAG) == 1


def test_users_value_and_opt_out_are_respected(environ):
  environ.setenv('XLA_FLAGS', f'{FLAG}=default')
  _xla_flags.disable_ynn_fusion()
  assert os.environ['XLA_FLAGS'] == f'{FLAG}=default'
  environ.delenv('XLA_FLAGS')
  environ.setenv('SGDC_JAX_KEEP_YNN_FUSION', '1')
  _xla_flags.disable_ynn_fusion()
  assert 'XLA_FLAGS' not in os.environ


def test_warns_when_jax_already_started(environ):
  import jax  # noqa: F401  (the warning is only given once jax is imported)
  environ.setenv('XLA_FLAGS', '')
  environ.setattr(_xla_flags, '_backends_started', lambda: True)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    _xla_flags.disable_ynn_fusion()
  assert any(issubclass(w.category, RuntimeWarning) and 'XLA_FLAGS' in str(w.message)
             for w in caught)
