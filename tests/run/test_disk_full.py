"""A disk that fills during a checkpoint save: one error line (exit 2), the partial save removed
at once, the last complete checkpoint named and resumed from once there is space again.

The end-to-end test trains the tiny SGDCNet of `test_fault_injection` through the CLI with a
checkpoint every step. Where this process may mount (root), the workdir is a 160 MiB tmpfs:
one checkpoint (about 115 MiB) fits, the second does not; the rerun follows a remount with more
space. Elsewhere the second save's array writes fail inside Orbax's write threads with
TensorStore's ENOSPC error (injected), and the rerun goes without the injection.
"""

import errno
import logging
import os
import re
import subprocess
import sys
import types

import pytest

from sgdc_jax.run import checkpoint_space
from test_fault_injection import TINY_FLAGS  # pylint: disable=wrong-import-order
from test_train import CACHE, REPO  # pylint: disable=wrong-import-order

# TensorStore's message for a full disk, as Orbax's write threads raise it.
TS_FULL = ('RESOURCE_EXHAUSTED: Error writing "params.x/0" in OCDBT database at local file '
           '"/w/checkpoints/2.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/": '
           'Failed writing: "/w/.../d/05": Failed to write 55951360 bytes to file 6: No space '
           "left on device [os_error_code='28']")
FLAGS = [f for f in TINY_FLAGS if not f.startswith(("--config.train.num_steps=",
                                                    "--config.train.checkpoint_every=",
                                                    "--config.train.eval_every="))] + [
    "--config.train.num_steps=3", "--config.train.checkpoint_every=1",
    "--config.train.eval_every=0"]
# The second save's array writes fail as TensorStore fails on a full disk (used where no tmpfs
# can be mounted).
INJECT = f"""
import asyncio
from orbax.checkpoint._src.serialization import serialization
_write = serialization.async_serialize_from_host
async def _full(rslices, spec, **kw):
  if '/2.orbax-checkpoint-tmp' in str(spec):
    await asyncio.sleep(0)
    raise ValueError({TS_FULL!r})
  return await _write(rslices, spec, **kw)
serialization.async_serialize_from_host = _full
"""
MAIN = """
from absl import app
from sgdc_jax import cli, main
app.run(main.main, flags_parser=cli.parse_flags)
"""


# ------------------------------------------------------------------------------ the pieces


