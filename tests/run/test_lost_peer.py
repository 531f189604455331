"""A lost peer in a multi-process run (`sgdc_jax.run.peers`): the survivor ends within a bounded
time with one line naming the lost process, the last complete checkpoint and the resume
command (exit 5), and a rerun resumes from that checkpoint.

Fast tests drive the `Watchdog` with a fake key-value store and clock; the slow ones train with
two CPU processes on loopback (as `test_multiprocess.py`) and `kill -9` each role in turn.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import pytest

from sgdc_jax import errors
from sgdc_jax.run import checkpoints as checkpointing
from sgdc_jax.run import config as config_lib
from sgdc_jax.run import experiment, peers

from test_fault_injection import TINY_FLAGS  # pylint: disable=wrong-import-order
from test_multiprocess import free_port  # pylint: disable=wrong-import-order
from test_train import CACHE, REPO  # pylint: disable=wrong-import-order

TIMEOUT_S = 8    # --config.mesh.peer_timeout_s of the slow tests
WAIT_S = 400     # bound on start-up waits (a cold XLA cache on a loaded 2-core machine)
NUM_STEPS = 40   # long enough that a checkpoint a few steps after a resume is not the last


class FakeClient:
  """The two key-value calls of a `DistributedRuntimeClient`, over a dict."""

  def __init__(self):
    self.store: dict[str, str] = {}
    self.down = False

  def key_value_set(self, key, value, allow_overwrite=False):
    if self.down:
      raise RuntimeError("UNAVAILABLE: Socket closed")
    assert allow_overwrite or key not in self.store
    self.store[key] = value

  def key_value_dir_get(self, prefix):
    if self.down:
      raise RuntimeError("UNAVAILABLE: Socket closed")
    return [(k, v) for k, v in self.store.items() if k.startswith(prefix)]


class Clock:
  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def make(index=0, count=2, timeout=8.0, **kw):
  client, clock, exits, lines = FakeClient(), Clock(), [], []

  def exit_(code):
    exits.append(code)
    raise SystemExit(code)

  dog = peers.Watchdog(client, index, count, "10.0.0.1:1234", timeout, clock=clock, exit=exit_,
                       write=lines.append, command="python -m sgdc_jax.main --workdir=W", **kw)
  return dog, client, clock, exits, lines


def peer_beats(client, q, n, where="hostb 77"):
  client.store[f"{peers.PREFIX}{q}"] = f"beat {n} {where}"


def test_silent_peer_is_lost_after_timeout():
  dog, client, clock, _, _ = make()
  dog.beat()
  for n in range(20):  # a live peer: its counter moves, nobody is lost
    peer_beats(client, 1, n)
    clock.t += 1
    assert dog.poll() is None
  for _ in range(8):   # the counter stops: lost once it has not moved for 8 s
    clock.t += 1
    assert dog.poll() is None
  clock.t += 1
  assert dog.poll() == (1, "no heartbeat for 8 s")
  assert dog.describe(1) == "process 1 of 2 (host hostb, pid 77)"
  assert client.store[f"{peers.PREFIX}0"].startswith("beat 1 ")


def test_peer_that_never_beat_is_lost_and_own_stall_is_not_blamed():
  dog, client, clock, _, _ = make(count=3)
  peer_beats(client, 1, 0)
  assert dog.poll() is None
  clock.t += 30          # this process stood still for longer than the timeout: no verdict
  peer_beats(client, 1, 1)
  assert dog.poll() is None
  for _ in range(9):
    clock.t += 1
    peer_beats(client, 1, int(clock.t))
    lost = dog.poll()
  assert lost == (2, "no heartbeat for 8 s")   # process 2 never beat at all
  assert dog.describe(2) == "process 2 of 3"


def test_finished_peers_are_not_lost_but_a_failed_one_stops_the_others():
  dog, client, clock, _, _ = make(count=3)
  client.store[f"{peers.PREFIX}1"] = "done 0 hostb 77"
  client.store[f"{peers.PREFIX}2"] = "done 2 hostc 78"
  assert dog.poll() is None
  clock.t += dog.grace_s + 1
  assert dog.poll() == (2, "it stopped with exit status 2 (its own output says why)")
  clock.t += 100
  client.store.pop(f"{peers.PREFIX}2")
  dog._done.pop(2)  # pylint: disable=protected-access
  peer_beats(client, 2, 5)
  assert dog.poll() is None  # process 1 finished: never lost, however long it is silent
  dog.finish(2)              # this process failed too: its own error speaks, not the peer's
  assert client.store[f"{peers.PREFIX}0"].startswith("done 2 ")


def test_unreachable_service_means_the_coordinator_is_lost():
  dog, client, clock, _, _ = make(index=1)
  client.down = True
  assert dog.poll() is None
  clock.t += 9
  assert dog.poll() == (0, "its coordination service has not answered for 8 s")
  assert dog.describe(0) == "process 0 of 2 (the coordinator at 10.0.0.1:1234)"


def test_report_prints_one_line_and_exits_with_the_peer_lost_status(tmp_path):
  ckpt = tmp_path / "checkpoints"
  for name in ("2", "4", "6.orbax-checkpoint-tmp-1234"):  # step 6 was being saved
    (ckpt / name).mkdir(parents=True)
  assert peers.last_complete_step(str(ckpt)) == 4
  reader = checkpointing.Checkpointer(str(ckpt), read_only=True)
  try:
    assert reader.latest_step() == 4  # a rerun ignores the save in flight too
  finally:
    reader.close()
  dog, client, _, exits, lines = make(checkpoint_dir=str(ckpt))
  peer_beats(client, 1, 3)
  dog.poll()
  with pytest.raises(SystemExit):
    dog.report(1, "no heartbeat for 8 s")
  assert exits == [errors.EXIT_PEER_LOST] == [5]
  assert len(lines) == 1 and lines[0].count("\n") == 1
  assert lines[0] == (
      f"error: lost process 1 of 2 (host hostb, pid 77): no heartbeat for 8 s; process 0 "
      f"stopped. The last complete checkpoint is step 4 in {ckpt} (a save in flight is not "
      f"used). To resume, start the same command on every process: "
      f"python -m sgdc_jax.main --workdir=W\n")
  # A process that had finished its own work ends quietly with its own status.
  dog2, _, _, exits2, lines2 = make()
  dog2.finish(0)
  with pytest.raises(SystemExit):
    dog2.runtime_error()
  assert exits2 == [0] and lines2 == []


def test_runtime_error_names_the_unreachable_coordinator():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]  # closed again: connections are refused
  dog, client, _, exits, lines = make(index=1)
  dog.coordinator = f"127.0.0.1:{port}"
  with pytest.raises(SystemExit):
    dog.runtime_error()
  assert exits == [5] and len(lines) == 1
  assert lines[0].startswith(f"error: lost process 0 of 2 (the coordinator at 127.0.0.1:{port}):"
                             f" its coordination service closed; process 1 stopped.")
  assert "To run again, start the same command" in lines[0]  # no checkpoints named: eval


def test_guard_marks_the_end_and_keeps_errors():
  dog, client, _, _, _ = make()
  with peers.guard(dog):
    pass
  assert client.store[f"{peers.PREFIX}0"].startswith("done 0 ")
  dog, client, _, _, _ = make()
  with pytest.raises(errors.WorkdirBusyError), peers.guard(dog):
    raise errors.WorkdirBusyError("busy")
  assert client.store[f"{peers.PREFIX}0"].startswith("done 4 ")
  assert peers.caused_by_peer(RuntimeError("Gloo all-reduce failed: Connection reset by peer"))
  assert not peers.caused_by_peer(ValueError("bad value"))
  assert peers.runtime_heartbeat_s(60) == 120 and peers.runtime_heartbeat_s(8) == 38


def test_a_collective_failing_for_a_lost_peer_waits_for_the_report():
  """The main thread's Gloo error is held until the heartbeat thread has named the peer."""
  client, exits, lines = FakeClient(), [], []

  dog = peers.Watchdog(client, 0, 2, "127.0.0.1:1", 1.0, exit=exits.append, write=lines.append,
                       command="cmd").start()
  t0 = time.monotonic()
  with pytest.raises(RuntimeError, match="Gloo"), peers.guard(dog):
    raise RuntimeError("Gloo all-reduce failed: Connection reset by peer")
  assert exits == [5] and 1.0 < time.monotonic() - t0 < 4.0
  assert len(lines) == 1 and lines[0].startswith("error: lost process 1 of 2: no heartbeat")


