"""Where results go: console log, metric writers (console, TensorBoard events, the
`history.jsonl` file), per-step hooks (progress/ETA, profiler trace), evaluation outputs
(metrics.json, per-image CSV, overlays) and the training curve.

Nothing here needs TensorFlow: event files are written with TensorBoard's own record writer
and protos (readable by TensorBoard), the profile with `jax.profiler`.

Evaluation outputs live in one folder per (data set, split, checkpoint step):
`workdir/eval/<data.name>/<split>/step_<N>/{metrics.json, per_image.csv, overlays/, config.json}`
(`eval_dir`), so evaluations of different splits, data sets or checkpoints never overwrite
each other.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import socket
import sys
import time
from typing import Any, Callable, Mapping, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util
# Figures are drawn on `Figure` objects, not pyplot: nothing here changes the process's
# matplotlib backend (a notebook importing the package keeps its inline plots).
from matplotlib.figure import Figure

from sgdc_jax import config as config_lib
from sgdc_jax.inference import ScoredImage

HISTORY = "history.jsonl"
SUMMARY_KEYS = ("dice", "iou", "hd95", "assd", "accuracy", "sensitivity", "specificity",
                "precision")


def log(message: str) -> None:
  """Logs `message` (absl INFO) and prints it on process 0."""
  logging.info(message)
  if jax.process_index() == 0:
    print(message, flush=True)


class MetricWriter:
  """What the training loop writes to: scalars per step and the config once as
  hyper-parameters. The base class records nothing."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Records `{name: number}` at `step`."""

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Records flat `{name: bool | int | float | str}` hyper-parameters."""

  def flush(self) -> None:
    """Makes everything written so far visible to readers."""

  def close(self) -> None:
    """Flushes and releases the writer's files (idempotent)."""


class LoggingWriter(MetricWriter):
  """absl INFO lines `[step] name=value, ...` and `[Hyperparameters] {...}` (the format of
  CLU's LoggingWriter)."""

  def write_scalars(self, step, scalars):
    values = [f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
              for k, v in sorted(scalars.items())]
    logging.info("[%d] %s", step, ", ".join(values))

  def write_hparams(self, hparams):
    logging.info("[Hyperparameters] %s", dict(hparams))

  def flush(self):
    logging.flush()

  def close(self):
    self.flush()


_event_file_ids = itertools.count()


class TensorBoardWriter(MetricWriter):
  """TensorBoard event file in `logdir`, written without TensorFlow.

  Records are TFRecord-framed `Event` protos (TensorBoard's own `RecordWriter` and protos), one
  event per scalar with the `scalars` plugin metadata and an hparams `session_start_info`
  summary, as `tf.summary` writes them; the file name follows TensorFlow's
  (`events.out.tfevents.<time>.<host>.<pid>.<n>.v2`). Each write is flushed, so a crashed run
  keeps its events and TensorBoard sees a running one. The file is opened through
  `etils.epath` (plain files locally; `gs://` through TensorFlow or fsspec where installed).
  """

  def __init__(self, logdir: str):
    epath.Path(logdir).mkdir(parents=True, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_event_file_ids)}.v2")
    self.path = os.path.join(logdir, name)
    self._file = epath.Path(self.path).open("wb")
    self._records = record_writer.RecordWriter(self._file)
    self._add(event_pb2.Event(file_version="brain.Event:2",
                              source_metadata=event_pb2.SourceMetadata(writer=__name__)))

  def _add(self, event: event_pb2.Event) -> None:
    if self._file is None:
      raise ValueError(f"{self.path} is closed")
    event.wall_time = time.time()
    self._records.write(event.SerializeToString())
    self._file.flush()

  def write_scalars(self, step, scalars):
    for key, value in scalars.items():
      metadata = scalar_metadata.create_summary_metadata(display_name=None, description=None)
      metadata.data_class = summary_pb2.DATA_CLASS_SCALAR
      value = summary_pb2.Summary.Value(
          tag=key, metadata=metadata,
          tensor=tensor_util.make_tensor_proto(np.asarray(value, np.float32)))
      self._add(event_pb2.Event(step=int(step), summary=summary_pb2.Summary(value=[value])))

  def write_hparams(self, hparams):
    self._add(event_pb2.Event(summary=hparams_summary.hparams_pb(dict(hparams))))

  def close(self):
    if self._file is not None:
      self._file.close()
      self._file = None


class JsonlWriter(MetricWriter):
  """Appends one JSON line `{"step": s, name: value, ...}` per `write_scalars` call (the run's
  `history.jsonl`); hyper-parameters are not recorded."""

  def __init__(self, path: str):
    self._path = path

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self._path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")


class MultiWriter(MetricWriter):
  """Writes to every writer of `writers`, in order."""

  def __init__(self, writers: list[MetricWriter]):
    self.writers = list(writers)

  def write_scalars(self, step, scalars):
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_hparams(self, hparams):
    for w in self.writers:
      w.write_hparams(hparams)

  def flush(self):
    for w in self.writers:
      w.flush()

  def close(self):
    for w in self.writers:
      w.close()


def truncate_history(path: str, last_step: int) -> None:
  """Drops history lines after `last_step` (steps that are repeated after a resume)."""
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(l) for l in f if l.strip()]
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      if r["step"] <= last_step:
        f.write(json.dumps(r) + "\n")


