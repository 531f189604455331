"""Watches the other processes of a multi-process run; ends this one with one line when one is lost.

Without this, a peer killed mid-run makes JAX's C++ runtime abort every survivor (exit 134, a
C++ check failure and a Python thread dump): at once when the coordinator (process 0, which
runs the coordination service) is lost, after the runtime's heartbeat timeout (100 s) when
another process is. Here every survivor instead prints ONE line (`error: lost process ...`:
which process, its host, the last complete checkpoint, the command that resumes) and exits with
`errors.EXIT_PEER_LOST` within `mesh.peer_timeout_s` seconds:

- heartbeats: a daemon thread writes a counter into the coordination service's key-value store
  every `interval_s` and reads everyone's; a process whose counter has not moved for
  `timeout_s` is lost. The runtime's own heartbeat timeout is set longer
  (`runtime_heartbeat_s`), so this watchdog speaks first and the runtime stays quiet.
- the runtime's error path: losing the coordinator breaks every survivor's connection to the
  service at once, and the runtime then calls the client's `missed_heartbeat_callback`. In
  jaxlib 0.10.2 a Python callback cannot receive its `absl::Status` argument (the cast throws
  `std::bad_cast`, which ends in `std::terminate`), so a C++ terminate handler (set through
  ctypes) catches that path too. Both find the lost process (the coordinator's port refuses
  connections, or a peer's counter stopped) and report; with no such evidence the terminate
  handler hands over to the previous one (the old abort).
- errors in the main thread: a collective whose peer died fails within a second (Gloo:
  "Connection reset by peer"); `guard` holds such an error until the watchdog has named the
  lost process, so no traceback is printed for it.

The report ends the process with `os._exit`: the main thread may be blocked in a collective
that never returns. A checkpoint save in flight stays an Orbax temporary folder
(`<step>.orbax-checkpoint-tmp-*`), never a step: Orbax finalises a step only after every
process has written its part, and restore lists finalised steps only.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import shlex
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterator, Optional

from sgdc_jax.log import printable
from sgdc_jax.errors import DEBUG_ENV, EXIT_INTERRUPTED, PeerLostError, chain, exit_code
from sgdc_jax.run.checkpoints import last_complete_step

DEFAULT_TIMEOUT_S = 60.0
PREFIX = "sgdc_jax/peers/"
# Text of the errors a collective or the coordination service raises when a peer is gone.
_PEER_ERROR_HINTS = ("gloo", "connection reset", "socket closed", "unavailable", "coordination",
                     "barrier", "deadline_exceeded", "heartbeat")


def runtime_heartbeat_s(timeout_s: float) -> int:
  """The C++ runtime's heartbeat timeout for our `timeout_s`: long enough that the watchdog
  reports first (the runtime's own report is an abort)."""
  return int(max(2 * timeout_s, timeout_s + 30))


def interval_s(timeout_s: float) -> float:
  """Seconds between two heartbeats: 10 per timeout, at most 1 s."""
  return min(1.0, timeout_s / 10)


def command_line(argv: Optional[list[str]] = None) -> str:
  """The command this process was started with (`python -m <module> ...` for `-m`)."""
  argv = sys.argv if argv is None else argv
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  head = ["python", "-m", spec.name] if spec is not None and spec.name else ["python", argv[0]]
  return shlex.join(head + list(argv[1:]))


def _gone(address: str, within_s: float = 3.0) -> bool:
  """Whether `host:port` refuses (or times out) a connection within `within_s`: the
  coordinator's service is gone. Retried: a killed process's listening socket may outlive,
  by a moment, the connections whose loss told us."""
  host, _, port = address.rpartition(":")
  deadline = time.monotonic() + within_s
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
        pass
    except ValueError:
      return False
    except OSError:
      return True
    if time.monotonic() > deadline:
      return False
    time.sleep(0.1)


class Watchdog:
  """Heartbeats through the coordination service's key-value store; reports a lost peer.

  Values under `PREFIX<index>`: `beat <n> <host> <pid>` while running, `done <status> <host>
  <pid>` once the process has finished (its peers stop watching it; a nonzero status makes
  them stop too, after `grace_s`, unless they are failing themselves).

  Args:
    client: a `DistributedRuntimeClient` (key_value_set / key_value_dir_get).
    index, count: this process and the number of processes.
    coordinator: the coordinator's `host:port`.
    timeout_s: seconds without a heartbeat after which a process is lost.
    checkpoint_dir: where the run's checkpoints are ('' = none to name: eval, predict).
    command: the command that resumes the run.
    clock, exit, write: injected by tests (`time.monotonic`, `os._exit`, stderr).
  """

  def __init__(self, client: Any, index: int, count: int, coordinator: str, timeout_s: float,
               *, checkpoint_dir: str = "", command: str = "",
               clock: Callable[[], float] = time.monotonic,
               exit: Callable[[int], Any] = os._exit,  # pylint: disable=redefined-builtin
               write: Optional[Callable[[str], Any]] = None):
    self.client, self.index, self.count = client, index, count
    self.coordinator, self.timeout_s = coordinator, float(timeout_s)
    self.interval_s = interval_s(self.timeout_s)
    self.grace_s = 2 * self.interval_s + 2.0
    self.checkpoint_dir, self.command = checkpoint_dir, command or command_line()
    self._clock, self._exit = clock, exit
    self._write = write or (lambda text: os.write(2, text.encode("utf-8", "backslashreplace")))
    self._me = f"{printable(socket.gethostname())} {os.getpid()}"
    self._beats = 0
    self._started = clock()
    self._last_poll: Optional[float] = None
    self._rpc_failing_since: Optional[float] = None
    self._seen: dict[int, tuple[str, float]] = {}     # index -> (value, when it last changed)
    self._where: dict[int, str] = {}                  # index -> 'host pid'
    self._done: dict[int, tuple[int, float]] = {}     # index -> (status, when first seen)
    self._status: Optional[int] = None                # this process's own, once finished
    self._reporting = threading.Lock()
    self._thread: Optional[threading.Thread] = None

  # ------------------------------------------------------------------ heartbeats

  def start(self) -> "Watchdog":
    """Starts the heartbeat thread (a daemon: it never keeps the process alive)."""
    self.beat()
    self._thread = threading.Thread(target=self._run, name="sgdc-peers", daemon=True)
    self._thread.start()
    return self

  def beat(self) -> None:
    """Publishes this process's next heartbeat (or its final status)."""
    self._beats += 1
    value = (f"beat {self._beats} {self._me}" if self._status is None
             else f"done {self._status} {self._me}")
    self.client.key_value_set(f"{PREFIX}{self.index}", value, allow_overwrite=True)

  def _run(self) -> None:
    while True:
      time.sleep(self.interval_s)
      try:
        self.beat()
      except Exception:  # pylint: disable=broad-except  (the service is gone: poll() decides)
        pass
      lost = self.poll()
      if lost is not None:
        self.report(*lost)
        return  # (reached only with an injected `exit`)

  def poll(self, now: Optional[float] = None) -> Optional[tuple[Optional[int], str]]:
    """Reads every heartbeat; `(lost index, what happened)` when a peer is lost, else None."""
    now = self._clock() if now is None else now
    if self._last_poll is not None and now - self._last_poll > self.timeout_s / 2:
      # This process itself stood still (suspended, starved): nobody can be judged on it.
      self._seen = {q: (v, now) for q, (v, _) in self._seen.items()}
      self._started = now
    self._last_poll = now
    try:
      entries = self.client.key_value_dir_get(PREFIX)
    except Exception:  # pylint: disable=broad-except  (any RPC error: the service is gone)
      if self._rpc_failing_since is None:
        self._rpc_failing_since = now
      if now - self._rpc_failing_since > self.timeout_s:
        return 0, f"its coordination service has not answered for {self.timeout_s:g} s"
      return None
    self._rpc_failing_since = None
    for key, value in entries:
      try:
        q = int(key.rsplit("/", 1)[-1])
      except ValueError:
        continue
      kind, status, where = (value.split(" ", 2) + ["", ""])[:3]
      self._where[q] = where
      if kind == "done":
        self._done.setdefault(q, (int(status) if status.lstrip("-").isdigit() else 1, now))
      elif self._seen.get(q, ("",))[0] != value:
        self._seen[q] = (value, now)
    for q in range(self.count):
      if q == self.index:
        continue
      if q in self._done:
        status, since = self._done[q]
        if status != 0 and self._status is None and now - since > self.grace_s:
          return q, f"it stopped with exit status {status} (its own output says why)"
        continue
      last = self._seen.get(q, (None, self._started))[1]
      if now - last > self.timeout_s:
        return q, f"no heartbeat for {self.timeout_s:g} s"
    return None

  # ------------------------------------------------------------------ reporting

  def describe(self, q: Optional[int]) -> str:
    """'process 1 of 2 (host h, pid 12)'; the coordinator's address for process 0."""
    if q is None:
      return f"a process of {self.count}"
    parts = [f"the coordinator at {self.coordinator}"] if q == 0 and self.coordinator else []
    host, _, pid = self._where.get(q, "").partition(" ")
    if host:
      parts.append(f"host {host}, pid {pid}")
    return f"process {q} of {self.count}" + (f" ({'; '.join(parts)})" if parts else "")

  def message(self, q: Optional[int], what: str) -> str:
    """The one line: which process was lost and how, what is kept, how to resume."""
    head = f"lost {self.describe(q)}: {what}; process {self.index} stopped."
    if self.checkpoint_dir:
      where = printable(self.checkpoint_dir)
      try:
        step = last_complete_step(self.checkpoint_dir)
      except Exception:  # pylint: disable=broad-except  (unreadable: say so, still report)
        step = -1
      kept = (f" The last complete checkpoint is step {step} in {where} (a save in flight is "
              f"not used)." if step is not None and step >= 0 else
              f" No complete checkpoint in {where}." if step is None else
              f" The checkpoints in {where} could not be listed.")
      todo = "resume"
    else:
      kept, todo = "", "run again"
    return (f"{head}{kept} To {todo}, start the same command on every process: "
            f"{printable(self.command)}")

  def report(self, q: Optional[int], what: str) -> None:
    """Prints the line and ends the process (`os._exit`: the main thread may be stuck in a
    collective; never returns but with an injected `exit`). A process that had finished its
    work ends quietly with its own status."""
    if not self._reporting.acquire(blocking=False):
      while True:  # another thread is reporting and about to end the process
        time.sleep(60)
    code = self._status
    try:
      for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
          stream.flush()
      if code is None:
        error = PeerLostError(self.message(q, what))
        code = exit_code(error)
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
          faulthandler.dump_traceback(all_threads=True)
        self._write(f"error: {error}\n")
    finally:
      self._exit(1 if code is None else code)

  def runtime_error(self, detail: str = "") -> bool:
    """The C++ runtime reported a fatal distributed error: reports the lost process when one
    is evident (the coordinator refuses connections, a peer's heartbeat stopped) or `detail`
    says what happened; False (nothing done) otherwise."""
    lost = None
    if self._status is not None:
      lost = None, ""
    elif self.index != 0 and self.coordinator and _gone(self.coordinator):
      lost = 0, "its coordination service closed"
    else:
      now = self._clock()
      running = [q for q in range(self.count) if q != self.index and q not in self._done]
      last = {q: self._seen.get(q, (None, self._started))[1] for q in running}
      stalest = min(running, key=last.get) if running else None
      if stalest is not None and now - last[stalest] > 2 * self.interval_s:
        lost = stalest, "the JAX distributed runtime found it gone"
      elif detail:
        lost = None, f"the JAX distributed runtime reported: {' '.join(detail.split())}"
    if lost is None:
      return False
    self.report(*lost)
    return True

  # ------------------------------------------------------------------ the main thread

  def wait_for_report(self) -> None:
    """Blocks while the watchdog may still find a lost peer (it then ends the process);
    returns after one timeout and a few heartbeats if none is found."""
    deadline = time.monotonic() + self.timeout_s + 3 * self.interval_s + 2
    while time.monotonic() < deadline and self._thread is not None and self._thread.is_alive():
      time.sleep(min(0.2, self.interval_s))

  def finish(self, status: int) -> None:
    """This process's work ended with `status`: its peers stop watching it, and a peer lost
    from now on ends it quietly with that status."""
    self._status = int(status)
    with contextlib.suppress(Exception):
      self.beat()


def caused_by_peer(error: BaseException) -> bool:
  """Whether `error` (or an error it came from) looks like a collective or the coordination
  service failing because a peer is gone."""
  return any(type(e).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
             or any(hint in str(e).lower() for hint in _PEER_ERROR_HINTS) for e in chain(error))


def _status_of(error: BaseException) -> int:
  if isinstance(error, SystemExit):
    return error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
  if isinstance(error, KeyboardInterrupt):
    return EXIT_INTERRUPTED
  code = exit_code(error)
  return 1 if code is None else code


@contextlib.contextmanager
def guard(watchdog: Optional[Watchdog]) -> Iterator[None]:
  """Runs a command's body: an error caused by a lost peer waits for the watchdog's report
  (one line) instead of becoming a traceback; at the end, peers learn this process is done."""
  if watchdog is None:
    yield
    return
  try:
    yield
  except BaseException as e:
    if isinstance(e, Exception) and caused_by_peer(e):
      watchdog.wait_for_report()
    watchdog.finish(_status_of(e))
    raise
  watchdog.finish(0)


# ---------------------------------------------------------------------- hooking the runtime

_HOOKS: dict[str, Any] = {}


def _install_terminate_handler(handler: Callable[[], bool]) -> bool:
  """Sets a C++ terminate handler that calls `handler` (which ends the process when it
  reports) and otherwise hands over to the previous handler. False where the C++ runtime
  cannot be reached."""
  for name in ("libstdc++.so.6", "libc++.so.1", "libc++abi.dylib"):
    try:
      set_terminate = getattr(ctypes.CDLL(name), "_ZSt13set_terminatePFvvE")
      break
    except (OSError, AttributeError):
      continue
  else:
    return False
  set_terminate.restype = ctypes.c_void_p
  set_terminate.argtypes = [ctypes.c_void_p]
  callback_type = ctypes.CFUNCTYPE(None)

  def on_terminate():
    with contextlib.suppress(Exception):
      handler()
    previous = _HOOKS.get("previous")
    if previous:
      callback_type(previous)()
    os.abort()

  _HOOKS["handler"] = callback_type(on_terminate)  # kept alive as long as the process
  _HOOKS["previous"] = set_terminate(ctypes.cast(_HOOKS["handler"], ctypes.c_void_p))
  return True


@contextlib.contextmanager
def _with_error_callback(callback: Callable[..., None]) -> Iterator[None]:
  """`jax.distributed.initialize` creating its client with `missed_heartbeat_callback`."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  module = distributed._jax  # pylint: disable=protected-access
  original = module.get_distributed_runtime_client

  def with_callback(*args, **kwargs):
    kwargs.setdefault("missed_heartbeat_callback", callback)
    return original(*args, **kwargs)

  module.get_distributed_runtime_client = with_callback
  try:
    yield
  finally:
    module.get_distributed_runtime_client = original


def initialize(dist: dict, *, timeout_s: float = DEFAULT_TIMEOUT_S,
               checkpoint_dir: str = "") -> Watchdog:
  """`jax.distributed.initialize(**dist)` with the runtime's heartbeat timeout set above
  `timeout_s` and its error path hooked, then a started `Watchdog`."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  holder: list[Watchdog] = []

  def on_runtime_error(*args) -> bool:  # the callback (jaxlib versions that can call it)
    return bool(holder) and holder[0].runtime_error(" ".join(str(a) for a in args))

  _install_terminate_handler(lambda: bool(holder) and holder[0].runtime_error())
  with _with_error_callback(on_runtime_error):
    jax.distributed.initialize(**dist, heartbeat_timeout_seconds=runtime_heartbeat_s(timeout_s))
  state = distributed.global_state  # (not jax.process_index(): that would start the backend)
  holder.append(Watchdog(state.client, state.process_id, state.num_processes,
                         state.coordinator_address or "", timeout_s,
                         checkpoint_dir=checkpoint_dir))
  return holder[0].start()