def test_peer_timeout_is_a_config_field(monkeypatch):
  c = config_lib.get_config()
  assert c.mesh.peer_timeout_s == 60.0
  c.mesh.peer_timeout_s = 0
  with pytest.raises(errors.ConfigError, match="mesh.peer_timeout_s"):
    config_lib.validate_config(c, mode="train")
  # Several processes: checked (by the same rule) before the processes connect.
  monkeypatch.setattr(experiment, "multiprocess_from_env", lambda: {"num_processes": 2})
  monkeypatch.setattr(peers, "initialize", lambda *a, **k: pytest.fail("initialized"))
  with pytest.raises(errors.ConfigError,
                     match=r"^mesh.peer_timeout_s: expected a number > 0 \(seconds\), got 0\.0$"):
    experiment.initialize_processes(c)


# ----------------------------------------------------------------- two processes, one killed

def _flags(num_steps: int) -> list[str]:
  flags = dict(f[2:].split("=", 1) for f in TINY_FLAGS)
  flags.update({"config.train.num_steps": str(num_steps), "config.train.batch_size": "4",
                "config.eval.batch_size": "4", "config.train.eval_every": "0",
                "config.train.checkpoint_every": "2",
                "config.mesh.peer_timeout_s": str(TIMEOUT_S)})
  return [f"--{k}={v}" for k, v in flags.items()]


