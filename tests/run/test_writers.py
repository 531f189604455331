"""Tests of sgdc_jax.run.writers: the TensorFlow-free event files, history and console, in
process and fast (the commands without TensorFlow, read back by TensorBoard's event reader:
test_no_tensorflow.py)."""
import json
import logging
import os
import struct

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins.hparams import plugin_data_pb2

from sgdc_jax.run import config as config_lib
from sgdc_jax.run import writers


def _records(path):
  """The events of a TFRecord file, each CRC checked (the framing TensorBoard reads)."""
  events = []
  with open(path, 'rb') as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack('<Q', header)
    assert struct.unpack('<I', data[pos + 8:pos + 12])[0] == masked_crc32c(header)
    body = data[pos + 12:pos + 12 + length]
    footer = data[pos + 12 + length:pos + 16 + length]
    assert struct.unpack('<I', footer)[0] == masked_crc32c(body)
    events.append(event_pb2.Event.FromString(body))
    pos += 16 + length
  return events


def test_writer_files_events_history_and_console(tmp_path, caplog):
  writer = writers.create_writer(str(tmp_path))
  writers.write_hparams(writer, config_lib.demo_config())
  with caplog.at_level(logging.INFO):
    writer.write_scalars(2, {'loss': 0.5, 'learning_rate': 1e-3})
    writer.write_scalars(4, {'val_dice': np.float64(0.75)})
  # Each write is on disk before close: a crashed run keeps its events.
  (name,) = [n for n in os.listdir(tmp_path) if n.startswith('events.out.tfevents.')]
  assert f'.{os.getpid()}.' in name and name.endswith('.v2')  # TensorFlow's file naming
  assert len(_records(tmp_path / name)) == 5
  writer.close()
  writer.close()  # idempotent

  first, hparams, *scalars = _records(tmp_path / name)
  assert first.file_version == 'brain.Event:2'
  (hp,) = hparams.summary.value
  assert hp.tag == '_hparams_/session_start_info'
  assert hp.metadata.plugin_data.plugin_name == 'hparams'
  info = plugin_data_pb2.HParamsPluginData.FromString(hp.metadata.plugin_data.content)
  assert info.session_start_info.hparams['train.num_steps'].number_value == 150
  assert info.session_start_info.hparams['model.encoder'].string_value == 'resnet18'
  got = {}
  for event in scalars:
    (value,) = event.summary.value
    assert value.metadata.plugin_data.plugin_name == 'scalars'
    assert value.metadata.data_class == summary_pb2.DATA_CLASS_SCALAR
    assert value.tensor.dtype == 1 and not value.tensor.tensor_shape.dim  # DT_FLOAT scalar
    got[value.tag] = (event.step, value.tensor.float_val[0])
  assert got == {'loss': (2, 0.5), 'learning_rate': (2, pytest.approx(1e-3)),
                 'val_dice': (4, 0.75)}

  history = [json.loads(l) for l in (tmp_path / writers.HISTORY).read_text().splitlines()]
  assert history == [{'step': 2, 'loss': 0.5, 'learning_rate': 1e-3},
                     {'step': 4, 'val_dice': 0.75}]
  assert '[2] learning_rate=0.001, loss=0.5' in caplog.text  # CLU's console format


def test_resume_truncates_history_and_starts_another_event_file(tmp_path):
  writer = writers.create_writer(str(tmp_path))
  for step in (1, 2, 3):
    writer.write_scalars(step, {'loss': float(step)})
  writer.close()
  writer = writers.create_writer(str(tmp_path), resume_step=2)
  writer.write_scalars(3, {'loss': 30.0})
  writer.close()
  history = [json.loads(l) for l in (tmp_path / writers.HISTORY).read_text().splitlines()]
  assert [(r['step'], r['loss']) for r in history] == [(1, 1.0), (2, 2.0), (3, 30.0)]
  assert len([n for n in os.listdir(tmp_path) if n.startswith('events.out.tfevents.')]) == 2
