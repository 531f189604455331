"""`--mode=predict`: segment a folder of images with the best checkpoint.

Each readable image (`sgdc_jax.data.image_io`: the package's one decoder and extension list;
16-bit images are scaled to 8 bit) is seen by the network as `eval.resolution` says, as in
`--mode=eval`: 'resize' (default): resized and normalised as the evaluation pipeline does it
(`preprocess` = `pipeline.preprocess_eval`: `data.image_size`, `data.mean`, `data.std`),
run through the network in batches of `config.predict.batch_size` (the last batch padded), and
its probabilities are resized back to the original size (as shown: EXIF orientation applied);
'native': the scorer's `inference.ImagePredictor` at the stored resolution (whole image or
sliding windows, `eval.window`, `eval.overlap`, `eval.window_batch`, `eval.tta`), one image at
a time. Outputs in `config.predict.output_dir`: `<stem>.png` (binary: 0/255; multi-class: the
class label per pixel) and, with `config.predict.save_probabilities`, `<stem>_prob.png`
(foreground probability x 255, or the max class probability x 255). Output names are unique
over all inputs, compared case-insensitively, masks and probability maps together
(`output_names`): an input whose `<stem>` output would clash with another's is written
under its file name (`x.jpg` -> `x.jpg.png`), then with its position (`x.jpg~3.png`); each
rename is logged, and a run that would write one file twice stops instead. Files that cannot
be read as images (broken links included) are reported, skipped and counted. Only the files
directly in `predict.input_dir` are read (symbolic links followed); subfolders are named and
skipped, and a folder without image files is an error.

One file never stops a run: a file that cannot be read, or whose mask name the output file
system refuses (too long, or bytes it does not take), is named, counted and skipped. File
names are shown with undecodable bytes escaped (`bad\\xfe.png`); a name that is not valid
UTF-8 gets its mask under the same bytes (`bad\\xfe.png` -> `bad\\xfe.png` in the output
folder, as `ls` shows them; the stem's bytes plus `.png`). What `image_io` decides about an
image beyond its colour mode (an EXIF orientation applied, so the mask has the size of the
picture as a viewer shows it; the first frame of an animated file; a large image read) is
counted in the report (`PredictReport.notes`) and logged with the files it concerns, as
`prepare` counts it for a data set.

The output folder must not be the input folder or lie inside it (masks would overwrite inputs,
and be read as inputs by the next run); both are compared by their real paths.
"""

from __future__ import annotations

import dataclasses
import errno
import os

import jax
import ml_collections
import numpy as np
from PIL import Image

from sgdc_jax.run import config as config_lib
from sgdc_jax.run import experiment, inference
from sgdc_jax import log
from sgdc_jax.run import sharding as shd
from sgdc_jax.run import workdir as workdir_lib
from sgdc_jax.data import image_io
from sgdc_jax.data import pipeline


@dataclasses.dataclass
class PredictReport:
  """Counts of a prediction run."""
  written: list[str]
  unreadable: list[tuple[str, str]]   # (path, reason)
  skipped_non_image: list[str]
  skipped_folders: list[str] = dataclasses.field(default_factory=list)
  # what was decided about readable images (`image_io.Decoded.notes`) -> their paths
  notes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  unwritable: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason)


def list_inputs(input_dir: str) -> tuple[list[str], list[str], list[str]]:
  """`(candidate image paths, other files, subfolders)` in `input_dir` (not recursive), sorted.

  Links are followed; a broken link with an image extension is a candidate (reported as
  unreadable when read), so nothing is left out without a word.
  """
  images, others, folders = [], [], []
  for name in sorted(os.listdir(input_dir)):
    path = os.path.join(input_dir, name)
    if os.path.isdir(path):
      folders.append(path)
    elif name.lower().endswith(image_io.IMAGE_EXTENSIONS):
      images.append(path)
    else:
      others.append(path)
  return images, others, folders


