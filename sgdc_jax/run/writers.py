"""Metric writers the training loop writes to: console lines, TensorBoard event files and
`history.jsonl`, without TensorFlow (event files are written with TensorBoard's own record
writer and protos, readable by TensorBoard)."""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from typing import Any, Mapping

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

from sgdc_jax.run import config as config_lib

HISTORY = "history.jsonl"


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
