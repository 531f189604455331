"""Workdir lock (second training refused, stale-lock safe after kill -9, one outcome on every
process) and the training config record (written once, compared field by field)."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import numpy as np
import pytest

from sgdc_jax.run import config as config_lib
from sgdc_jax.run import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Takes the lock in a fresh interpreter; `hold` keeps it until killed.
LOCKER = textwrap.dedent("""
    import sys, time
    from sgdc_jax.run import workdir as w
    try:
      with w.training_lock(sys.argv[1]):
        print('LOCKED', flush=True)
        if sys.argv[2] == 'hold':
          time.sleep(600)
    except w.WorkdirBusyError as e:
      print(e, file=sys.stderr)
      sys.exit(7)
""")


def _locker(workdir, mode):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, "-c", LOCKER, str(workdir), mode], env=env,
                          cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_second_process_is_refused_while_the_lock_is_held(tmp_path):
  with workdir_lib.training_lock(str(tmp_path)):
    proc = _locker(tmp_path, "try")
    out, err = proc.communicate(timeout=300)   # refused without waiting for the holder
  assert proc.returncode == 7, out + err
  assert "LOCKED" not in out
  assert f"workdir {tmp_path} is in use by another training" in err
  assert f"pid {os.getpid()} on host {socket.gethostname()}, started 20" in err
  assert os.path.join(str(tmp_path), workdir_lib.LOCK_FILE) in err
  # Released on exit: the same file is taken again.
  with workdir_lib.training_lock(str(tmp_path)):
    pass


def test_kill_9_of_the_holder_leaves_no_stale_lock(tmp_path):
  holder = _locker(tmp_path, "hold")
  try:
    assert holder.stdout.readline().strip() == "LOCKED", holder.stderr.read()
    with pytest.raises(workdir_lib.WorkdirBusyError, match=f"pid {holder.pid} on host"):
      with workdir_lib.training_lock(str(tmp_path)):
        pass
  finally:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
  assert holder.returncode == -signal.SIGKILL
  lock_file = tmp_path / workdir_lib.LOCK_FILE
  assert lock_file.exists()      # the file stays; the OS dropped the lock with the process
  with workdir_lib.training_lock(str(tmp_path)):
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()   # reused, rewritten


def test_every_process_raises_process_0s_outcome(tmp_path):
  busy_dir = str(tmp_path / "busy")
  sent = []

  def record(payload):             # process 0's side of broadcast_one_to_all
    sent.append(np.array(payload))
    return payload

  with workdir_lib.training_lock(busy_dir):           # another run holds it
    with pytest.raises(workdir_lib.WorkdirBusyError) as p0:
      with workdir_lib.training_lock(busy_dir, broadcast=record, process_index=0,
                                     process_count=2):
        pass
  # Process 1 never looks at the file system (the path need not exist there) and raises the
  # same message.
  nowhere = str(tmp_path / "not_on_this_host")
  with pytest.raises(workdir_lib.WorkdirBusyError) as p1:
    with workdir_lib.training_lock(nowhere, broadcast=lambda _: sent[0], process_index=1,
                                   process_count=2):
      pass
  assert str(p1.value) == str(p0.value) and busy_dir in str(p1.value)
  assert not os.path.exists(nowhere)
  # A free workdir: process 1 runs its body when process 0 got the lock.
  sent.clear()
  with workdir_lib.training_lock(str(tmp_path / "free"), broadcast=record, process_index=0,
                                 process_count=2):
    entered = []
    with workdir_lib.training_lock(nowhere, broadcast=lambda _: sent[0], process_index=1,
                                   process_count=2):
      entered.append(1)
  assert entered == [1]


def test_lock_file_that_cannot_be_created_is_one_message(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(workdir_lib.WorkdirError, match="cannot create the training lock"):
    with workdir_lib.training_lock(str(blocker / "run")):
      pass


def _config(**fields):
  c = config_lib.get_config()
  for path, value in fields.items():
    section, name = path.split("__")
    c[section][name] = value
  return c


def test_config_diff_names_the_model_fields(tmp_path):
  workdir = str(tmp_path)
  path = workdir_lib.record_training_config(_config(), workdir)
  assert path == os.path.join(workdir, "config.json")
  now = _config(model__encoder="resnet18", model__decoder_channels=64, model__impl="shift",
                train__num_steps=7, train__log_every=3, data__data_dir="/elsewhere")
  comparison = workdir_lib.compare_training_config(now, workdir)
  assert [str(d) for d in comparison.blocking] == [
      "model.decoder_channels: 256 (workdir) vs 64 (now)",
      "model.encoder: 'resnet50' (workdir) vs 'resnet18' (now)"]
  assert [d.path for d in comparison.allowed] == [
      "data.data_dir", "model.impl", "train.log_every", "train.num_steps"]
  with pytest.raises(workdir_lib.ModelConfigMismatchError) as e:
    workdir_lib.check_training_config(now, workdir)
  message = str(e.value)
  assert message.startswith(f"cannot resume {workdir}: its checkpoints were trained with "
                            f"another model config")
  assert "  model.encoder: 'resnet50' (workdir) vs 'resnet18' (now)" in message
  assert "model.decoder_channels" in message and "num_steps" not in message


def test_only_state_changing_optimizer_switches_block(tmp_path):
  workdir = str(tmp_path)
  workdir_lib.record_training_config(_config(optimizer__ema_decay=0.9), workdir)
  same_state = workdir_lib.compare_training_config(_config(optimizer__ema_decay=0.99), workdir)
  assert same_state.blocking == [] and [d.path for d in same_state.allowed] == [
      "optimizer.ema_decay"]
  ema_off = workdir_lib.compare_training_config(_config(optimizer__ema_decay=0.0), workdir)
  assert [str(d) for d in ema_off.blocking] == [
      "optimizer.ema_decay: 0.9 (workdir) vs 0.0 (now) (EMA on/off changes the saved state)"]
  no_clip = workdir_lib.compare_training_config(
      _config(optimizer__ema_decay=0.9, optimizer__grad_clip_norm=0.0), workdir)
  assert [d.path for d in no_clip.blocking] == ["optimizer.grad_clip_norm"]
  # Allowed differences only: no error.
  assert workdir_lib.check_training_config(_config(optimizer__ema_decay=0.9,
                                                   train__num_steps=5), workdir).allowed


def test_record_is_not_overwritten_by_checks_or_other_modes(tmp_path):
  workdir = str(tmp_path / "run")
  workdir_lib.record_training_config(_config(), workdir)
  record = tmp_path / "run" / "config.json"
  before = record.read_bytes()
  with pytest.raises(workdir_lib.ModelConfigMismatchError):
    workdir_lib.check_training_config(_config(model__encoder="resnet18"), workdir,
                                      action="eval")
  workdir_lib.check_training_config(_config(train__num_steps=9), workdir)
  out = workdir_lib.write_run_config(_config(train__num_steps=9), str(tmp_path / "preds"),
                                     workdir)
  assert json.loads(open(out).read())["train"]["num_steps"] == 9
  with pytest.raises(workdir_lib.WorkdirError, match="training config record"):
    workdir_lib.write_run_config(_config(train__num_steps=9), workdir, workdir)
  assert record.read_bytes() == before
  assert json.loads(before)["train"]["num_steps"] == 20_000
  assert sorted(os.listdir(workdir)) == ["config.json"]    # no temporary files left


def test_missing_or_broken_record(tmp_path):
  assert workdir_lib.compare_training_config(_config(), str(tmp_path)) is None
  assert workdir_lib.check_training_config(_config(), str(tmp_path)) is None
  (tmp_path / "config.json").write_text('{"model": ')
  with pytest.raises(workdir_lib.WorkdirError, match=r"cannot read the training config record "
                     + str(tmp_path / "config.json")):
    workdir_lib.compare_training_config(_config(), str(tmp_path))


def test_a_failed_broadcast_releases_the_lock(tmp_path):
  def broken(_):
    raise RuntimeError("coordination service gone")

  with pytest.raises(RuntimeError, match="coordination service gone"):
    with workdir_lib.training_lock(str(tmp_path), broadcast=broken, process_index=0,
                                   process_count=2):
      pass
  with workdir_lib.training_lock(str(tmp_path)):   # not left held
    pass


def test_eval_and_predict_settings_are_not_reported(tmp_path, capsys):
  """Settings of how eval/predict read and write never concern the trained model: predict
  does not report them as differences from the training config."""
  workdir = str(tmp_path)
  workdir_lib.record_training_config(_config(), workdir)
  now = _config(predict__input_dir="/in", predict__output_dir="/out", predict__batch_size=2,
                predict__save_probabilities=True, eval__checkpoint="latest", eval__overlays=0,
                eval__batch_size=4)
  now.compilation_cache_dir = "/cache"
  comparison = workdir_lib.check_training_config(now, workdir, action="predict")
  assert comparison.blocking == [] and comparison.allowed == []
  assert "differs" not in capsys.readouterr().out
  # Settings that change what the model is scored on or the training still are.
  now.eval.use_ema = False
  now.train.num_steps = 5
  comparison = workdir_lib.check_training_config(now, workdir, action="predict")
  assert [d.path for d in comparison.allowed] == ["eval.use_ema", "train.num_steps"]
  out = capsys.readouterr().out
  assert "predict: config differs from the workdir's training config in 2 field(s)" in out
  assert "predict." not in out.replace("predict: ", "")
