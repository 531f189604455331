"""Config files and validation: every config loads; bad configs stop with one clear message."""

import importlib.util
import json
import os
import subprocess
import sys

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import jax
import ml_collections
import pytest

from sgdc_jax.run import config as cv
from sgdc_jax.run import experiment

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = ("default", "isic", "isic2016", "ph2", "conic", "demo", "drive")


def load(name, *variant):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", os.path.join(REPO, "configs",
                                                                           f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert "python -m sgdc_jax" in module.__doc__   # the docstring holds the command
  return module.get_config(*variant)


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_share_default_fields(name):
  base, cfg = load("default"), load(name)
  flat = lambda c: set(cv.flatten(c))
  assert flat(cfg) == flat(base)


@pytest.mark.parametrize("name", ["default", "demo"])
def test_synthetic_configs_validate(name):
  cv.validate_config(load(name), device_count=1, process_count=1)


@pytest.mark.parametrize("variant", ["", "cpu"])
def test_drive_config_trains_patches_and_scores_native(variant):
  cfg = load("drive", variant)
  assert set(cv.flatten(cfg)) == set(cv.flatten(load("default")))
  assert cfg.data.train_mode == "patch" and cfg.eval.resolution == "native"
  assert cfg.model.output_stride == 1
  # A whole 565x584 DRIVE image (padded to 576x608) is one window.
  assert cfg.eval.window >= 608 and cfg.eval.window % 32 == 0
  # Another folder data set, by name only: the rest of the config still validates.
  cfg.data.name = "synthetic_lesions"
  cv.validate_config(cfg, device_count=1, process_count=1)
  with pytest.raises(ValueError, match="unknown variant 'gpu'"):
    load("drive", "gpu")


def _message(cfg, **kw):
  kw.setdefault("device_count", 1)
  kw.setdefault("process_count", 1)
  with pytest.raises(cv.ConfigError) as e:
    cv.validate_config(cfg, **kw)
  return str(e.value)


def test_unknown_and_wrong_type_fields_are_named():
  d = load("demo").to_dict()
  d["train"]["batch_sise"] = 8
  d["optimizer"]["learning_rate"] = "fast"
  msg = _message(ml_collections.ConfigDict(d))
  assert "train.batch_sise: unknown field" in msg
  assert "optimizer.learning_rate: expected a number > 0, got 'fast'" in msg
  assert "train.batch_size: missing field" not in msg


def test_batch_not_divisible_by_devices():
  cfg = load("demo")
  cfg.train.batch_size = 6
  msg = _message(cfg, device_count=4)
  assert "train.batch_size: 6 is not divisible by the 4 devices" in msg
  cfg.train.batch_size = 8
  cfg.eval.batch_size = 12
  msg = _message(cfg, device_count=8)
  assert "eval.batch_size: 12 is not divisible by the 8 devices" in msg
  assert "train.batch_size" not in msg


def test_impossible_values_listed_together(tmp_path):
  cfg = load("demo")
  cfg.data.data_dir = str(tmp_path / "no_such_dir")
  cfg.data.image_size = 100
  cfg.optimizer.warmup_steps = 10_000
  cfg.model.encoder = "resnet7"
  msg = _message(cfg)
  assert "data.data_dir" in msg and "does not exist" in msg
  assert "data.image_size: 100 must be a multiple of 32" in msg
  assert "optimizer.warmup_steps" in msg
  assert "encoder" in msg and "resnet7" in msg


def test_unprepared_dataset_is_reported(tmp_path):
  cfg = load("isic")
  cfg.data.data_dir = str(tmp_path)
  msg = _message(cfg)
  assert "data.train_split" in msg and "not prepared" in msg


def test_predict_needs_existing_input_dir(tmp_path):
  cfg = load("demo")
  msg = _message(cfg, mode="predict")
  assert "predict.input_dir: required" in msg and "predict.output_dir: required" in msg
  cfg.predict.input_dir = str(tmp_path / "missing")
  cfg.predict.output_dir = str(tmp_path / "out")
  assert "does not exist" in _message(cfg, mode="predict")


def test_config_files_overlay_the_package_base():
  # No file-path loading: every config file imports sgdc_jax.run.config; the demo is the package's.
  for name in CONFIGS:
    with open(os.path.join(REPO, "configs", f"{name}.py")) as f:
      text = f.read()
    assert ("from sgdc_jax.run import config as base" in text
            and "spec_from_file_location" not in text)
  assert load("demo").to_dict() == cv.demo_config().to_dict()
  assert load("default").to_dict() == cv.get_config().to_dict()


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_are_locked_and_name_a_typo(name):
  cfg = load(name)
  with pytest.raises(AttributeError, match="batch_sise"):
    cfg.train.batch_sise = 8
  with pytest.raises(AttributeError, match="lerning_rate"):
    cfg.optimizer.lerning_rate = 1.0


def test_write_config_round_trips(tmp_path):
  cfg = load("demo")
  path = cv.write_config(cfg, str(tmp_path))
  assert json.load(open(path)) == json.loads(json.dumps(cfg.to_dict(), default=str))


def _main(*args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "sgdc_jax.main", *args], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_cli_rejects_unknown_field_and_bad_value(tmp_path):
  proc = _main("--config=configs/demo.py", f"--workdir={tmp_path}", "--config.train.nope=1")
  assert proc.returncode != 0 and "nope" in proc.stderr
  proc = _main("--config=configs/demo.py", f"--workdir={tmp_path}",
               "--config.data.data_dir=/no/such/dir", "--config.train.batch_size=0")
  assert proc.returncode == 2, proc.stderr[-2000:]
  err = proc.stderr
  assert "data.data_dir: directory '/no/such/dir' does not exist" in err
  assert "train.batch_size: expected an integer >= 1, got 0" in err
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_compilation_cache_dir_from_config_or_default(tmp_path, monkeypatch):
  before = jax.config.jax_compilation_cache_dir
  try:
    cfg = cv.get_config()
    cfg.compilation_cache_dir = str(tmp_path / "cache")
    assert experiment.enable_compilation_cache(cfg) == str(tmp_path / "cache")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
    cfg.compilation_cache_dir = ""
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    assert experiment.enable_compilation_cache(cfg) == str(tmp_path / "env")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert experiment.enable_compilation_cache(cfg) == str(tmp_path / "xdg" / "sgdc_jax" / "jax")
  finally:
    jax.config.update("jax_compilation_cache_dir", before)


def test_pretrained_path_and_data_fields_checked_up_front(tmp_path):
  cfg = load("demo")
  cfg.model.pretrained = str(tmp_path / "r18.pth")
  msg = _message(cfg)
  assert f"model.pretrained: file '{tmp_path / 'r18.pth'}' does not exist" in msg
  (tmp_path / "r18.h5").write_bytes(b"x")
  cfg.model.pretrained = str(tmp_path / "r18.h5")
  assert "model.pretrained" in _message(cfg) and "extension '.h5'" in _message(cfg)
  cv.validate_config(cfg, mode="eval", device_count=1, process_count=1)  # read only in train
  cfg = load("demo")
  cfg.data.num_workers = -2
  assert "data.num_workers: expected -1 (auto" in _message(cfg)


def test_base_data_config_defaults_to_auto_workers():
  d = cv.get_config().data
  assert (d.num_workers, d.read_threads, d.jpeg_draft) == (-1, -1, True)
