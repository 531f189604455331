"""Per-step hooks of the training loop (progress and ETA, a profiler trace window) and the
console progress bar. None of them waits on the devices."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional

import jax
import ml_collections
from absl import logging

from sgdc_jax.run.writers import MetricWriter


def _format_secs(secs: float) -> str:
  """123456.7 -> '1d10h17m' (days and hours only when non-zero; minutes always)."""
  days, secs = divmod(int(secs), 24 * 3600)
  hours, secs = divmod(secs, 3600)
  return (f"{days}d" if days else "") + (f"{hours}h" if hours else "") + f"{secs // 60}m"


class ReportProgress:
  """Hook called after every step: every `every_steps` steps and at `num_steps`, logs
  `<steps/s> steps/s, <%> (<step>/<num_steps>), ETA: <time>` (absl INFO) and writes the
  `steps_per_sec` and `uptime` scalars, as `clu.periodic_actions.ReportProgress` did. The rate
  is measured between reports on the host clock (dispatch, not device time); the first call
  only starts the clock."""

  def __init__(self, *, num_steps: int, writer: Optional[MetricWriter], every_steps: int):
    self._num_steps = int(num_steps)
    self._writer = writer
    self._every_steps = int(every_steps)
    self._t0 = time.monotonic()
    self._previous: Optional[tuple[int, float]] = None  # (step, time) of the last report

  def __call__(self, step: int) -> bool:
    """Reports when due; returns whether it did."""
    t = time.monotonic()
    if self._previous is None:
      self._previous = (step, t)
      return False
    if step == self._previous[0] or not (step % self._every_steps == 0
                                         or step == self._num_steps):
      return False
    steps_per_sec = (step - self._previous[0]) / max(t - self._previous[1], 1e-9)
    message = f"{steps_per_sec:.1f} steps/s"
    if self._num_steps > 0:
      eta = (self._num_steps - step) / steps_per_sec
      message += (f", {100 * step / self._num_steps:.1f}% ({step}/{self._num_steps}), "
                  f"ETA: {_format_secs(eta)}")
    logging.info("Setting work unit notes: %s", message)  # CLU's wording, kept for log readers
    if self._writer is not None:
      self._writer.write_scalars(step, {"steps_per_sec": steps_per_sec})
      self._writer.write_scalars(step, {"uptime": time.monotonic() - self._t0})
    self._previous = (step, t)
    return True

  def close(self) -> None:
    """Nothing to release."""


class Profile:
  """Hook called after every step: a `jax.profiler` trace into `logdir` (TensorBoard's profile
  plugin reads `logdir/plugins/profile/`), started after step `first_step` and stopped once
  `num_steps` more steps and at least `min_duration_s` have passed (host time; the devices
  run behind the dispatching host), or by `close` at the end of training. One trace per run;
  a failure to start or stop is logged, not raised."""

  def __init__(self, *, logdir: str, num_steps: int, first_step: int,
               min_duration_s: float = 3.0):
    self._logdir = logdir
    self._num_steps = int(num_steps)
    self._first_step = int(first_step)
    self._min_duration_s = float(min_duration_s)
    self._started: Optional[tuple[int, float]] = None  # (step, time) at the start
    self._done = False
    self._last_step = 0

  def __call__(self, step: int) -> None:
    self._last_step = step
    if self._started is not None:
      if (step >= self._started[0] + self._num_steps
          and time.monotonic() - self._started[1] >= self._min_duration_s):
        self._stop()
    elif not self._done and step == self._first_step:
      self._done = True
      try:
        jax.profiler.start_trace(self._logdir)
      except Exception as e:  # pylint: disable=broad-except  # a profile must not stop training
        logging.exception("could not start profiling: %s", e)
        return
      self._started = (step, time.monotonic())

  def _stop(self) -> None:
    first = self._started[0] + 1
    self._started = None
    try:
      jax.profiler.stop_trace()
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("could not stop profiling: %s", e)
      return
    logging.info("profile of steps %d-%d written to %s", first, self._last_step,
                 os.path.join(self._logdir, "plugins", "profile"))

  def close(self) -> None:
    """Stops a trace still running (training ended before its window closed)."""
    if self._started is not None:
      self._stop()


def create_hooks(config: ml_collections.ConfigDict, workdir: str,
                 writer: MetricWriter) -> list[Any]:
  """Hooks called with the step number after every step, each with a `close()` for the end of
  training: progress report (steps/s, ETA) on process 0, and a profiler trace when
  `config.train.profile_steps > 0`. Neither waits on the devices."""
  hooks: list[Any] = []
  if jax.process_index() == 0:
    hooks.append(ReportProgress(num_steps=int(config.train.num_steps), writer=writer,
                                every_steps=int(config.train.log_every)))
  if config.train.profile_steps > 0:
    hooks.append(Profile(logdir=workdir, num_steps=int(config.train.profile_steps),
                         first_step=int(config.train.profile_first_step)))
  return hooks


def progress_bar(total: int, initial: int) -> Optional[Any]:
  """A tqdm bar on process 0 when stdout is an interactive terminal, else None."""
  if jax.process_index() != 0 or not sys.stdout.isatty() or os.environ.get("SGDC_NO_BAR"):
    return None
  try:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top  # optional, console only
  except ImportError:
    return None
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
