"""Inference at the stored resolution (`run.windows`): padding, window starts, blending, flip TTA,
the window batch bound; `eval.*` config rules; the ROI of a record."""

import numpy as np
import pytest
from scipy import ndimage

from sgdc_jax.errors import ConfigError
from sgdc_jax.run import config as config_lib
from sgdc_jax.run import inference
from sgdc_jax.run import windows


class Recorder:
  """A predict fn `(variables, (B, h, w, 3)) -> dict` that records every batch shape.

  `per_pixel(images (B, h, w, 3)) -> (B, h, w[, C])` computes the probabilities; the edge is
  the first channel's sigmoid when `edge` is set.
  """

  def __init__(self, per_pixel, edge=True):
    self.per_pixel, self.edge, self.shapes = per_pixel, edge, []

  def __call__(self, variables, images):
    assert variables == "vars"
    self.shapes.append(images.shape)
    out = {"probs": self.per_pixel(images)}
    if self.edge:
      out["edge"] = 1 / (1 + np.exp(-images[..., 0]))
    return out


def sigmoid_sum(images):
  return (1 / (1 + np.exp(-images.sum(-1)))).astype(np.float32)


def softmax3(images):
  e = np.exp(images - images.max(-1, keepdims=True))
  return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def image_of(h, w, seed=0):
  return np.random.default_rng(seed).normal(size=(h, w, 3)).astype(np.float32)


def run(fn, image, **kw):
  args = dict(window=64, overlap=0.5, window_batch=4, tta="none")
  args.update(kw)
  return windows.predict_image(fn, "vars", image, **args)


def test_sliding_windows_equal_whole_image_for_a_pointwise_model():
  image = image_of(150, 201)
  whole_fn, slide_fn = Recorder(sigmoid_sum), Recorder(sigmoid_sum)
  whole = run(whole_fn, image, window=224)
  slide = run(slide_fn, image, window=64, overlap=0.5)
  assert whole_fn.shapes == [(1, 160, 224, 3)]          # one forward of the padded image
  assert len(slide_fn.shapes) > 1 and slide_fn.shapes[0][1:3] == (64, 64)
  np.testing.assert_array_equal(slide[0], whole[0])
  np.testing.assert_array_equal(slide[1], whole[1])
  np.testing.assert_array_equal(whole[0], sigmoid_sum(image[None])[0])  # and the crop is right


@pytest.mark.parametrize("size", [(1, 1), (17, 45), (64, 64), (33, 200), (130, 70), (97, 97)])
@pytest.mark.parametrize("classes", [1, 3])
def test_predictions_have_the_input_size(size, classes):
  per_pixel = sigmoid_sum if classes == 1 else softmax3
  probs, edge = run(Recorder(per_pixel), image_of(*size), window=64, overlap=0.25)
  assert probs.shape == size + (() if classes == 1 else (3,)) and probs.dtype == np.float32
  assert edge.shape == size
  np.testing.assert_allclose(probs, per_pixel(image_of(*size)[None])[0], rtol=1e-6)
  if classes > 1:
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_windows_are_multiples_of_32_and_shorter_sides_are_not_slid():
  fn = Recorder(sigmoid_sum)
  run(fn, image_of(40, 300), window=128, overlap=0.5)
  assert {s[1:3] for s in fn.shapes} == {(64, 128)}     # 40 -> 64 rows, one row of windows


def test_constant_model_gives_a_constant_map():
  fn = Recorder(lambda x: np.full(x.shape[:3], 0.3, np.float32), edge=False)
  probs, edge = run(fn, image_of(150, 190), window=64, overlap=0.6)
  assert edge is None
  np.testing.assert_array_equal(probs, np.float32(0.3))


def box_blur(images):
  """Flip-equivariant, not pointwise: 5x5 mean of the channel sum, zero outside the window."""
  s = images.sum(-1)
  return np.stack([ndimage.uniform_filter(x, 5, mode="constant") for x in s]).astype(np.float32)