def test_disk_full_is_recognised_in_tensorstore_text_and_oserror_chains():
  assert checkpoint_space.is_disk_full(ValueError(TS_FULL))
  try:
    try:
      raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as inner:
      raise RuntimeError("commit failed") from inner
  except RuntimeError as outer:
    assert checkpoint_space.is_disk_full(outer)
  assert checkpoint_space.is_disk_full(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
  assert not checkpoint_space.is_disk_full(ValueError("RESOURCE_EXHAUSTED: out of memory"))
  assert not checkpoint_space.is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_remove_partial_removes_only_the_steps_temporary_folders(tmp_path):
  for name in ("1", "2.orbax-checkpoint-tmp", "2.orbax-checkpoint-tmp-1712", "3",
               "3.orbax-checkpoint-tmp", "12.orbax-checkpoint-tmp"):
    os.makedirs(tmp_path / name / "state")
    (tmp_path / name / "state" / "f").write_bytes(b"x" * 10)
  removed = checkpoint_space.remove_partial(str(tmp_path), 2)
  assert sorted(os.path.basename(p) for p in removed) == [
      "2.orbax-checkpoint-tmp", "2.orbax-checkpoint-tmp-1712"]
  assert sorted(os.listdir(tmp_path)) == ["1", "12.orbax-checkpoint-tmp", "3",
                                          "3.orbax-checkpoint-tmp"]
  assert checkpoint_space.tree_bytes(str(tmp_path / "1")) == 10


def test_space_warning_when_the_last_checkpoint_would_not_fit(tmp_path):
  free = checkpoint_space.free_bytes(str(tmp_path))
  warning = checkpoint_space.space_warning(str(tmp_path), 200, 100, free + 2**30)
  assert warning.startswith("warning: ") and "checkpoint 100 took" in warning
  assert "saving checkpoint 200 will probably fail" in warning and str(tmp_path) in warning
  assert checkpoint_space.space_warning(str(tmp_path), 200, 100, 1) is None
  assert checkpoint_space.space_warning(str(tmp_path), 1, None, None) is None


def test_full_disk_noise_is_dropped_and_other_errors_kept():
  checkpoint_space.silence_disk_full_noise()
  logger = logging.getLogger("absl")
  full = logger.makeRecord("absl", logging.ERROR, "f.py", 1, "Save Finalize thread failed.", (),
                           (ValueError, ValueError(TS_FULL), None))
  other = logger.makeRecord("absl", logging.ERROR, "f.py", 1, "something else", (), None)
  assert not logger.filter(full) and logger.filter(other)
  try:
    raise RuntimeError("Event loop is closed")
  except RuntimeError as e:
    late = e
  seen = []
  hook = checkpoint_space._unraisable_hook(seen.append)  # pylint: disable=protected-access
  frame = types.SimpleNamespace(f_code=types.SimpleNamespace(co_name="call_soon_threadsafe"))
  tb = types.SimpleNamespace(tb_frame=frame, tb_next=None)
  hook(types.SimpleNamespace(exc_value=late, exc_traceback=tb))
  hook(types.SimpleNamespace(exc_value=late, exc_traceback=None))  # not from a callback: kept
  assert len(seen) == 1


# ------------------------------------------------------------------------------ end to end


def _can_mount_tmpfs(path: str) -> bool:
  if os.geteuid() != 0:
    return False
  os.makedirs(path, exist_ok=True)
  return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", path],
                        capture_output=True, check=False).returncode == 0


def _run(workdir: str, inject: bool) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", SGDC_NO_BAR="1")
  env.pop("SGDC_DEBUG", None)
  code = (INJECT if inject else "") + MAIN
  return subprocess.run([sys.executable, "-c", code, "--config=configs/demo.py",
                         f"--workdir={workdir}"] + FLAGS, cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow
def test_disk_full_during_a_save_stops_with_one_line_and_resumes(tmp_path):
  mount = str(tmp_path / "fs")
  tmpfs = _can_mount_tmpfs(mount)
  try:
    workdir = os.path.join(mount, "run") if tmpfs else str(tmp_path / "run")
    ckpt = os.path.join(workdir, "checkpoints")
    first = _run(workdir, inject=not tmpfs)
    assert first.returncode == 2, first.stdout[-2000:] + first.stderr[-4000:]
    errors = [l for l in first.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, first.stderr[-4000:]
    assert re.fullmatch(
        rf"error: no space left on device while saving checkpoint 2 to {re.escape(ckpt)} "
        r"\([\d.]+ MB free\); removed the partial save; the last complete checkpoint is step 1; "
        r"free space and rerun the same command to resume", errors[0]), errors[0]
    for noise in ("Traceback", "RESOURCE_EXHAUSTED", "Event loop is closed", "Task exception",
                  "No space left on device"):
      assert noise not in first.stderr, (noise, first.stderr[-4000:])
    assert not re.search(r"^E\d{4} ", first.stderr, re.M), first.stderr[-4000:]
    assert sorted(os.listdir(ckpt)) == ["1"]  # the partial save of step 2 is gone
    if tmpfs:  # the free-space check saw it coming
      assert "saving checkpoint 2 will probably fail" in first.stdout, first.stdout
      subprocess.run(["mount", "-o", "remount,size=400m", mount], check=True)
    second = _run(workdir, inject=False)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
    assert f"resumed from step 1 in {ckpt}" in second.stdout, second.stdout[-2000:]
    assert "3" in os.listdir(ckpt)
  finally:
    if tmpfs:
      subprocess.run(["umount", mount], check=False)
