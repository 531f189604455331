"""Tests of sgdc_jax.log: one line, logged at INFO and printed on process 0."""
import logging

from sgdc_jax import log


def test_log_prints_and_logs_the_message(capsys, caplog):
  with caplog.at_level(logging.INFO):
    log.log('step 3: loss 0.25')
  assert capsys.readouterr().out == 'step 3: loss 0.25\n'  # this test is process 0
  assert 'step 3: loss 0.25' in caplog.messages