def check_inputs(input_dir: str, images: list[str], others: list[str],
                 folders: list[str]) -> None:
  """Raises `ValueError` when `input_dir` holds no image file, saying what it holds."""
  if images:
    return
  held = []
  if folders:
    shown = ", ".join(image_io.shown_path(os.path.basename(f)) + "/" for f in folders[:5])
    held.append(f"{len(folders)} subfolder(s) ({shown}{' ...' if len(folders) > 5 else ''})")
  if others:
    held.append(f"{len(others)} non-image file(s)")
  raise ValueError(
      f"predict.input_dir {input_dir!r} holds no image file "
      f"({', '.join(image_io.IMAGE_EXTENSIONS)}), only {' and '.join(held) or 'nothing'}; "
      "predict reads the images directly in that folder, not in its subfolders: point "
      "predict.input_dir at the folder of images")


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


def output_names(paths: list[str], save_probabilities: bool = False) -> dict[str, str]:
  """Output name (without '.png') of each input path, unique over all inputs.

  Each input starts at its stem (`x.jpg` -> `x`); while two inputs would write one file
  (`<name>.png`, and `<name>_prob.png` with `save_probabilities`; compared case-insensitively,
  as some file systems do), the clashing inputs at the lowest level move up: stem -> file name
  (`x.jpg`) -> file name and position in `paths` (`x.jpg~2`). File names in one folder
  differ, and the position makes the last level unique, so this ends with no clash.
  """
  bases = [os.path.basename(p) for p in paths]
  levels = [0] * len(paths)

  def name(i: int) -> str:
    return (os.path.splitext(bases[i])[0], bases[i], f"{bases[i]}~{i}")[levels[i]]

  while True:
    owners: dict[str, list[int]] = {}
    for i in range(len(paths)):
      files = [name(i)] + ([f"{name(i)}_prob"] if save_probabilities else [])
      for f in files:
        owners.setdefault(f.casefold(), []).append(i)
    clashes = [group for group in owners.values() if len(set(group)) > 1]
    if not clashes:
      return {p: name(i) for i, p in enumerate(paths)}
    before = list(levels)  # every clash of this round judged by the same levels
    for i in {i for group in clashes for i in group
              if before[i] == min(before[j] for j in group) < 2}:
      levels[i] += 1
    if levels == before:  # cannot happen (see above); never loop forever
      raise RuntimeError(f"predict: no unique output names for {paths}")


def _name_notes(path: str) -> list[str]:
  """`['name not valid UTF-8 ...']` when the file name holds undecodable bytes, else `[]`."""
  try:
    os.path.basename(path).encode("utf-8")
  except UnicodeEncodeError:
    return ["name not valid UTF-8 (shown escaped): mask written under the same bytes"]
  return []


# Errors of one output name, not of the output folder: the run goes on without that mask.
_NAME_ERRNOS = (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL)


def preprocess(image: np.ndarray, data_config: ml_collections.ConfigDict,
               where: str = "predict") -> np.ndarray:
  """The eval pipeline's preprocessing (`pipeline.preprocess_eval`, the function its loader
  applies per example) of one decoded image: uint8 (H, W, 3) -> float32 (S, S, 3)."""
  return pipeline.preprocess_eval(image, None, data_config, where=where)["image"]


def _write(out_dir: str, stem: str, probs: np.ndarray, num_classes: int,
           save_probabilities: bool) -> str:
  """Writes `<stem>.png` (and `<stem>_prob.png`); on an `OSError` none of them is left."""
  labels = inference.to_labels(probs, num_classes)
  mask = labels * 255 if num_classes == 1 else labels
  path = os.path.join(out_dir, f"{stem}.png")
  files = [(path, mask.astype(np.uint8))]
  if save_probabilities:
    p = probs if num_classes == 1 else probs.max(axis=-1)
    files.append((os.path.join(out_dir, f"{stem}_prob.png"),
                  np.clip(np.round(p * 255), 0, 255).astype(np.uint8)))
  try:
    for file, pixels in files:
      Image.fromarray(pixels).save(file, format="PNG")
  except OSError:
    for file, _ in files:
      if os.path.lexists(file):
        os.remove(file)
    raise
  return path