def test_flip_tta_of_a_flip_equivariant_model_equals_no_tta():
  image = image_of(100, 130)
  fn_none, fn_flips = Recorder(box_blur), Recorder(box_blur)
  none = run(fn_none, image, window=64, tta="none")
  flips = run(fn_flips, image, window=64, tta="flips")
  assert sum(s[0] for s in fn_flips.shapes) == 4 * sum(s[0] for s in fn_none.shapes)
  np.testing.assert_allclose(flips[0], none[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(flips[1], none[1])  # pointwise edge: exact


def test_flip_tta_averages_the_unflipped_outputs():
  """A model that answers with the column position: the flips average it to its mean."""
  def columns(x):
    return np.broadcast_to(np.linspace(0, 1, x.shape[2], dtype=np.float32), x.shape[:3])
  probs, _ = run(Recorder(columns, edge=False), image_of(40, 50), window=64, tta="flips")
  np.testing.assert_allclose(probs, 0.5, atol=1e-6)
  plain, _ = run(Recorder(columns, edge=False), image_of(40, 50), window=64)
  assert plain[0, 0] == 0 and plain[0, -1] > 0.7   # without TTA the ramp stays


@pytest.mark.parametrize("length", [1, 31, 32, 64, 65, 100, 511, 512, 513, 1000, 3001])
@pytest.mark.parametrize("window", [32, 64, 512])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.9])
def test_window_starts_cover_every_pixel_and_stay_in_range(length, window, overlap):
  starts = windows.window_starts(length, window, overlap)
  covered = np.zeros(length, bool)
  for s in starts:
    assert 0 <= s and s + min(window, length) <= length
    covered[s:s + window] = True
  assert covered.all()
  assert starts[0] == 0 and starts[-1] == max(length - window, 0)
  assert starts == sorted(set(starts))
  gaps = np.diff(starts)
  assert (gaps <= max(int(window * (1 - overlap)), 1)).all()   # at least the asked overlap


def test_window_starts_reject_bad_overlap():
  with pytest.raises(ValueError, match="overlap"):
    windows.window_starts(100, 32, 1.0)


@pytest.mark.parametrize("tta", ["none", "flips"])
def test_predict_fn_never_sees_more_than_the_window_batch(tta):
  fn = Recorder(sigmoid_sum)
  run(fn, image_of(300, 250), window=64, overlap=0.5, window_batch=3, tta=tta)
  assert len(fn.shapes) > 4
  assert set(fn.shapes) == {(3, 64, 64, 3)}   # one batch shape: compiled once
  fn = Recorder(sigmoid_sum)
  run(fn, image_of(300, 250), window=64, window_batch=3, tta=tta, batch_multiple=2)
  assert set(fn.shapes) == {(4, 64, 64, 3)}   # rounded up to the device count's multiple


def test_whole_image_batch_is_its_flips_only():
  fn = Recorder(sigmoid_sum)
  run(fn, image_of(50, 60), window=64, window_batch=8, tta="flips")
  assert fn.shapes == [(4, 64, 64, 3)]
  fn = Recorder(sigmoid_sum)
  run(fn, image_of(50, 60), window=64, window_batch=8, batch_multiple=2)
  assert fn.shapes == [(2, 64, 64, 3)]


def test_pad_to_multiple_reflects_and_keeps_the_image():
  image = image_of(33, 70)
  padded = windows.pad_to_multiple(image)
  assert padded.shape == (64, 96, 3)
  np.testing.assert_array_equal(padded[:33, :70], image)
  np.testing.assert_array_equal(padded[33, :70], image[31])   # reflection, not zeros
  assert windows.pad_to_multiple(image_of(64, 32)).shape == (64, 32, 3)
  assert windows.pad_to_multiple(image_of(1, 3)).shape == (32, 32, 3)


def test_importance_map_is_a_positive_centred_gaussian():
  w = windows.importance_map(64, 96)
  assert w.shape == (64, 96) and w.max() == 1.0 and w.min() >= windows.MIN_WEIGHT > 0
  np.testing.assert_allclose(w, w[::-1, ::-1])
  assert w[32, 48] > w[32, 80] > w[32, 95] and w[0, 0] < 1e-3
  np.testing.assert_array_equal(windows.importance_map(8, 8, gaussian_rows=False)[:, 4],
                                windows.importance_map(8, 8, gaussian_rows=False)[0, 4])


def test_bad_window_and_tta_are_errors():
  with pytest.raises(ValueError, match="multiple of 32"):
    run(Recorder(sigmoid_sum), image_of(10, 10), window=50)
  with pytest.raises(ValueError, match="tta"):
    run(Recorder(sigmoid_sum), image_of(10, 10), tta="rot90")


@pytest.mark.parametrize("field,value", [("resolution", "full"), ("window", 500),
                                         ("window", 0), ("overlap", 1.0), ("window_batch", 0),
                                         ("tta", "rot90")])
def test_config_rules_of_the_eval_fields(field, value):
  c = config_lib.get_config()
  assert c.eval.resolution == "resize"          # today's behaviour stays the default
  config_lib.validate_config(c, mode="eval", device_count=1, process_count=1)
  c.eval[field] = value
  with pytest.raises(ConfigError, match=f"eval.{field}"):
    config_lib.validate_config(c, mode="eval", device_count=1, process_count=1)


def test_record_roi_and_image():
  roi = np.zeros((4, 5, 1), np.uint8)
  roi[1:3, 2:4] = 255
  got = inference.record_roi({"roi": roi})
  assert got.dtype == bool and got.shape == (4, 5) and got.sum() == 4
  assert inference.record_roi({"image": None}) is None
  image = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
  out = inference.record_image({"image": image, "mask": np.zeros((4, 5), np.uint8)})
  np.testing.assert_array_equal(out, image)
