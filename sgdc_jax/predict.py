"""`--mode=predict`: segment a folder of images with the best checkpoint.

Each readable image (`sgdc_jax.data.image_io`: the package's one decoder and extension list;
16-bit images are scaled to 8 bit) is resized and normalised by the evaluation pipeline's own
transform (`pipeline.EvalTransform`), run through the network in batches of
`config.predict.batch_size` (the last batch padded), and its probabilities are resized back to
the original size. Outputs in `config.predict.output_dir`: `<stem>.png` (binary: 0/255;
multi-class: the class label per pixel) and, with `config.predict.save_probabilities`,
`<stem>_prob.png` (foreground probability x 255, or the max class probability x 255). Inputs
that share a stem (`x.jpg`, `x.png`) are written as `<name>.png` (`x.jpg.png`, `x.png.png`) so
that none overwrites another; the collision is logged. Files that cannot be read as images are
reported, skipped and counted.

The output folder must not be the input folder or lie inside it (masks would overwrite inputs,
and be read as inputs by the next run); both are compared by their real paths.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np
from PIL import Image

from sgdc_jax import config as config_lib
from sgdc_jax import experiment, inference, reporting
from sgdc_jax import sharding as shd
from sgdc_jax import workdir as workdir_lib
from sgdc_jax.data import image_io, pipeline


@dataclasses.dataclass
class PredictReport:
  """Counts of a prediction run."""
  written: list[str]
  unreadable: list[tuple[str, str]]   # (path, reason)
  skipped_non_image: list[str]


def list_inputs(input_dir: str) -> tuple[list[str], list[str]]:
  """`(candidate image paths, other files)` in `input_dir` (not recursive), sorted."""
  images, others = [], []
  for name in sorted(os.listdir(input_dir)):
    path = os.path.join(input_dir, name)
    if not os.path.isfile(path):
      continue
    (images if name.lower().endswith(image_io.IMAGE_EXTENSIONS) else others).append(path)
  return images, others


def check_output_dir(input_dir: str, output_dir: str) -> None:
  """Creates `output_dir`; raises `ValueError` naming both folders when it is `input_dir` or
  inside it, or when it is a file or cannot be created."""
  src, dst = os.path.realpath(input_dir), os.path.realpath(output_dir)
  if dst == src or dst.startswith(src.rstrip(os.sep) + os.sep):
    raise ValueError(f"predict.output_dir {output_dir!r} is {'' if dst == src else 'inside '}"
                     f"predict.input_dir {input_dir!r}: the masks would overwrite or mix with "
                     "the input images; choose a folder outside it")
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f"predict.output_dir {output_dir!r} is an existing file, not a folder")
  try:
    os.makedirs(output_dir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"predict.output_dir {output_dir!r} cannot be created: "
                     f"{e.strerror or e}") from None
  if not os.access(output_dir, os.W_OK | os.X_OK):
    raise ValueError(f"predict.output_dir {output_dir!r} is not writable")


def output_names(paths: list[str]) -> dict[str, str]:
  """Output name (without '.png') of each input path: its stem, or its file name when
  another input shares the stem (`x.jpg`, `x.png` -> `x.jpg`, `x.png`)."""
  stems: dict[str, list[str]] = {}
  for path in paths:
    stems.setdefault(os.path.splitext(os.path.basename(path))[0], []).append(path)
  return {path: (stem if len(group) == 1 else os.path.basename(path))
          for stem, group in stems.items() for path in group}


def read_image(path: str) -> np.ndarray:
  """uint8 (H, W, 3) RGB; raises `ValueError` naming the file when it is not a readable image."""
  return image_io.read_rgb(path)


def preprocess(image: np.ndarray, data_config: ml_collections.ConfigDict) -> np.ndarray:
  """The eval pipeline's transform of one image: uint8 (H, W, 3) -> float32 (S, S, 3)."""
  example = {"image": image, "mask": np.zeros(image.shape[:2], np.uint8)}
  return pipeline.EvalTransform([example], data_config, where="predict").map(0)["image"]


def _write(out_dir: str, stem: str, probs: np.ndarray, num_classes: int,
           save_probabilities: bool) -> str:
  labels = inference.to_labels(probs, num_classes)
  mask = labels * 255 if num_classes == 1 else labels
  path = os.path.join(out_dir, f"{stem}.png")
  Image.fromarray(mask.astype(np.uint8)).save(path)
  if save_probabilities:
    p = probs if num_classes == 1 else probs.max(axis=-1)
    Image.fromarray(np.clip(np.round(p * 255), 0, 255).astype(np.uint8)).save(
        os.path.join(out_dir, f"{stem}_prob.png"))
  return path


def predict_folder(config: ml_collections.ConfigDict, workdir: str) -> PredictReport:
  """Writes masks for every readable image of `config.predict.input_dir`.

  Returns:
    `PredictReport`; a summary line is printed with the number written and skipped.
  Raises:
    ConfigError: invalid config. ValueError: output folder unusable (see `check_output_dir`).
    FileNotFoundError: no checkpoint in `workdir/checkpoints`.
  """
  config_lib.validate_config(config, mode="predict")
  workdir_lib.check_training_config(config, workdir, action="predict")
  pcfg = config.predict
  out_dir = pcfg.output_dir
  check_output_dir(pcfg.input_dir, out_dir)
  if jax.process_index() == 0:
    workdir_lib.write_run_config(config, out_dir, workdir)
  exp = experiment.build(config)
  state, step = experiment.restore_for_inference(exp, workdir)
  variables = state.eval_variables(use_ema=bool(config.eval.use_ema))
  num_classes = int(config.model.num_classes)
  predict = inference.make_predict_fn(exp.model, num_classes, exp.mesh)
  paths, others = list_inputs(pcfg.input_dir)
  names = output_names(paths)
  for path in paths:
    if names[path] != os.path.splitext(os.path.basename(path))[0]:
      reporting.log(f"predict: {os.path.basename(path)} shares its stem with another input; "
                    f"its mask is {names[path]}.png")
  report = PredictReport(written=[], unreadable=[], skipped_non_image=others)
  for p in others:
    reporting.log(f"predict: skipping {p}: not an image file extension")
  batch_size = int(pcfg.batch_size)
  pending: list[tuple[str, tuple[int, int], np.ndarray]] = []

  def flush():
    if not pending:
      return
    images = np.stack([x for _, _, x in pending])
    pad = batch_size - len(pending)
    if pad:
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    # Every process feeds the same full batch; rows are split over the mesh.
    images = jax.device_put(images, shd.data_sharding(exp.mesh))
    probs = shd.global_to_host(predict(variables, images)["probs"])
    for i, (path, (h, w), _) in enumerate(pending):
      if jax.process_index() == 0:
        p = inference.resize_probs(probs[i], h, w)
        report.written.append(_write(out_dir, names[path], p, num_classes,
                                     bool(pcfg.save_probabilities)))
    pending.clear()

  for path in paths:
    try:
      image = read_image(path)
    except ValueError as e:
      report.unreadable.append((path, str(e)))
      reporting.log(f"predict: cannot read {path}: {e}; skipped")
      continue
    pending.append((path, image.shape[:2], preprocess(image, config.data)))
    if len(pending) == batch_size:
      flush()
  flush()
  reporting.log(
      f"predict: wrote {len(report.written)} masks to {out_dir} (checkpoint step {step}); "
      f"{len(report.unreadable)} unreadable image(s) skipped, "
      f"{len(report.skipped_non_image)} non-image file(s) ignored")
  return report