def predict_folder(config: ml_collections.ConfigDict, workdir: str) -> PredictReport:
  """Writes masks for every readable image of `config.predict.input_dir`.

  Returns:
    `PredictReport`; a summary line is printed with the number written and skipped.
  Raises:
    ConfigError: invalid config. ValueError: no image file in the input folder
    (`check_inputs`), output folder unusable (`check_output_dir`). FileNotFoundError: no
    checkpoint in `workdir/checkpoints`. RuntimeError: a mask would be written twice.
  """
  config_lib.validate_config(config, mode="predict")
  workdir_lib.check_training_config(config, workdir, action="predict")
  pcfg = config.predict
  out_dir = pcfg.output_dir
  paths, others, folders = list_inputs(pcfg.input_dir)
  check_inputs(pcfg.input_dir, paths, others, folders)
  check_output_dir(pcfg.input_dir, out_dir)
  if jax.process_index() == 0:
    workdir_lib.write_run_config(config, out_dir, workdir)
  exp = experiment.build(config)
  state, step = experiment.restore_for_inference(exp, workdir)
  variables = state.eval_variables(use_ema=bool(config.eval.use_ema))
  num_classes = int(config.model.num_classes)
  predict = inference.make_predict_fn(exp.model, num_classes, exp.mesh)
  names = output_names(paths, bool(pcfg.save_probabilities))
  shown = image_io.shown_path  # for messages; `log.log` escapes its lines itself
  for path in paths:
    if names[path] != os.path.splitext(os.path.basename(path))[0]:
      log.log(f"predict: {os.path.basename(path)}'s mask would clash with another "
              f"input's output; it is {names[path]}.png")
  report = PredictReport(written=[], unreadable=[], skipped_non_image=others,
                         skipped_folders=folders)
  for p in others:
    log.log(f"predict: skipping {p}: not an image file extension")
  for p in folders:
    log.log(f"predict: skipping subfolder {p}: predict does not read subfolders")
  batch_size = int(pcfg.batch_size)
  done: set[str] = set()
  pending: list[tuple[str, tuple[int, int], np.ndarray]] = []
  # eval.resolution='native': the scorer's own per-image path (same jitted predict fn).
  native = (inference.ImagePredictor(config, exp.model, exp.mesh, predict_fn=predict)
            if config.eval.resolution == "native" else None)

  def emit(path: str, probs: np.ndarray) -> None:
    """Writes one input's mask from its probabilities at its original size (process 0)."""
    if jax.process_index() != 0:
      return
    if names[path].casefold() in done:  # output_names guarantees this never happens
      raise RuntimeError(f"predict: {shown(path)} would overwrite the mask "
                         f"{shown(names[path])}.png written for another input")
    done.add(names[path].casefold())
    try:
      report.written.append(_write(out_dir, names[path], probs, num_classes,
                                   bool(pcfg.save_probabilities)))
    except OSError as e:
      if e.errno not in _NAME_ERRNOS:  # the folder itself (full, read-only): not one file's
        raise
      report.unwritable.append((path, e.strerror or str(e)))
      log.log(f"predict: cannot write the mask of {path} as {names[path]}.png in {out_dir}: "
              f"{e.strerror or e}; skipped (rename the input)")

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
      emit(path, inference.resize_probs(probs[i], h, w))
    pending.clear()

  for path in paths:
    try:
      decoded = image_io.decode(path)
    except ValueError as e:
      report.unreadable.append((path, str(e)))
      log.log(f"predict: cannot read {path}: {e}; skipped")
      continue
    for note in decoded.notes() + _name_notes(path):
      report.notes.setdefault(note, []).append(path)
    image = decoded.pixels
    if native is not None:
      emit(path, native(variables, image, with_edge=False)[0])
      continue
    pending.append((path, image.shape[:2], preprocess(image, config.data, shown(path))))
    if len(pending) == batch_size:
      flush()
  flush()
  readable = len(paths) - len(report.unreadable)
  if jax.process_index() == 0 and len(report.written) + len(report.unwritable) != readable:
    raise RuntimeError(f"predict: wrote {len(report.written)} masks for {readable} readable "
                       "images")
  for note, noted in report.notes.items():
    log.log(f"predict: {len(noted)} image(s): {note}: "
            f"{', '.join(os.path.basename(p) for p in noted[:5])}"
            f"{' ...' if len(noted) > 5 else ''}")
  unwritable = (f", {len(report.unwritable)} mask(s) not writable under their name"
                if report.unwritable else "")
  log.log(
      f"predict: wrote {len(report.written)} masks for {readable} readable image(s) to "
      f"{out_dir} (checkpoint step {step}); {len(report.unreadable)} unreadable "
      f"image(s) skipped{unwritable}, {len(report.skipped_non_image)} non-image file(s) and "
      f"{len(report.skipped_folders)} subfolder(s) ignored")
  return report
