"""Fault injection through the CLI: a training killed with SIGKILL during a step, during
validation and during a checkpoint save, rerun each time, resumes from an intact checkpoint and
ends with the same parameters as an uninterrupted run; a damaged latest checkpoint is skipped.

Tiny SGDCNet on tiny synthetic data: 8 steps of batch 2 at 64x64, a checkpoint every 2 steps,
validation (4 images) at steps 4 and 8. The moments are found by watching the run's log and its
checkpoint folder, each wait bounded.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from test_train import CACHE, REPO  # pylint: disable=wrong-import-order

NUM_STEPS = 8
TINY_FLAGS = [
    "--config.model.encoder=resnet18", "--config.model.decoder_channels=16",
    "--config.model.sge_bottleneck=16", "--config.model.sge_mid=16",
    "--config.model.guide_channels=4", "--config.model.num_heads=2", "--config.model.n_blocks=1",
    "--config.data.image_size=64", "--config.data.read_threads=1", "--config.data.num_workers=0",
    "--config.data.prefetch_batches=1", "--config.data.synthetic.train_size=16",
    "--config.data.synthetic.validation_size=4", "--config.data.synthetic.test_size=4",
    "--config.data.synthetic.height=48", "--config.data.synthetic.width=64",
    f"--config.train.num_steps={NUM_STEPS}", "--config.train.batch_size=2",
    "--config.train.log_every=1", "--config.train.eval_every=4",
    "--config.train.checkpoint_every=2", "--config.eval.batch_size=2",
    "--config.eval.overlays=0", "--config.optimizer.warmup_steps=1",
]
WAIT_S = 300     # bound on every wait (a cold XLA cache on a loaded 2-core machine)


class Run:
  """`python -m sgdc_jax.main` on `workdir`, its output collected line by line."""

  def __init__(self, workdir: str):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=CACHE,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", SGDC_NO_BAR="1")
    self.workdir = workdir
    self.lines: list[str] = []
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "sgdc_jax.main", "--config=configs/demo.py",
         f"--workdir={workdir}"] + TINY_FLAGS,
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append(line.rstrip("\n"))

  def log(self) -> str:
    return "\n".join(self.lines)

  def wait_until(self, condition, what: str, interval: float = 0.002) -> None:
    """Polls `condition()` until true; fails naming `what` if the run ends or time runs out."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
      if self.proc.poll() is not None or time.monotonic() > deadline:
        self.proc.kill()
        pytest.fail(f"{what} did not happen (exit {self.proc.poll()}); log tail:\n"
                    + self.log()[-3000:])
      time.sleep(interval)

  def saw(self, pattern: str) -> bool:
    return any(re.search(pattern, line) for line in list(self.lines))

  def kill(self) -> None:
    os.kill(self.proc.pid, signal.SIGKILL)
    self.proc.wait(timeout=60)
    self._reader.join(timeout=60)

  def finish(self) -> str:
    self.proc.wait(timeout=WAIT_S * 2)
    self._reader.join(timeout=60)
    assert self.proc.returncode == 0, self.log()[-3000:]
    return self.log()


def _committed_steps(workdir: str) -> list[int]:
  ckpt = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(ckpt) if n.isdigit()) if os.path.isdir(ckpt) else []


def _saving(workdir: str) -> bool:
  ckpt = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpt) and any(".orbax-checkpoint-tmp" in n for n in os.listdir(ckpt))


def _final_state(workdir: str) -> dict:
  path = os.path.join(workdir, "checkpoints", str(NUM_STEPS), "state")
  restored = ocp.StandardCheckpointer().restore(path)
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(restored)}


def _assert_same_state(workdir: str, reference: dict) -> None:
  got = _final_state(workdir)
  assert sorted(got) == sorted(reference) and len(got) > 50
  for k, v in reference.items():
    np.testing.assert_allclose(got[k], v, rtol=0, atol=1e-6, err_msg=k)


