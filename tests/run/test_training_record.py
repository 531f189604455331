"""The training config record of a workdir and the check of later configs against it
(sgdc_jax/run/training_record.py)."""

import json
import os

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import pytest

from sgdc_jax.run import config as config_lib
from sgdc_jax.run import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Takes the lock in a fresh interpreter; `hold` keeps it until killed.


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


def test_eval_and_predict_settings_are_not_reported(tmp_path, capsys):
  """Settings of how eval/predict read and write never concern the trained model: predict
  does not report them as differences from the training config."""
  workdir = str(tmp_path)
  workdir_lib.record_training_config(_config(), workdir)
  now = _config(predict__input_dir="/in", predict__output_dir="/out", predict__batch_size=2,
                predict__save_probabilities=True, eval__checkpoint="latest", eval__overlays=0,
                eval__batch_size=4, eval__resolution="native", eval__window=256,
                eval__overlap=0.25, eval__window_batch=2, eval__tta="flips")
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


def test_a_record_from_before_a_later_field_resumes_at_its_old_value(tmp_path):
  """A record written before `model.output_stride` existed was trained at stride 4: resuming
  with 4 is no difference, with 2 it is a blocking one."""
  workdir = str(tmp_path)
  path = workdir_lib.record_training_config(_config(), workdir)
  with open(path, encoding="utf-8") as f:
    record = json.load(f)
  del record["model"]["output_stride"]
  with open(path, "w", encoding="utf-8") as f:
    json.dump(record, f)
  assert workdir_lib.compare_training_config(_config(), workdir).blocking == []
  comparison = workdir_lib.compare_training_config(_config(model__output_stride=2), workdir)
  assert [str(d) for d in comparison.blocking] == [
      "model.output_stride: '(absent)' (workdir) vs 2 (now)"]