class Pair:
  """`python -m sgdc_jax.main` as processes 0 and 1 of a loopback run; output in files (an
  undrained pipe would block the chatty process, and with it the other)."""

  def __init__(self, tmp_path, workdir: str, tag: str, num_steps: int = 8):
    port = free_port()
    self.args = ["-m", "sgdc_jax.main", "--config=configs/demo.py", f"--workdir={workdir}"]
    self.args += _flags(num_steps)
    self.procs, self.files = [], []
    for pid in range(2):
      env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", SGDC_NO_BAR="1",
                 JAX_COMPILATION_CACHE_DIR=CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                 XLA_FLAGS="--xla_force_host_platform_device_count=2",
                 JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                 JAX_PROCESS_ID=str(pid))
      out, err = tmp_path / f"{tag}{pid}.out", tmp_path / f"{tag}{pid}.err"
      self.files.append((out, err))
      with open(out, "w") as o, open(err, "w") as e:
        self.procs.append(subprocess.Popen([sys.executable] + self.args, env=env, cwd=REPO,
                                           stdout=o, stderr=e))

  def text(self, pid: int, which: int) -> str:
    return self.files[pid][which].read_text(errors="replace")

  def wait(self, timeout: float) -> list[int]:
    try:
      return [p.wait(timeout=timeout) for p in self.procs]
    finally:
      self.kill_all()

  def kill_all(self) -> None:
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait(timeout=60)


def _wait_for_step(pair: Pair, workdir: str, step: int) -> int:
  """Waits until a checkpoint >= `step` is complete; returns its step."""
  ckpt = os.path.join(workdir, "checkpoints")
  deadline = time.monotonic() + WAIT_S
  while True:
    done = peers.last_complete_step(ckpt) if os.path.isdir(ckpt) else None
    if done is not None and done >= step:
      return done
    if any(p.poll() is not None for p in pair.procs) or time.monotonic() > deadline:
      pair.kill_all()
      pytest.fail(f"checkpoint {step} never appeared; stderr tails:\n"
                  + "\n".join(pair.text(i, 1)[-2000:] for i in range(2)))
    time.sleep(0.1)


def _survivor_reports(pair: Pair, workdir: str, victim: int) -> int:
  """Kills process `victim`, checks the survivor's exit and its one line; returns the step
  that line names as the last complete checkpoint."""
  os.kill(pair.procs[victim].pid, signal.SIGKILL)
  t0 = time.monotonic()
  survivor = 1 - victim
  try:
    code = pair.procs[survivor].wait(timeout=6 * TIMEOUT_S)
  except subprocess.TimeoutExpired:
    pair.kill_all()
    pytest.fail(f"the survivor ran on for {6 * TIMEOUT_S} s:\n{pair.text(survivor, 1)[-3000:]}")
  elapsed = time.monotonic() - t0
  pair.kill_all()
  err = pair.text(survivor, 1)
  assert code == errors.EXIT_PEER_LOST, f"exit {code} after {elapsed:.1f} s:\n{err[-3000:]}"
  assert elapsed < 6 * TIMEOUT_S
  error_lines = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(error_lines) == 1, err[-3000:]
  line = error_lines[0]
  assert line.startswith(f"error: lost process {victim} of 2 (")
  assert ("the coordinator at 127.0.0.1:" in line) == (victim == 0)
  assert f"pid {pair.procs[victim].pid}" in line
  for noise in ("Traceback", "Check fail", "Fatal Python", "Thread 0x", "terminate called",
                "Current thread"):
    assert noise not in err, err[-3000:]
  step = int(re.search(r"last complete checkpoint is step (\d+) in ", line).group(1))
  assert peers.last_complete_step(os.path.join(workdir, "checkpoints")) == step
  assert line.endswith(" ".join(["python"] + pair.args))   # the resume command: as started
  return step


@pytest.mark.slow
def test_survivors_stop_with_one_line_and_the_same_command_resumes(tmp_path):
  # One workdir, two faults in turn (each pair start-up costs a minute on the 2-core machine):
  # the worker is killed; the same command resumes from the step the survivor named; then the
  # coordinator of that rerun is killed.
  workdir = str(tmp_path / "run")
  first = Pair(tmp_path, workdir, "first", num_steps=NUM_STEPS)
  _wait_for_step(first, workdir, 2)
  step = _survivor_reports(first, workdir, victim=1)
  assert step >= 2
  rerun = Pair(tmp_path, workdir, "rerun", num_steps=NUM_STEPS)
  later = _wait_for_step(rerun, workdir, step + 2)
  assert f"resumed from step {step} in " in rerun.text(0, 0)
  assert later < NUM_STEPS, "the rerun finished before its coordinator could be killed"
  assert _survivor_reports(rerun, workdir, victim=0) >= later
