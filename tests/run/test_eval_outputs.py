"""Evaluation outputs: overlays drawn from a copy reduced to the panel size (a full-size photo
costs what the PNG costs), and `eval.output_dir` for a workdir that cannot be written.

Read-only folders: as root (where `chmod` stops nothing) a read-only bind mount when the
machine allows it; as another user `chmod a-w`; otherwise EROFS injected at the write.
"""

import contextlib
import errno
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sgdc_jax.errors import WorkdirError
from sgdc_jax.run import evaluate, outputs
from test_fault_injection import TINY_FLAGS  # pylint: disable=wrong-import-order
from test_train import CACHE, REPO  # pylint: disable=wrong-import-order

# ------------------------------------------------------------------------------ overlays


def _photo(h: int, w: int):
  """A smooth uint8 photo, a disc target, a prediction with a one-pixel line, an edge map."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  image = np.stack([(xx / w * 255), (yy / h * 255), ((xx + yy) / (h + w) * 255)], -1)
  image = image.astype(np.uint8)
  target = (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (h / 4) ** 2).astype(np.uint8)
  pred = target.copy()
  pred[h // 8, w // 8:w // 2] = 1  # a one-pixel line: must stay visible
  edge = np.zeros((h, w), np.float32)
  edge[h // 3, :] = 1.0
  return image, target, pred, edge


def _png(path) -> np.ndarray:
  return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_overlay_factor_and_reductions():
  assert outputs.overlay_factor(120, 160) == 1  # the demo's images are drawn as they are
  assert outputs.overlay_factor(3000, 4000) == 12
  a = np.zeros((25, 37), np.uint8)
  a[24, 36] = 1  # in the last, partial block
  a[3, 5] = 2
  r = outputs.max_reduce(a, 12)
  assert r.shape == (3, 4) and r[2, 3] == 1 and r[0, 0] == 2 and r.sum() == 3
  img = np.full((25, 37, 3), 7, np.uint8)
  img[:12, :12] = 31
  b = outputs.box_reduce(img, 12)
  assert b.shape == (3, 4, 3) and b.dtype == np.uint8 and b[0, 0, 0] == 31 and b[2, 3, 0] == 7


def test_overlay_of_a_full_size_photo_is_drawn_at_panel_size(tmp_path, monkeypatch):
  image, target, pred, edge = _photo(3000, 4000)
  seen = []
  draw = outputs.draw_overlay

  def recording(path, *arrays_and_title):
    seen.append([(a.shape, a.dtype) for a in arrays_and_title[:4]])
    draw(path, *arrays_and_title)

  monkeypatch.setattr(outputs, "draw_overlay", recording)
  outputs.save_overlay(str(tmp_path / "new.png"), image, target, pred, edge, "big")
  (shapes,) = seen
  assert [s for s, _ in shapes] == [(250, 334, 3), (250, 334), (250, 334), (250, 334)]
  assert shapes[0][1] == np.uint8 and shapes[1][1] == np.uint8  # no float copy of the photo
  small = outputs.downsample_for_overlay(image, target, pred, edge)
  assert small[2][(3000 // 8) // 12].sum() >= (4000 // 2 - 4000 // 8) // 12  # the 1-px line
  assert small[3][1000 // 12].min() == 1.0  # and the thin edge, whole


def test_overlay_equals_the_one_drawn_from_a_downsampled_copy(tmp_path):
  """3600 x 2400 reduces by 10 to exactly 360 x 240: against a copy reduced with numpy (block
  mean for the photo, block maximum for the masks) drawn directly, and close to the old
  full-size drawing."""
  image, target, pred, edge = _photo(2400, 3600)
  outputs.save_overlay(str(tmp_path / "new.png"), image, target, pred, edge, "t")
  blocks = lambda a: a.reshape(240, 10, 360, 10, *a.shape[2:])
  copy = (np.round(blocks(image.astype(np.float64)).mean(axis=(1, 3))).astype(np.uint8),
          blocks(target).max(axis=(1, 3)), blocks(pred).max(axis=(1, 3)),
          blocks(edge).max(axis=(1, 3)))
  outputs.draw_overlay(str(tmp_path / "copy.png"), *copy, "t")
  outputs.draw_overlay(str(tmp_path / "full.png"), image, target, pred, edge, "t")
  new, ref, full = (_png(tmp_path / n) for n in ("new.png", "copy.png", "full.png"))
  assert new.shape == ref.shape == full.shape
  assert np.abs(new - ref).max() <= 2  # PIL's and numpy's rounding of the block means
  assert np.abs(new - full).mean() < 4, np.abs(new - full).mean()


# --------------------------------------------------------------------- read-only workdir


@contextlib.contextmanager
def read_only(path: str):
  """Makes `path` unwritable; yields how ('bind mount', 'chmod' or 'injected EROFS')."""
  if os.geteuid() != 0:
    modes = {}
    for root, dirs, files in os.walk(path):
      for name in [root] + [os.path.join(root, n) for n in dirs + files]:
        modes[name] = os.stat(name).st_mode
        os.chmod(name, modes[name] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
      yield "chmod"
    finally:
      for name, mode in modes.items():
        os.chmod(name, mode)
    return
  bound = subprocess.run(["mount", "--bind", path, path], capture_output=True, check=False)
  if bound.returncode == 0:
    try:
      if subprocess.run(["mount", "-o", "remount,ro,bind", path], capture_output=True,
                        check=False).returncode == 0:
        yield "bind mount"
        return
    finally:
      subprocess.run(["umount", path], check=False)
  real = os.makedirs

  def erofs(name, *args, **kwargs):
    if os.path.abspath(name).startswith(os.path.abspath(path) + os.sep):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), name)
    return real(name, *args, **kwargs)

  os.makedirs = erofs
  try:
    yield "injected EROFS"
  finally:
    os.makedirs = real


def test_check_writable_names_the_read_only_workdir_and_the_flag(tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(os.path.join(workdir, "checkpoints"))
  out = outputs.eval_dir(workdir, "d", "test", 3)
  with read_only(workdir):
    with pytest.raises(WorkdirError) as e:
      evaluate.check_writable(out, workdir, "")
    assert f"workdir {workdir} " in str(e.value) and "--config.eval.output_dir=DIR" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="eval.output_dir .* cannot write"):
      evaluate.check_writable(os.path.join(workdir, "x", "d"), workdir, workdir)
  evaluate.check_writable(out, workdir, "")  # writable again: the folder is made, left empty
  assert os.listdir(out) == []


# In a subprocess: EROFS for every folder made under the workdir (where no mount is allowed).
INJECT_EROFS = """
import errno, os, sys
_makedirs, _ro = os.makedirs, os.path.abspath(os.environ['SGDC_TEST_READ_ONLY']) + os.sep
def _erofs(name, *a, **k):
  if os.path.abspath(name).startswith(_ro):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), name)
  return _makedirs(name, *a, **k)
