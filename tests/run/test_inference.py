"""`eval.resolution='native'`: the Scorer at the stored resolution with a pointwise stand-in
model (ROI scoring included), and end to end: `--mode=eval` and `--mode=predict` through the one
per-image path (`inference.ImagePredictor`), on two simulated devices."""

import csv
import json
import os

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import numpy as np
import pytest
from PIL import Image

from sgdc_jax.run import config as config_lib
from sgdc_jax.run import inference
from sgdc_jax.run import sharding as shd

from test_train import run_script  # pylint: disable=wrong-import-order


class PointwiseModel:
  """Foreground where the red channel is above the data set mean (logit = 100 * red)."""

  @staticmethod
  def apply(variables, images, train=False):
    del variables, train
    return {"logits": 100.0 * images[..., :1], "edge_logits": images[..., 1:2]}


class FixedState:
  def eval_variables(self, use_ema=True):
    del use_ema
    return {}


def fake_records():
  """Two 40 x 50 records: the prediction (red square) matches the target inside the ROI, and
  the target has extra foreground outside it; the second record has no ROI."""
  image = np.full((40, 50, 3), 50, np.uint8)
  image[10:30, 10:30, 0] = 200
  mask = np.zeros((40, 50), np.uint8)
  mask[10:30, 10:30] = 1
  mask[:, 45:] = 1                                    # outside the ROI: missed by the model
  roi = np.zeros((40, 50, 1), np.uint8)
  roi[:, :40] = 255
  return [{"image": image, "mask": mask, "roi": roi, "id": b"with_roi"},
          {"image": image, "mask": mask, "id": b"without_roi"}]


def test_native_scorer_scores_each_record_at_its_size_inside_its_roi(monkeypatch):
  c = config_lib.get_config()
  c.eval.resolution, c.eval.window, c.eval.overlap = "native", 32, 0.5   # 64 x 64: 3 x 3 windows
  records = fake_records()
  monkeypatch.setattr(inference.pipeline, "open_source", lambda data, split: records)
  scorer = inference.Scorer(c, PointwiseModel(), shd.make_mesh(-1))
  seen = []
  rows, summary = scorer.score(FixedState(), "test", visit=seen.append)
  assert [r["index"] for r in rows] == [0, 1] and summary["n_images"] == 2
  assert [(r["height"], r["width"]) for r in rows] == [(40, 50), (40, 50)]
  expected = np.zeros((40, 50), np.uint8)
  expected[10:30, 10:30] = 1
  for item in seen:
    np.testing.assert_array_equal(item.pred, expected)     # pointwise: windows change nothing
    assert item.edge.shape == (40, 50) and item.image.dtype == np.uint8
  assert rows[0]["dice"] == 1.0 and seen[0].metrics["region"] == "roi"
  assert rows[1]["dice"] == pytest.approx(0.8) and seen[1].metrics["region"] == "image"
  assert summary["resolution"] == "native"
  assert summary["region"] == "mixed" and summary["n_roi"] == 1
  assert summary["mean"]["dice"] == pytest.approx(0.9)


@pytest.mark.slow
def test_native_eval_and_predict_score_every_record_at_its_size(tmp_path):
  work, src, out = str(tmp_path / "work"), tmp_path / "in", str(tmp_path / "out")
  src.mkdir()
  sizes = {"a.png": (50, 70), "b.png": (33, 45)}
  for name, (h, w) in sizes.items():
    Image.fromarray(np.random.default_rng(h).integers(0, 255, (h, w, 3), np.uint8)).save(
        src / name)
  result = run_script(f"""
    from sgdc_jax.run import evaluate, inference, predict
    c = tiny_config()
    untrained_workdir(c, {work!r})
    c.eval.checkpoint = 'latest'
    c.eval.resolution = 'native'
    c.eval.window = 32; c.eval.overlap = 0.5; c.eval.tta = 'flips'
    c.eval.window_batch = 3          # rounded up to 4 for the 2 devices
    calls = []
    forward = inference.ImagePredictor._forward
    def spy(self, variables, images, keys):
      calls.append(images.shape)
      return forward(self, variables, images, keys)
    inference.ImagePredictor._forward = spy
    summary = evaluate.evaluate_checkpoint(c, {work!r})
    eval_calls = sorted(set(calls))
    c.predict.input_dir = {str(src)!r}; c.predict.output_dir = {out!r}
    report = predict.predict_folder(c, {work!r})
    print('RESULT' + json.dumps({{'n': summary['n_images'], 'dir': summary['output_dir'],
        'resolution': summary['resolution'], 'eval_calls': eval_calls,
        'written': sorted(os.path.basename(p) for p in report.written)}}))
  """, devices=2)
  assert result["n"] == 5 and result["resolution"] == "native"
  # 48 x 64 records: padded to 64 x 64, 3 x 3 windows of 32 x 4 flips, batches of 4.
  assert result["eval_calls"] == [[4, 32, 32, 3]]
  with open(os.path.join(result["dir"], "per_image.csv"), encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert sorted(int(r["index"]) for r in rows) == [0, 1, 2, 3, 4]
  assert {(int(r["height"]), int(r["width"])) for r in rows} == {(48, 64)}
  assert json.load(open(os.path.join(result["dir"], "metrics.json")))["resolution"] == "native"
  assert result["written"] == ["a.png", "b.png"]
  for name, size in sizes.items():
    mask = np.asarray(Image.open(os.path.join(out, name)))
    assert mask.shape == size and set(np.unique(mask)) <= {0, 255}
