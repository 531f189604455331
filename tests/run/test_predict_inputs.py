"""Predict on hostile inputs: names that are not UTF-8, undecodable and oversized files, EXIF
orientation, animated GIFs, large images; one file never stops the run, each is reported."""

import json
import os
import subprocess
import sys
import textwrap

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import numpy as np
from PIL import Image

from sgdc_jax import log

from test_train import CACHE, REPO, TINY  # pylint: disable=wrong-import-order

BAD = os.fsdecode(b"bad\xfe.png")          # a valid image under a non-UTF-8 name
BROKEN = os.fsdecode(b"broken\xff.png")    # an undecodable file under a non-UTF-8 name


def test_log_survives_undecodable_text(capsys):
  """pytest's stdout, like a UTF-8 terminal, refuses lone surrogates: log() escapes them."""
  log.log("predict: cannot read " + BAD + "; skipped")
  log.log("caf\u00e9 \ud800")
  assert capsys.readouterr().out == (
      "predict: cannot read bad\\xfe.png; skipped\ncaf\u00e9 \\ud800\n")


def _inputs(src):
  """The folder a user met: good images, hostile names and files, unusual images.

  Returns `{output mask file name (bytes): (H, W) the mask must have}`."""
  src.mkdir()
  rng = np.random.default_rng(0)

  def save(name, h, w, **kwargs):
    Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(
        os.path.join(src, name), **kwargs)

  save("a.png", 30, 40)
  save("b.png", 20, 26)
  save(BAD, 18, 22, format="PNG")
  exif = Image.Exif()
  exif[0x0112] = 6                        # stored 40 x 24 (W x H), shown 24 x 40
  save("photo.jpg", 24, 40, exif=exif)
  frames = [Image.fromarray(np.full((16, 20, 3), v, np.uint8)) for v in (40, 220)]
  frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
  save("big.png", 50, 50)                 # 2500 px: above the lowered limit of 2000
  save("absurd.png", 70, 70)              # 4900 px: above twice that, refused
  (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
  with open(os.path.join(src, BROKEN), "wb") as f:
    f.write(b"not an image either")
  return {b"a.png": (30, 40), b"b.png": (20, 26), b"bad\xfe.png": (18, 22),
          b"photo.png": (40, 24), b"anim.png": (16, 20), b"big.png": (50, 50)}


def test_predict_goes_on_past_bad_files_and_reports_each_decision(tmp_path):
  expected = _inputs(tmp_path / "in")
  work, out = str(tmp_path / "work"), str(tmp_path / "out")
  script = "import sgdc_jax\n" + TINY + textwrap.dedent(f"""
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = 2000   # PIL's large-image limit, lowered so the test stays cheap
    from sgdc_jax.run import predict
    c = tiny_config()
    untrained_workdir(c, {work!r})
    c.eval.checkpoint = 'latest'
    c.predict.input_dir = {str(tmp_path / 'in')!r}
    c.predict.output_dir = {out!r}
    c.predict.batch_size = 2
    r = predict.predict_folder(c, {work!r})
    print('RESULT' + json.dumps({{
        'written': sorted(os.path.basename(p) for p in r.written),
        'unreadable': sorted(os.path.basename(p) for p, _ in r.unreadable),
        'notes': {{k: sorted(os.path.basename(p) for p in v) for k, v in r.notes.items()}}}}))
  """)
  # PYTHONIOENCODING=utf-8: strict UTF-8 output, as in an en_US.UTF-8 locale (C.UTF-8 would
  # let lone surrogates through).
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             PYTHONPATH=REPO, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", SGDC_NO_BAR="1",
             PYTHONIOENCODING="utf-8")
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                        text=True, timeout=600, cwd=REPO)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  assert "DecompressionBombWarning" not in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  result = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1][6:])
  # Masks for every readable image, the non-UTF-8 name's under the same bytes.
  assert sorted(os.fsencode(n) for n in result["written"]) == sorted(expected)
  assert sorted(n for n in os.listdir(os.fsencode(out)) if n.endswith(b".png")) == sorted(
      expected)
  for name, size in expected.items():
    assert np.asarray(Image.open(os.path.join(os.fsencode(out), name))).shape == size, name
  assert result["unreadable"] == sorted(["absurd.png", "broken.png", BROKEN])
  assert result["notes"] == {
      "name not valid UTF-8 (shown escaped): mask written under the same bytes": [BAD],
      "EXIF orientation 6 applied": ["photo.jpg"],
      "first of 2 frames used": ["anim.gif"],
      "large: above 0.002 Mpx, read (limit 0.004 Mpx)": ["big.png"]}
  lines = proc.stdout
  assert "cannot read " in lines and "broken\\xff.png: cannot decode image file " in lines, lines
  assert "absurd.png is too large to read (0.0049 Mpx; the limit is 0.004 Mpx" in lines, lines
  for line in ("predict: 1 image(s): EXIF orientation 6 applied: photo.jpg",
               "predict: 1 image(s): first of 2 frames used: anim.gif",
               "predict: 1 image(s): large: above 0.002 Mpx, read (limit 0.004 Mpx): big.png",
               "predict: 1 image(s): name not valid UTF-8 (shown escaped): mask written under "
               "the same bytes: bad\\xfe.png"):
    assert line + "\n" in lines, (line, lines)
  assert "predict: wrote 6 masks for 6 readable image(s) to " in lines, lines
  assert "; 3 unreadable image(s) skipped" in lines, lines


def test_a_mask_name_the_file_system_refuses_leaves_no_half_written_output(tmp_path):
  """A 251-byte stem fits `<stem>.png` but not `<stem>_prob.png` (255-byte names): the error is
  one of the name's (predict skips that input, counted) and no lone mask is left."""
  import errno  # pylint: disable=import-outside-toplevel
  from sgdc_jax.run import predict  # pylint: disable=import-outside-toplevel
  probs = np.full((4, 5), 0.7, np.float32)
  try:
    predict._write(str(tmp_path), "x" * 251, probs, 1, True)  # pylint: disable=protected-access
  except OSError as e:
    assert e.errno in predict._NAME_ERRNOS  # pylint: disable=protected-access
    assert e.errno == errno.ENAMETOOLONG
  else:
    raise AssertionError("the file system took a 260-byte name")
  assert os.listdir(tmp_path) == []
