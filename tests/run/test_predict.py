"""Prediction on a folder: masks at the original size; unreadable files reported and skipped."""

import os
import re

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import ml_collections
import numpy as np
import pytest
from PIL import Image

from sgdc_jax.data import image_io, pipeline
from sgdc_jax.run import config as config_lib
from sgdc_jax.run import predict

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
  images, others, folders = predict.list_inputs(str(tmp_path / "in"))
  assert [os.path.basename(p) for p in images] == ["a.png", "b.jpg", "broken.png", "c.bmp"]
  assert [os.path.basename(p) for p in others] == ["notes.txt"]
  assert folders == []
  assert image_io.read_rgb(images[0]).shape == (50, 70, 3)
  with pytest.raises((OSError, ValueError, SyntaxError)):
    image_io.read_rgb(images[2])


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


def _output_files(names, save_probabilities):
  files = [f"{n}.png" for n in names.values()]
  return files + ([f"{n}_prob.png" for n in names.values()] if save_probabilities else [])


@pytest.mark.parametrize("inputs", [
    ["a.jpg", "a.jpg.png", "a.png"],            # a.jpg's renamed mask is a.jpg.png's own
    ["a.png", "a_prob.jpg"],                    # a mask named like another's probability map
    ["A.png", "a.PNG", "a.png", "a.jpg"],       # one name on a case-insensitive file system
    ["x.jpg", "x.jpg.png", "x.jpg.png.png", "x.png", "x.png_prob.png", "x.tif"],
])
@pytest.mark.parametrize("save_probabilities", [False, True])
def test_output_names_are_unique_over_all_inputs(inputs, save_probabilities):
  paths = [os.path.join("d", n) for n in sorted(inputs)]
  names = predict.output_names(paths, save_probabilities)
  assert sorted(names) == paths
  files = [f.casefold() for f in _output_files(names, save_probabilities)]
  assert len(set(files)) == len(files), names
  for path, name in names.items():  # the stem, else a name that still tells the input
    assert name.startswith(os.path.splitext(os.path.basename(path))[0])


def test_output_names_move_only_the_inputs_that_clash():
  """a.jpg and a.png clash at their stem; a.jpg.png's stem then clashes with a.jpg's file
  name (also as probability map): only a.jpg.png moves on, and nobody needs a position."""
  names = predict.output_names(["d/a.jpg", "d/a.jpg.png", "d/a.png", "d/b.jpg"], True)
  assert names == {"d/a.jpg": "a.jpg", "d/a.jpg.png": "a.jpg.png", "d/a.png": "a.png",
                   "d/b.jpg": "b"}


def test_output_names_unique_for_many_hostile_names():
  rng = np.random.default_rng(0)
  parts = ["a", "A", ".jpg", ".png", ".PNG", "_prob", "~1", ".tif"]
  for _ in range(200):
    inputs = set()
    for _ in range(rng.integers(2, 8)):
      name = "".join(rng.choice(parts, rng.integers(1, 4))) + rng.choice([".jpg", ".png"])
      inputs.add(name)
    paths = sorted(os.path.join("d", n) for n in inputs)
    names = predict.output_names(paths, True)
    files = [f.casefold() for f in _output_files(names, True)]
    assert len(set(files)) == len(files), names


def test_list_inputs_follows_links_and_names_subfolders(tmp_path):
  src = tmp_path / "in"
  make_folder(str(src))
  os.symlink(src / "a.png", src / "linked.png")          # a link to an image is an image
  os.symlink(tmp_path / "gone.jpg", src / "dangling.jpg")  # reported when read, not dropped
  (src / "sub").mkdir()
  os.symlink(tmp_path, src / "linked_dir")
  images, _, folders = predict.list_inputs(str(src))
  names = [os.path.basename(p) for p in images]
  assert "linked.png" in names and "dangling.jpg" in names
  assert [os.path.basename(p) for p in folders] == ["linked_dir", "sub"]
  assert image_io.read_rgb(str(src / "linked.png")).shape == (50, 70, 3)
  with pytest.raises(ValueError, match=r"dangling\.jpg is a broken symbolic link"):
    image_io.read_rgb(str(src / "dangling.jpg"))


@pytest.mark.parametrize("content", ["subfolders", "nothing", "text"])
def test_folder_without_images_is_an_error(tmp_path, content):
  from sgdc_jax.run import config as config_lib  # pylint: disable=import-outside-toplevel
  src = tmp_path / "in"
  src.mkdir()
  if content == "subfolders":
    for sub in ("benign", "malignant"):
      (src / sub).mkdir()
      Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / sub / "x.png")
  elif content == "text":
    (src / "notes.txt").write_text("x")
  c = config_lib.get_config()
  c.predict.input_dir, c.predict.output_dir = str(src), str(tmp_path / "out")
  expected = {"subfolders": r"only 2 subfolder\(s\) \(benign/, malignant/\)",
              "nothing": "only nothing", "text": r"only 1 non-image file\(s\)"}[content]
  with pytest.raises(ValueError, match=rf"predict\.input_dir .*in' holds no image file .*"
                     rf"{expected}; predict reads the images directly in that folder"):
    predict.predict_folder(c, str(tmp_path / "work"))
  assert not (tmp_path / "out").exists()  # stopped before anything was written



