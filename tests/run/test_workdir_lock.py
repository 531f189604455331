"""The workdir's training lock (sgdc_jax/run/workdir_lock.py), across processes."""

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


def test_a_failed_broadcast_releases_the_lock(tmp_path):
  def broken(_):
    raise RuntimeError("coordination service gone")

  with pytest.raises(RuntimeError, match="coordination service gone"):
    with workdir_lib.training_lock(str(tmp_path), broadcast=broken, process_index=0,
                                   process_count=2):
      pass
  with workdir_lib.training_lock(str(tmp_path)):   # not left held
    pass