def _assert_history_once(workdir: str) -> None:
  """history.jsonl holds each training step once (a resume drops the lines after its step)."""
  steps = [int(m.group(1)) for line in open(os.path.join(workdir, "history.jsonl"))
           if '"loss"' in line for m in [re.search(r'"step": (\d+)', line)] if m]
  assert steps == list(range(1, NUM_STEPS + 1))


class Reference:
  """An uninterrupted run, started at once and run beside the killed ones (it is mostly
  single-threaded start-up time); `state()` waits for it."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self._run = Run(workdir)
    self._state = None

  def state(self) -> dict:
    if self._state is None:
      self._run.finish()
      self._state = _final_state(self.workdir)
    return self._state


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  ref = Reference(str(tmp_path_factory.mktemp("straight") / "run"))
  yield ref
  if ref._run.proc.poll() is None:  # pylint: disable=protected-access
    ref._run.kill()  # pylint: disable=protected-access


def _resume(workdir: str) -> Run:
  """Starts a rerun and checks that it resumes from the newest checkpoint on disk."""
  expected = max(_committed_steps(workdir), default=None)
  run = Run(workdir)
  if expected is None:
    return run
  run.wait_until(lambda: run.saw(r"^resumed from step \d+"), "resume")
  assert run.saw(f"^resumed from step {expected} in "), run.log()[-2000:]
  return run


@pytest.mark.slow
def test_sigkill_at_a_step_in_validation_and_in_a_save_resumes_exactly(reference, tmp_path):
  workdir = str(tmp_path / "killed")

  # 1. During a step: step 3 logged (step 4 computing), checkpoint 2 committed.
  run = Run(workdir)
  run.wait_until(lambda: run.saw(r"^step 3/8:") and 2 in _committed_steps(workdir), "step 3")
  run.kill()
  assert _committed_steps(workdir) == [2]

  # 2. During validation: step 4 logged, its validation (run before its save) not finished.
  run = _resume(workdir)
  run.wait_until(lambda: run.saw(r"^step 4/8:"), "step 4")
  time.sleep(0.2)
  run.kill()
  assert not run.saw(r"^step 4: val dice"), "validation finished before the kill"
  assert _committed_steps(workdir) == [2]

  # 3. During a checkpoint save: Orbax's temporary folder exists (not yet committed).
  assert not _saving(workdir)
  run = _resume(workdir)
  run.wait_until(lambda: _saving(workdir), "a checkpoint save")
  run.kill()
  assert _saving(workdir)          # the interrupted save is left uncommitted

  # 4. To the end.
  log = _resume(workdir).finish()
  assert f"step {NUM_STEPS}: val dice" in log
  _assert_same_state(workdir, reference.state())
  _assert_history_once(workdir)
  assert _committed_steps(workdir) == _committed_steps(reference.workdir)


def _truncate_largest_data_file(step_dir: str) -> None:
  files = [os.path.join(root, n) for root, _, names in os.walk(os.path.join(step_dir, "state"))
           for n in names if os.sep + "d" + os.sep in os.path.join(root, n)]
  path = max(files, key=os.path.getsize)
  os.truncate(path, os.path.getsize(path) // 2)


@pytest.mark.slow
def test_damaged_latest_checkpoint_is_skipped_and_kept(reference, tmp_path):
  ref_state = reference.state()
  workdir = str(tmp_path / "damaged")
  shutil.copytree(reference.workdir, workdir)
  steps = _committed_steps(workdir)
  assert steps[-1] == NUM_STEPS and len(steps) >= 2
  _truncate_largest_data_file(os.path.join(workdir, "checkpoints", str(NUM_STEPS)))
  run = Run(workdir)
  log = run.finish()
  assert re.search(rf"warning: checkpoint \S+/checkpoints/{NUM_STEPS} is damaged \(.+\); "
                   rf"trying step {steps[-2]}", log), log[-3000:]
  assert f"resumed from step {steps[-2]} in " in log
  _assert_same_state(workdir, ref_state)
  damaged = os.path.join(workdir, "checkpoints.damaged", str(NUM_STEPS))
  assert os.path.isdir(damaged)       # kept, moved out of the way of the new save
