"""Prediction on a folder: masks at the original size; unreadable files reported and skipped."""

import os

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import numpy as np
import pytest
from PIL import Image

from sgdc_jax import predict

from test_train import run_script  # pylint: disable=wrong-import-order


def make_folder(folder):
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  sizes = {"a.png": (50, 70), "b.jpg": (64, 64), "c.bmp": (33, 45)}
  for name, (h, w) in sizes.items():
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
        os.path.join(folder, name))
  with open(os.path.join(folder, "broken.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n this is not really a png")
  with open(os.path.join(folder, "notes.txt"), "w") as f:
    f.write("not an image")
  return sizes


def test_list_inputs_and_read_errors(tmp_path):
  make_folder(str(tmp_path / "in"))
  images, others = predict.list_inputs(str(tmp_path / "in"))
  assert [os.path.basename(p) for p in images] == ["a.png", "b.jpg", "broken.png", "c.bmp"]
  assert [os.path.basename(p) for p in others] == ["notes.txt"]
  assert predict.read_image(images[0]).shape == (50, 70, 3)
  with pytest.raises((OSError, ValueError, SyntaxError)):
    predict.read_image(images[2])


def test_output_dir_must_be_outside_input_and_creatable(tmp_path):
  src = tmp_path / "in"
  src.mkdir()
  for out in (src, src / "masks", tmp_path / "link"):
    if out.name == "link":
      os.symlink(src, out)
    with pytest.raises(ValueError) as e:
      predict.check_output_dir(str(src), str(out))
    assert str(src) in str(e.value) and str(out) in str(e.value)
  assert not (src / "masks").exists()
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match="is an existing file"):
    predict.check_output_dir(str(src), str(tmp_path / "file"))
  with pytest.raises(ValueError, match="cannot be created"):
    predict.check_output_dir(str(src), str(tmp_path / "file" / "sub"))
  predict.check_output_dir(str(src), str(tmp_path / "in2" / "masks"))  # a sibling prefix is fine
  assert (tmp_path / "in2" / "masks").is_dir()


def test_inputs_sharing_a_stem_get_their_own_output():
  names = predict.output_names(["d/x.jpg", "d/x.png", "d/y.png"])
  assert names == {"d/x.jpg": "x.jpg", "d/x.png": "x.png", "d/y.png": "y"}


@pytest.mark.slow
def test_predict_folder_with_unreadable_file(tmp_path):
  sizes = make_folder(str(tmp_path / "in"))
  Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(str(tmp_path / "in" / "a.jpg"))
  sizes["a.jpg"] = (20, 30)
  work, out = str(tmp_path / "work"), str(tmp_path / "out")
  result = run_script(f"""
    from sgdc_jax import train, predict
    c = tiny_config()
    c.data.num_workers = 0
    c.train.num_steps = 2
    train.train_and_evaluate(c, {work!r})
    c.predict.input_dir = {str(tmp_path / 'in')!r}
    c.predict.output_dir = {out!r}
    c.predict.save_probabilities = True
    c.predict.batch_size = 2          # 3 readable images: one full and one padded batch
    r = predict.predict_folder(c, {work!r})
    print('RESULT' + json.dumps({{'written': [os.path.basename(p) for p in r.written],
        'unreadable': [os.path.basename(p) for p, _ in r.unreadable],
        'ignored': [os.path.basename(p) for p in r.skipped_non_image]}}))
  """)
  # a.jpg and a.png share a stem: each gets its own mask, and the log counts what was written.
  assert result["written"] == ["a.jpg.png", "a.png.png", "b.png", "c.png"]
  assert sorted(f for f in os.listdir(out) if not f.endswith(("_prob.png", ".json"))) == (
      result["written"])
  assert result["unreadable"] == ["broken.png"]
  assert result["ignored"] == ["notes.txt"]
  for name, (h, w) in sizes.items():
    stem = name if name.startswith("a.") else os.path.splitext(name)[0]
    mask = np.asarray(Image.open(os.path.join(out, f"{stem}.png")))
    prob = np.asarray(Image.open(os.path.join(out, f"{stem}_prob.png")))
    assert mask.shape == (h, w) and prob.shape == (h, w)
    assert set(np.unique(mask)) <= {0, 255}
    # The mask is the probability map thresholded at 0.5 (away from 8-bit rounding at 0.5).
    clear = np.abs(prob.astype(np.float64) - 127.5) > 1
    assert clear.any()
    np.testing.assert_array_equal((prob >= 128)[clear], (mask > 0)[clear])
  assert not os.path.exists(os.path.join(out, "broken.png"))