@pytest.mark.slow
def test_predict_folder_with_unreadable_file(tmp_path):
  sizes = make_folder(str(tmp_path / "in"))
  Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(str(tmp_path / "in" / "a.jpg"))
  sizes["a.jpg"] = (20, 30)
  # a.jpg's renamed mask would be a.jpg.png, which is also this input's own stem output.
  Image.fromarray(np.zeros((25, 35, 3), np.uint8)).save(str(tmp_path / "in" / "a.jpg.png"))
  sizes["a.jpg.png"] = (25, 35)
  os.makedirs(tmp_path / "in" / "sub")
  work, out = str(tmp_path / "work"), str(tmp_path / "out")
  result = run_script(f"""
    import contextlib, io, logging
    from sgdc_jax.run import evaluate, outputs, train, predict

    class Warnings(logging.Handler):  # what absl (Orbax, ...) would print as warnings
      def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []
      def emit(self, record):
        self.lines.append(record.getMessage())

    def captured(fn):
      out, warnings = io.StringIO(), Warnings()
      logging.getLogger('absl').addHandler(warnings)
      try:
        with contextlib.redirect_stdout(out):
          fn()
      finally:
        logging.getLogger('absl').removeHandler(warnings)
      return out.getvalue(), warnings.lines

    c = tiny_config()
    c.data.num_workers = 0
    c.train.num_steps = 2
    train_out, train_warnings = captured(lambda: train.train_and_evaluate(c, {work!r}))
    def evaluate_and_print():
      summary = evaluate.evaluate_checkpoint(c, {work!r})
      outputs.print_summary(summary, summary['output_dir'])
    eval_out, eval_warnings = captured(evaluate_and_print)
    c.predict.input_dir = {str(tmp_path / 'in')!r}
    c.predict.output_dir = {out!r}
    c.predict.save_probabilities = True
    c.predict.batch_size = 2          # 5 readable images: two full and one padded batch
    c.eval.checkpoint = 'latest'      # how predict reads: not a difference worth a word
    c.eval.overlays = 0
    runs = []
    predict_out, predict_warnings = captured(
        lambda: runs.append(predict.predict_folder(c, {work!r})))
    r = runs[0]
    print('RESULT' + json.dumps({{'written': [os.path.basename(p) for p in r.written],
        'unreadable': [os.path.basename(p) for p, _ in r.unreadable],
        'ignored': [os.path.basename(p) for p in r.skipped_non_image],
        'folders': [os.path.basename(p) for p in r.skipped_folders],
        'train_out': train_out, 'eval_out': eval_out, 'predict_out': predict_out,
        'warnings': train_warnings + eval_warnings + predict_warnings}}))
  """)
  # Quiet runs: no Orbax warning about the read-only checkpoint folder eval and predict open or
  # about the periodic saves without metrics (checkpoint_every=1), no report of predict/eval
  # output settings differing from the training config, figures rounded.
  assert result["warnings"] == [], result["warnings"]
  assert "differs" not in result["predict_out"] and "differs" not in result["eval_out"], (
      result["predict_out"])
  assert re.search(r"^step 2: val dice \d\.\d{4}, iou \d\.\d{4}, hd95 \d+\.\d{2} px, "
                   r"nsd \d\.\d{4}, boundary_iou \d\.\d{4}, cldice \d\.\d{4}$", result["train_out"],
                   re.M), (
                       result["train_out"])
  for name in ("dice", "iou", "nsd", "boundary_iou"):
    assert re.search(rf"^  {name} +\d\.\d{{4}} \+- \d\.\d{{4}}$", result["eval_out"], re.M), (
        name, result["eval_out"])
  for name in ("hd95", "assd"):
    assert re.search(rf"^  {name} +\d+\.\d{{2}} \+- \d+\.\d{{2}} px$", result["eval_out"],
                     re.M), (name, result["eval_out"])
  # a.jpg and a.png share a stem and a.jpg.png's stem is a.jpg: each gets its own mask, and
  # the log counts what was written.
  names = {"a.jpg": "a.jpg", "a.jpg.png": "a.jpg.png", "a.png": "a.png", "b.jpg": "b",
           "c.bmp": "c"}
  assert result["written"] == [f"{names[n]}.png" for n in sorted(names)]
  assert sorted(f for f in os.listdir(out) if not f.endswith(("_prob.png", ".json"))) == (
      result["written"])
  assert result["unreadable"] == ["broken.png"]
  assert result["ignored"] == ["notes.txt"]
  assert result["folders"] == ["sub"]
  for name, (h, w) in sizes.items():
    stem = names[name]
    mask = np.asarray(Image.open(os.path.join(out, f"{stem}.png")))
    prob = np.asarray(Image.open(os.path.join(out, f"{stem}_prob.png")))
    assert mask.shape == (h, w) and prob.shape == (h, w)
    assert set(np.unique(mask)) <= {0, 255}
    # The mask is the probability map thresholded at 0.5 (away from 8-bit rounding at 0.5).
    clear = np.abs(prob.astype(np.float64) - 127.5) > 1
    assert clear.any()
    np.testing.assert_array_equal((prob >= 128)[clear], (mask > 0)[clear])
  assert not os.path.exists(os.path.join(out, "broken.png"))


@pytest.mark.parametrize("image_size", [64, (48, 80)])
def test_preprocess_is_the_eval_pipelines_transform(image_size):
  """`predict.preprocess` (`pipeline.preprocess_eval`) gives what the eval pipeline gives
  for the same decoded image."""
  data = config_lib.get_config().data.to_dict()
  data.update(image_size=image_size, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
  data = ml_collections.ConfigDict(data)
  rng = np.random.default_rng(0)
  for shape in ((50, 70, 3), (64, 64, 3), (33, 45, 3)):
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    example = {"image": image, "mask": np.zeros(shape[:2], np.uint8)}
    expected = pipeline.EvalTransform([example], data).map(0)["image"]
    got = predict.preprocess(image, data)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