def create_writer(workdir: str, resume_step: int = 0) -> MetricWriter:
  """Console + TensorBoard events + `workdir/history.jsonl` on process 0 (console only
  elsewhere). History lines after `resume_step` (from an interrupted run) are dropped first."""
  if jax.process_index() > 0:
    return MultiWriter([LoggingWriter()])
  path = os.path.join(workdir, HISTORY)
  truncate_history(path, resume_step)
  return MultiWriter([LoggingWriter(), TensorBoardWriter(workdir), JsonlWriter(path)])


def write_hparams(writer: MetricWriter, config: ml_collections.ConfigDict) -> None:
  """Writes the flattened config once as hyper-parameters (lists/tuples as strings)."""
  writer.write_hparams({k: v if isinstance(v, (bool, int, float, str)) else str(v)
                        for k, v in config_lib.flatten(config).items()})


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


def eval_dir(workdir: str, dataset: str, split: str, step: int) -> str:
  """`workdir/eval/<dataset>/<split>/step_<step>`; path separators in names become '_'."""
  clean = lambda s: str(s).replace(os.sep, "_").replace("/", "_")
  return os.path.join(workdir, "eval", clean(dataset), clean(split), f"step_{int(step)}")


def write_eval_outputs(out_dir: str, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
  """Writes `per_image.csv` (one row per image, with its file id) and `metrics.json`."""
  os.makedirs(out_dir, exist_ok=True)
  fields: list[str] = []
  for r in rows:
    fields.extend(k for k in r if k not in fields)
  with open(os.path.join(out_dir, "per_image.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in sorted(rows, key=lambda r: r["index"]):
      w.writerow(r)
  with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2, default=str)


def overlay_writer(out_dir: str, limit: int) -> Callable[[ScoredImage], None]:
  """A `Scorer.score` visitor saving the first `limit` images as overlay PNGs in
  `out_dir/overlays/NNN_<id>.png`."""
  written = [0]

  def visit(item: ScoredImage) -> None:
    if written[0] >= limit:
      return
    os.makedirs(os.path.join(out_dir, "overlays"), exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.id)
    save_overlay(os.path.join(out_dir, "overlays", f"{written[0]:03d}_{safe}.png"), item.image,
                 item.target, item.pred, item.edge,
                 f"{item.id}  dice {item.metrics.get('dice', math.nan):.3f}")
    written[0] += 1

  return visit


def save_overlay(path: str, image: np.ndarray, target: np.ndarray, pred: np.ndarray,
                 edge: Optional[np.ndarray], title: str) -> None:
  """PNG with the image, ground-truth contour (green), predicted contour (red) and, next to it,
  the SGE edge map (when given). `image` uint8 (H, W, 3); masks (H, W); `edge` (H, W)."""
  panels = 2 if edge is not None else 1
  fig = Figure(figsize=(4.5 * panels, 4.5))
  axes = fig.subplots(1, panels, squeeze=False)
  ax = axes[0, 0]
  ax.imshow(image)
  for m, color in ((target, "lime"), (pred, "red")):
    if np.any(m > 0) and not np.all(m > 0):
      ax.contour((m > 0).astype(np.float32), levels=[0.5], colors=color, linewidths=1.2)
  ax.set_title(f"{title}\nGT green, prediction red", fontsize=8)
  ax.axis("off")
  if edge is not None:
    ax = axes[0, 1]
    ax.imshow(edge, cmap="magma", vmin=0.0, vmax=1.0)
    ax.set_title("SGE edge map", fontsize=8)
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=80)


def plot_training_curve(history_path: str, out_png: str) -> Optional[str]:
  """Plots training loss, validation Dice and validation HD95 against the step.

  Args:
    history_path: JSON-lines file with {'step', 'loss'} and {'step', 'val_dice', 'val_hd95'}.
    out_png: output PNG path.
  Returns:
    `out_png`, or None when there is no history.
  """
  if not os.path.exists(history_path):
    return None
  with open(history_path, encoding="utf-8") as f:
    rows = [json.loads(l) for l in f if l.strip()]
  if not rows:
    return None
  series = {key: [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            for key in ("loss", "val_dice", "val_hd95")}
  fig = Figure(figsize=(13, 3.6))
  axes = fig.subplots(1, 3)
  for ax, key, name in ((axes[0], "loss", "train loss"), (axes[1], "val_dice", "val Dice"),
                        (axes[2], "val_hd95", "val HD95 (px)")):
    if series[key]:
      xs, ys = zip(*series[key])
      ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_title(name)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out_png, dpi=90)
  return out_png


def print_summary(summary: dict[str, Any], out_dir: str) -> None:
  """Prints the mean metrics of an evaluation and where its outputs are."""
  mean = summary["mean"]
  print(f"{summary.get('split', '')} metrics over {summary['n_images']} images "
        f"(checkpoint step {summary.get('checkpoint_step')}):")
  for k in (k for k in SUMMARY_KEYS if k in mean):
    print(f"  {k:12s} {mean[k]:.4f} +- {summary['std'][k]:.4f}")
  print(f"  empty masks: {summary.get('empty')}; HD95 convention: {summary.get('hd95_convention')}")
  print(f"outputs: {os.path.join(out_dir, 'metrics.json')}, "
        f"{os.path.join(out_dir, 'per_image.csv')}, {os.path.join(out_dir, 'overlays')}/")
