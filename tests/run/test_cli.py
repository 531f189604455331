"""User errors at the entry points end with one `error: ...` line and a documented exit status."""
import fcntl
import os
import re
import subprocess
import sys

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from sgdc_jax import metrics as metrics_lib
from sgdc_jax import cli
from sgdc_jax.run import config as config_lib, outputs, train
from sgdc_jax.run import checkpoint_recovery, workdir as workdir_lib
from sgdc_jax.models import resnet_convert

from test_resnet_convert import _fake_net_variables, torchvision_state_dict
from test_train import REPO, run_script  # pylint: disable=wrong-import-order


def _parse(argv, capsys, monkeypatch, debug=False):
  """Runs `cli.parse_flags` on a fresh flag set; returns (exit code, stderr)."""
  fresh = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config", flag_values=fresh, lock_config=True)
  monkeypatch.setattr(flags, "FLAGS", fresh)
  monkeypatch.setattr(sys, "argv", ["prog"] + argv)  # config_flags reads overrides from it
  if debug:
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
  else:
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
  with pytest.raises(SystemExit) as e:
    cli.parse_flags(["prog"] + argv)
  return e.value.code, capsys.readouterr().err


def test_config_flag_errors_are_one_message(tmp_path, capsys, monkeypatch):
  demo = os.path.join(REPO, "configs", "demo.py")
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config(:\n  pass\n")
  cases = {
      "--config.model.encodr": ([f"--config={demo}", "--config.model.encodr=resnet18"],
                                '--config.model.encodr: no such field (did you mean "encoder"?)'),
      "unknown section": ([f"--config={demo}", "--config.modle.encoder=resnet18"],
                          "--config.modle.encoder: no such field"),
      "missing file": ([f"--config={tmp_path / 'nope.py'}"], "cannot load the config file"),
      "syntax error": ([f"--config={broken}"], f"config file {broken}:1: syntax error"),
      "bad value": ([f"--config={demo}", "--config.train.num_steps=abc"], "num_steps"),
  }
  for name, (argv, expected) in cases.items():
    code, err = _parse(argv, capsys, monkeypatch)
    assert code == cli.EXIT_USER_ERROR, name
    assert err.startswith("error: ") and expected in err, (name, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
  code, err = _parse(cases["--config.model.encodr"][0], capsys, monkeypatch, debug=True)
  assert code == 2 and "Traceback" in err and err.strip().endswith('"encoder"?)')


def test_run_maps_user_errors_to_exit_codes(capsys, monkeypatch):
  monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
  cases = [(config_lib.ConfigError("invalid config:\n  seed: x"), 2),
           (FileNotFoundError("no checkpoints in w/checkpoints: train first"), 2),
           (train.NonFiniteLossError("non-finite loss at step 3"), 3),
           (workdir_lib.WorkdirError("workdir busy"), 4),
           (checkpoint_recovery.NoIntactCheckpointError("no intact checkpoint"), 4)]
  for error, code in cases:
    def body(error=error):
      raise error
    with pytest.raises(SystemExit) as e:
      cli.run(body)
    assert e.value.code == code, error
    err = capsys.readouterr().err
    assert err.startswith(f"error: {str(error).splitlines()[0]}") and "Traceback" not in err
  with pytest.raises(ZeroDivisionError):  # a bug is not a user error: its traceback stays
    cli.run(lambda: 1 / 0)


def _save_pth(sd, path):
  import torch  # the venv has it; weights files are written the way users get them
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, path)


def test_pretrained_file_errors_name_file_and_cause(tmp_path):
  variables = _fake_net_variables(18)
  garbage = tmp_path / "garbage.pth"
  garbage.write_text("this is a text file, not weights\n" * 20)
  with pytest.raises(ValueError) as e:
    resnet_convert.load_pretrained_encoder(variables, str(garbage))
  msg = str(e.value)
  assert str(garbage) in msg and "not a readable weights-only PyTorch state dict" in msg
  assert "weights_only=False" not in msg
  bad_st = tmp_path / "garbage.safetensors"
  bad_st.write_bytes(b"\x00" * 64)
  with pytest.raises(ValueError, match="not a readable safetensors file"):
    resnet_convert.load_pretrained_encoder(variables, str(bad_st))
  # Only the keys matter for the diagnosis: tiny arrays keep the files small.
  keys = {d: list(torchvision_state_dict(d, np.random.default_rng(0))) for d in (34, 50)}
  for depth, name in ((50, "ResNet-50"), (34, "ResNet-34")):
    path = str(tmp_path / f"r{depth}.pth")
    _save_pth({k: np.zeros(1, np.float32) for k in keys[depth]}, path)
    with pytest.raises(ValueError) as e:
      resnet_convert.load_pretrained_encoder(variables, path)
    assert f"{path}: {name} weights for a resnet18 encoder (model.encoder)" in str(e.value)
  other = {f"encoder.blocks.{i}.attn.qkv.weight": np.zeros(1, np.float32) for i in range(150)}
  path = str(tmp_path / "vit.pth")
  _save_pth(other, path)
  with pytest.raises(ValueError) as e:
    resnet_convert.load_pretrained_encoder(variables, path)
  msg = str(e.value)
  assert f"{path}: not a torchvision/timm ResNet state dict" in msg and "150 keys" in msg
  assert msg.count("encoder.blocks.") == 5


def test_state_dict_depth_from_keys():
  for depth in (18, 34, 50, 101):
    sd = dict.fromkeys(torchvision_state_dict(depth, np.random.default_rng(0)))
    assert resnet_convert.state_dict_depth(sd) == depth
  assert resnet_convert.state_dict_depth({"conv1.weight": 0}) is None


def _cli(module, *args, env=None):
  """Runs `python -m module args` (SGDC_DEBUG unset unless `env` sets it)."""
  extra = env or {}
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  env.pop(cli.DEBUG_ENV, None)
  env.update(extra)
  return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_entry_points_print_one_message(tmp_path):
  demo = "--config=configs/demo.py"
  work = f"--workdir={tmp_path / 'work'}"
  cases = [
      (("sgdc_jax.main", demo, work, "--config.model.encodr=resnet18"),
       '--config.model.encodr: no such field (did you mean "encoder"?)'),
      (("sgdc_jax.analysis.ablation", demo, work, "--config.model.encodr=resnet18"),
       '--config.model.encodr: no such field (did you mean "encoder"?)'),
      (("sgdc_jax.main", demo, work, "--mode=eval"), "no checkpoints in"),
      (("sgdc_jax.main", demo, work, f"--config.model.pretrained={tmp_path / 'r50.pth'}"),
       f"model.pretrained: file '{tmp_path / 'r50.pth'}' does not exist"),
  ]
  for args, expected in cases:
    proc = _cli(*args)
    assert proc.returncode == 2, (args, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and expected in proc.stderr, (args, proc.stderr[-3000:])
    # One message (a ConfigError lists its problems on the lines after it).
    assert len(re.findall(r"^error: ", proc.stderr, re.M)) == 1, proc.stderr[-3000:]


@pytest.mark.slow
def test_num_steps_at_checkpoint_says_nothing_to_train(tmp_path):
  work = str(tmp_path / "work")
  result = run_script(f"""
    import contextlib, io
    from sgdc_jax.run import train
    c = tiny_config()
    c.data.num_workers = 0
    c.train.num_steps = 2
    train.train_and_evaluate(c, {work!r})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      r = train.train_and_evaluate(c, {work!r})
    print('RESULT' + json.dumps({{'out': out.getvalue(), 'step': int(r.step)}}))
  """)
  assert "workdir already at step 2 >= train.num_steps=2: nothing to train" in result["out"]
  assert result["step"] == 2


def _holding_training_lock(workdir):
  """Takes `workdir`'s training lock as another training would (released when closed)."""
  os.makedirs(workdir, exist_ok=True)
  f = open(os.path.join(workdir, workdir_lib.LOCK_FILE), "a+", encoding="utf-8")
  fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  return f


# Every entry point, one bad input each; the paths are typed with `~` (HOME is a temporary
# folder), so the message also shows that they reached the code expanded.
ERROR_CASES = {
    "main": (("sgdc_jax.main", "--config=configs/demo.py", "--workdir=~/run", "--mode=eval"),
             cli.EXIT_USER_ERROR, "no checkpoints in {home}/run/checkpoints"),
    "demo": (("sgdc_jax.demo", "--workdir=~/run"), cli.EXIT_WORKDIR,
             "workdir {home}/run is in use by another training"),
    "prepare": (("sgdc_jax.data.prepare", "--dataset=ph2", "--manual_dir=~/nothing",
                 "--data_dir=~/tfds"), cli.EXIT_USER_ERROR, "{home}/nothing"),
    "ablation": (("sgdc_jax.analysis.ablation", "--config=~/nope.py", "--workdir=~/abl"),
                 cli.EXIT_USER_ERROR,
                 "--config: cannot load the config file: [Errno 2] No such file or directory: "
                 "'{home}/nope.py'"),
    "diagnose": (("sgdc_jax.analysis.diagnose", "--workdir=~/nope"), cli.EXIT_USER_ERROR,
                 "--workdir: {home}/nope is not a directory"),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(ERROR_CASES))
def test_every_entry_point_reports_one_error_line(command, tmp_path):
  args, code, expected = ERROR_CASES[command]
  home = tmp_path / "home"
  home.mkdir()
  expected = expected.format(home=home)
  lock = _holding_training_lock(str(home / "run"))  # another training (used by the demo case)
  try:
    quiet = _cli(*args, env={"HOME": str(home)})
    debug = _cli(*args, env={"HOME": str(home), cli.DEBUG_ENV: "1"})
  finally:
    lock.close()
  errors = [line for line in quiet.stderr.splitlines() if line.startswith("error: ")]
  assert quiet.returncode == code, (quiet.returncode, quiet.stderr[-3000:])
  assert len(errors) == 1 and expected in errors[0], quiet.stderr[-3000:]
  assert "Traceback" not in quiet.stderr, quiet.stderr[-3000:]
  assert not os.path.exists(os.path.join(REPO, "~"))  # no folder named '~' was made
  assert debug.returncode == code, debug.stderr[-3000:]
  assert "Traceback" in debug.stderr and expected in debug.stderr, debug.stderr[-3000:]
  # The traceback first, the one-line message last.
  assert debug.stderr.index("Traceback") < debug.stderr.index("error: "), debug.stderr[-3000:]


def test_eval_summary_shows_every_headline_metric_rounded(capsys):
  rows = [dict(dice=0.81234567, iou=0.7, hd95=10.587908482229658, assd=2.25, nsd=0.6,
               boundary_iou=0.5, cldice=0.66, accuracy=0.9, sensitivity=0.8, specificity=0.95,
               precision=0.85),
          dict(dice=0.7, iou=0.6, hd95=4.0, assd=1.0, nsd=0.7, boundary_iou=0.4, cldice=0.5,
               accuracy=0.8,
               sensitivity=0.7, specificity=0.9, precision=0.75)]
  summary = metrics_lib.summarize(rows)
  summary.update(split="test", checkpoint_step=150)
  outputs.print_summary(summary, "/out")
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "test metrics over 2 images (checkpoint step 150):"
  shown = {line.split()[0]: line for line in lines[1:] if line.startswith("  ")}
  assert set(metrics_lib.METRIC_NAMES) <= set(shown)  # NSD and Boundary IoU included
  assert shown["dice"] == "  dice         0.7562 +- 0.0562"
  assert shown["hd95"] == "  hd95         7.29 +- 3.29 px"
  assert shown["boundary_iou"] == "  boundary_iou 0.4500 +- 0.0500"
  assert shown["cldice"] == "  cldice       0.5800 +- 0.0800"
  # The validation log line of the training loop uses the same rounding.
  assert outputs.format_metrics(summary["mean"], train.VAL_LOG_METRICS) == (
      "dice 0.7562, iou 0.6500, hd95 7.29 px, nsd 0.6500, boundary_iou 0.4500, cldice 0.5800")


def test_interrupt_with_a_message_and_debug_zero(capsys, monkeypatch):
  def body():
    raise KeyboardInterrupt
  monkeypatch.setenv(cli.DEBUG_ENV, "0")  # '0' is off, as unset
  with pytest.raises(SystemExit) as e:
    cli.run(body, interrupted="prepare interrupted; the next run cleans up")
  assert e.value.code == cli.EXIT_INTERRUPTED == 130
  assert capsys.readouterr().err == "error: prepare interrupted; the next run cleans up\n"
  with pytest.raises(KeyboardInterrupt):  # without a message: Python's own handling
    cli.run(body)
  monkeypatch.setenv(cli.DEBUG_ENV, "1")
  with pytest.raises(SystemExit):
    cli.run(lambda: (_ for _ in ()).throw(ValueError("bad value")))
  err = capsys.readouterr().err
  assert "Traceback" in err and err.endswith("error: bad value\n")


def test_fail_prints_a_message_with_an_undecodable_file_name(capsys):
  # A file name with a byte that is not UTF-8 reaches Python as a lone surrogate: printing it
  # raw raises UnicodeEncodeError inside the error path itself.
  with pytest.raises(SystemExit) as e:
    cli.fail("cannot read /data/bad\udcfe.png", code=2)
  assert e.value.code == 2
  assert capsys.readouterr().err == "error: cannot read /data/bad\\xfe.png\n"
