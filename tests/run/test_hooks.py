"""Tests of sgdc_jax.run.hooks: progress reports, the profiler window and the hooks a config
asks for."""
import logging

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import jax
import pytest

from sgdc_jax.run import config as config_lib
from sgdc_jax.run import hooks, writers


class Recorder(writers.MetricWriter):
  def __init__(self):
    self.scalars = []

  def write_scalars(self, step, scalars):
    self.scalars.append((step, dict(scalars)))


def test_report_progress_every_n_steps_and_at_the_end(caplog):
  writer = Recorder()
  hook = hooks.ReportProgress(num_steps=5, writer=writer, every_steps=2)
  with caplog.at_level(logging.INFO):
    fired = [hook(step) for step in range(1, 6)]
  assert fired == [False, True, False, True, True]  # the first call only starts the clock
  assert [(s, sorted(v)) for s, v in writer.scalars] == [
      (2, ['steps_per_sec']), (2, ['uptime']), (4, ['steps_per_sec']), (4, ['uptime']),
      (5, ['steps_per_sec']), (5, ['uptime'])]
  assert all(v > 0 for _, d in writer.scalars for v in d.values())
  notes = [r.getMessage() for r in caplog.records if 'work unit notes' in r.getMessage()]
  assert len(notes) == 3 and '40.0% (2/5), ETA: 0m' in notes[0] and '100.0% (5/5)' in notes[2]
  assert hooks._format_secs(123456.7) == '1d10h17m'
  assert hooks._format_secs(59) == '0m' and hooks._format_secs(7260) == '2h1m'


@pytest.fixture
def traces(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.profiler, 'start_trace', lambda logdir: calls.append(('start', logdir)))
  monkeypatch.setattr(jax.profiler, 'stop_trace', lambda: calls.append(('stop',)))
  return calls


def test_profile_window_once_and_stopped_at_the_end(traces, tmp_path):
  hook = hooks.Profile(logdir=str(tmp_path), num_steps=2, first_step=3, min_duration_s=0)
  for step in range(1, 9):
    hook(step)
    if step == 4:
      assert traces == [('start', str(tmp_path))]
  hook.close()
  assert traces == [('start', str(tmp_path)), ('stop',)]  # steps 4-5; one trace per run

  traces.clear()
  hook = hooks.Profile(logdir=str(tmp_path), num_steps=10, first_step=1, min_duration_s=0)
  for step in (1, 2, 3):
    hook(step)
  hook.close()  # training ended inside the window: the trace is still written
  hook.close()
  assert traces == [('start', str(tmp_path)), ('stop',)]


def test_profile_failure_is_logged_not_raised(monkeypatch, tmp_path, caplog):
  def fail(logdir):
    raise RuntimeError('no profiler here')
  monkeypatch.setattr(jax.profiler, 'start_trace', fail)
  hook = hooks.Profile(logdir=str(tmp_path), num_steps=1, first_step=1)
  with caplog.at_level(logging.INFO):
    for step in (1, 2, 3):
      hook(step)
    hook.close()
  assert 'could not start profiling' in caplog.text


def test_create_hooks_follows_the_config(tmp_path):
  config = config_lib.demo_config()
  made = hooks.create_hooks(config, str(tmp_path), Recorder())
  assert [type(h) for h in made] == [hooks.ReportProgress]
  config.train.profile_steps = 3
  made = hooks.create_hooks(config, str(tmp_path), Recorder())
  assert [type(h) for h in made] == [hooks.ReportProgress, hooks.Profile]