os.makedirs = _erofs
from absl import app
from sgdc_jax import cli, main
app.run(main.main, flags_parser=cli.parse_flags)
"""


def _main(*args: str, inject_erofs: str = "") -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", SGDC_NO_BAR="1")
  env.pop("SGDC_DEBUG", None)
  command = [sys.executable, "-m", "sgdc_jax.main"]
  if inject_erofs:
    env["SGDC_TEST_READ_ONLY"] = inject_erofs
    command = [sys.executable, "-c", INJECT_EROFS]
  flags = [f for f in TINY_FLAGS if not f.startswith(("--config.train.num_steps=",
                                                     "--config.train.eval_every=",
                                                     "--config.eval.overlays="))]
  flags += ["--config.train.num_steps=2", "--config.train.eval_every=0",
            "--config.eval.overlays=2"]
  return subprocess.run(command + ["--config=configs/demo.py"] + flags + list(args), cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=900, check=False)


def _listing(path: str) -> list[tuple[str, int]]:
  return sorted((os.path.relpath(os.path.join(r, n), path), os.stat(os.path.join(r, n)).st_mtime_ns)
                for r, _, files in os.walk(path) for n in files)


@pytest.mark.slow
def test_eval_of_a_read_only_workdir(tmp_path):
  workdir, out = str(tmp_path / "run"), str(tmp_path / "elsewhere")
  trained = _main(f"--workdir={workdir}")
  assert trained.returncode == 0, trained.stderr[-3000:]
  before = _listing(workdir)
  with read_only(workdir) as how:
    inject = workdir if how == "injected EROFS" else ""  # a patch here is not seen there
    refused = _main(f"--workdir={workdir}", "--mode=eval", inject_erofs=inject)
    done = _main(f"--workdir={workdir}", "--mode=eval", f"--config.eval.output_dir={out}",
                 inject_erofs=inject)
  assert refused.returncode == 4, refused.stderr[-3000:]
  errors = [l for l in refused.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
  assert errors[0].startswith(f"error: workdir {workdir} ") and (
      "--config.eval.output_dir=DIR" in errors[0]), errors[0]
  assert done.returncode == 0, done.stderr[-3000:]
  step_dir = os.path.join(out, "synthetic_lesions", "test", "step_2")
  assert sorted(os.listdir(step_dir)) == ["config.json", "metrics.json", "overlays",
                                          "per_image.csv"]
  assert len(os.listdir(os.path.join(step_dir, "overlays"))) == 2
  assert f"outputs: {step_dir}/metrics.json" in done.stdout, done.stdout[-2000:]
  assert _listing(workdir) == before  # nothing written in the workdir (no lock file either)
