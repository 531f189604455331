"""The one source of config defaults and rules, and the check run before any compute.

`get_config()` is the base config (locked: assigning a field that does not exist raises an
error naming it). Every file in `configs/` imports this module and changes a few fields; no
file is loaded by path. The model section is `models.default_model_config()` (checked by
`models.validate_model_config`), the data section `data.pipeline.default_data_config()`; the
other sections are defined here, each followed by its rules in `RULES`.

`validate_config` collects every problem (unknown or missing field, wrong type, impossible value
such as a batch size the devices cannot split, a missing dataset directory) and raises one
`ConfigError` whose message lists them, each naming the field. Path fields
(`sgdc_jax.paths.CONFIG_FIELDS`) are used as given: the command line expands `~` and `$VARS`
in them when it parses the config (`sgdc_jax.cli.parse_flags`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional

import jax
import ml_collections
from flax import traverse_util

from sgdc_jax.models import convert
from sgdc_jax import models
from sgdc_jax.checks import is_int, is_number
from sgdc_jax.data import pipeline
from sgdc_jax.data import data_config as data_config_lib
from sgdc_jax.errors import ConfigError  # noqa: F401  (raised here, re-exported)
from sgdc_jax.errors import DamagedDataError

MODES = ("train", "eval", "predict")


def get_config() -> ml_collections.ConfigDict:
  """Base config: SGDCNet (ResNet-50, D=256, 2 SGDC blocks) on 256x256 synthetic lesions.

  Returns:
    A locked ConfigDict (existing fields can be changed, new ones cannot be added).
  """
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Persistent XLA compilation cache; '' = $JAX_COMPILATION_CACHE_DIR if set, else
  # ~/.cache/sgdc_jax/jax (see experiment.enable_compilation_cache).
  config.compilation_cache_dir = ""

  config.model = models.default_model_config()
  config.data = pipeline.default_data_config()

  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=2e-4,     # peak AdamW learning rate
      weight_decay=1e-4,      # decoupled, kernels (ndim >= 2) only
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      warmup_steps=500,       # linear warm-up from 0
      min_lr_ratio=0.01,      # cosine decay ends at learning_rate * min_lr_ratio
      grad_clip_norm=1.0,     # clip_by_global_norm; <= 0 disables
      ema_decay=0.0,          # parameter EMA decay, 0 = off (e.g. 0.999)
  ))

  config.train = ml_collections.ConfigDict(dict(
      num_steps=20_000,
      batch_size=16,          # global batch, split over all devices of all processes
      log_every=50,           # metrics are fetched from the device only at these steps
      eval_every=1000,        # validation on data.eval_split (0 = only at the end)
      checkpoint_every=1000,  # periodic saves besides the validation ones (0 = none)
      keep_best=3,            # best-by-val-Dice checkpoints kept besides the latest
      prefetch_to_device=2,   # batches put on the devices ahead of the step that uses them
      profile_steps=0,        # > 0: capture a profiler trace of this many steps
      profile_first_step=10,
  ))

  config.mesh = ml_collections.ConfigDict(dict(
      data=-1,                # devices on the 'data' axis, -1 = all
      fsdp=False,             # shard large parameters (and their optimizer state) over 'data'
      fsdp_min_size=2**18,    # elements; smaller leaves stay replicated
      # Several processes: one silent this long is lost, and every other stops (exit 5).
      peer_timeout_s=60.0,
  ))

  config.loss = ml_collections.ConfigDict(dict(lambda_edge=1.0))

  config.eval = ml_collections.ConfigDict(dict(
      batch_size=16,          # global eval batch (need not divide the split)
      overlays=16,            # PNG overlays written by --mode=eval
      # Where --mode=eval writes (DIR/<data.name>/<split>/step_<N>/); '' = workdir/eval/...
      # Set it to evaluate a read-only workdir.
      output_dir="",
      use_ema=True,           # evaluate EMA parameters when EMA is on
      checkpoint="best",      # best | latest (for --mode=eval and --mode=predict)
      nsd_tolerance=2.0,      # surface Dice (NSD) tolerance, pixels of the stored image
      boundary_iou_ratio=0.02,  # Boundary IoU band width / image diagonal (Cheng et al.)
      # How the network sees an image when scoring or predicting (run.windows): 'resize' to
      # data.image_size and back, or 'native': the stored resolution, padded to a multiple of
      # 32 when it fits window x window, else sliding windows blended with a Gaussian.
      resolution="resize",
      window=512,             # native: largest network input side (a multiple of 32)
      overlap=0.5,            # native: fraction of a window shared with its neighbour
      window_batch=4,         # native: windows per forward pass (bounds the memory)
      tta="none",             # native: 'none' | 'flips' (average of the 4 flips)
  ))

  config.predict = ml_collections.ConfigDict(dict(
      input_dir="",
      output_dir="",
      save_probabilities=False,  # also write 8-bit probability maps
      batch_size=8,
  ))
  config.lock()
  return config


def _at_least(low: int) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: is_int(v) and v >= low), f"an integer >= {low}"


def _flag() -> tuple[Callable[[Any], bool], str]:
  return (lambda v: isinstance(v, bool)), "true or false"


def _text(what: str) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: isinstance(v, str)), what


# Rules of the fields defined in `get_config` (model fields: `models.validate_model_config`;
# data fields: the type of the default, plus the checks in `validate_config`).
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (is_int, "an integer"),
    "compilation_cache_dir": _text("a directory path ('' = default)"),
    "optimizer.learning_rate": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "optimizer.weight_decay": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "optimizer.b1": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "optimizer.b2": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "optimizer.eps": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "optimizer.warmup_steps": _at_least(0),
    "optimizer.min_lr_ratio": (lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "optimizer.grad_clip_norm": (is_number, "a number (<= 0 disables clipping)"),
    "optimizer.ema_decay": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "train.num_steps": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.log_every": _at_least(1),
    "train.eval_every": _at_least(0),
    "train.checkpoint_every": _at_least(0),
    "train.keep_best": _at_least(1),
    "train.prefetch_to_device": _at_least(1),
    "train.profile_steps": _at_least(0),
    "train.profile_first_step": _at_least(0),
    "mesh.data": (lambda v: is_int(v) and (v == -1 or v >= 1), "-1 or an integer >= 1"),
    "mesh.fsdp": _flag(),
    "mesh.fsdp_min_size": _at_least(1),
    "mesh.peer_timeout_s": (lambda v: is_number(v) and v > 0, "a number > 0 (seconds)"),
    "loss.lambda_edge": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "eval.batch_size": _at_least(1),
    "eval.overlays": _at_least(0),
    "eval.output_dir": _text("a directory path ('' = inside the workdir)"),
    "eval.use_ema": _flag(),
    "eval.checkpoint": (lambda v: v in ("best", "latest"), "'best' or 'latest'"),
    "eval.nsd_tolerance": (lambda v: is_number(v) and v >= 0, "a number >= 0 (pixels)"),
    "eval.boundary_iou_ratio": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "eval.resolution": (lambda v: v in ("resize", "native"), "'resize' or 'native'"),
    "eval.window": (lambda v: is_int(v) and v >= 32 and v % 32 == 0,
                    "an integer multiple of 32 (>= 32)"),
    "eval.overlap": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "eval.window_batch": _at_least(1),
    "eval.tta": (lambda v: v in ("none", "flips"), "'none' or 'flips'"),
    "predict.input_dir": _text("a directory path"),
    "predict.output_dir": _text("a directory path"),
    "predict.save_probabilities": _flag(),
    "predict.batch_size": _at_least(1),
    "data.train_mode": data_config_lib.rule("train_mode"),
    "data.crop_size": data_config_lib.rule("crop_size"),
    "data.scale_jitter": data_config_lib.rule("scale_jitter"),
}


def check_variant(path: str, variant: str, variants: tuple[str, ...]) -> None:
  """Raises ValueError naming `path` when `variant` (the text after ':' in `--config=path:...`)
  is not one of the config file's `variants`."""
  if variant not in variants:
    example = next((v for v in variants if v), "")
    raise ValueError(f"{path}: unknown variant {variant!r}; expected one of {variants} "
                     f"(e.g. --config={path}:{example})")


def use_cpu_model(config: ml_collections.ConfigDict) -> None:
  """Shrinks `config` in place to the CPU-sized network of the demo and the `:cpu` variants:
  ResNet-18, D=64 (SGE bottleneck and mid channels too), 4 heads, peak learning rate 1e-3."""
  m = config.model
  m.encoder = "resnet18"
  m.decoder_channels = 64
  m.num_heads = 4
  m.sge_bottleneck = 64
  m.sge_mid = 64
  config.optimizer.learning_rate = 1e-3


def demo_config() -> ml_collections.ConfigDict:
  """`configs/demo.py` (kept in the package so that `python -m sgdc_jax.demo` works from an
  installed package): ResNet-18, D=64, 96x96 synthetic lesions, 150 steps of batch 8."""
  config = get_config()
  use_cpu_model(config)
  d = config.data
  d.image_size = 96
  d.synthetic.train_size = 1000
  d.synthetic.validation_size = 32
  d.synthetic.test_size = 100
  d.synthetic.height = 120
  d.synthetic.width = 160
  config.optimizer.warmup_steps = 20
  config.train.num_steps = 150
  config.train.batch_size = 8
  config.train.log_every = 25
  config.train.eval_every = 75
  config.train.checkpoint_every = 75
  config.eval.batch_size = 16
  config.eval.overlays = 8
  return config


def flatten(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`{'a.b': value}` for every leaf of `config`."""
  return traverse_util.flatten_dict(config.to_dict(), sep=".")


def validate_config(config: ml_collections.ConfigDict, *, mode: str = "train",
                    device_count: Optional[int] = None,
                    process_count: Optional[int] = None) -> None:
  """Checks `config` before anything is computed.

  Args:
    config: the resolved config (after command-line overrides).
    mode: 'train', 'eval' or 'predict' (predict also checks `predict.input_dir`).
    device_count: global device count (default `jax.device_count()`).
    process_count: JAX process count (default `jax.process_count()`).
  Raises:
    ConfigError: listing every problem, one per line, each naming its field.
  """
  device_count = jax.device_count() if device_count is None else device_count
  process_count = jax.process_count() if process_count is None else process_count
  problems: list[str] = []
  if mode not in MODES:
    problems.append(f"--mode={mode!r}: expected one of {MODES}")
  # A locked config cannot gain fields, but one built from a dict (or unlocked) can.
  ref = flatten(get_config())
  given = flatten(config)
  problems += [f"{name}: unknown field" for name in sorted(set(given) - set(ref))]
  problems += [f"{name}: missing field" for name in sorted(set(ref) - set(given))]
  structural = bool(problems)
  bad = set()
  for name in sorted(set(given) & set(ref)):
    value, want = given[name], ref[name]
    if name in RULES:
      ok, expected = RULES[name][0](value), RULES[name][1]
    elif name.startswith("model.") or want is None or value is None:
      continue
    else:  # data fields: the default's type
      ok = (isinstance(want, bool) == isinstance(value, bool) and
            (not is_number(want) or is_number(value)) and
            (not isinstance(want, str) or isinstance(value, str)))
      expected = f"a {type(want).__name__}"
    if not ok:
      problems.append(f"{name}: expected {expected}, got {value!r}")
      bad.add(name)
  if structural:  # unknown/missing fields: the checks below assume the fields exist
    raise ConfigError("invalid config:\n  " + "\n  ".join(problems))

  mesh_data = device_count if ("mesh.data" in bad or config.mesh.data == -1) else config.mesh.data
  if mesh_data > device_count:
    problems.append(f"mesh.data: {mesh_data} devices requested, {device_count} available")
  for name in ("train.batch_size", "eval.batch_size", "predict.batch_size"):
    b = given[name]
    if name not in bad and (mode == "train" or name != "train.batch_size"):
      if b % mesh_data:
        problems.append(f"{name}: {b} is not divisible by the {mesh_data} devices of the mesh")
      elif b % process_count:
        problems.append(f"{name}: {b} is not divisible by the {process_count} processes")
  if (mode == "train" and not bad & {"optimizer.warmup_steps", "train.num_steps"}
      and config.optimizer.warmup_steps >= config.train.num_steps):
    problems.append(f"optimizer.warmup_steps: {config.optimizer.warmup_steps} must be smaller "
                    f"than train.num_steps={config.train.num_steps}")
  try:
    models.validate_model_config(config.model)
  except ValueError as e:
    problems.append(str(e))
  try:
    pipeline.validate_data_config(config.data)
  except ValueError as e:
    problems.append(str(e))
  if mode == "train":  # the weights are read only when a training starts from step 0
    problems.extend(_check_pretrained(config.model.pretrained))
  size = config.data.image_size
  if is_int(size) and (size < 32 or size % 32):
    problems.append(f"data.image_size: {size} must be a multiple of 32 (encoder stride)")
  data_dir = config.data.data_dir
  if data_dir and not os.path.isdir(data_dir):
    problems.append(f"data.data_dir: directory {data_dir!r} does not exist")
  if not problems and config.data.name != pipeline.SYNTHETIC:
    problems.extend(_check_dataset(config, mode))
  if mode == "predict":
    if not config.predict.input_dir:
      problems.append("predict.input_dir: required for --mode=predict")
    elif not os.path.isdir(config.predict.input_dir):
      problems.append(f"predict.input_dir: directory {config.predict.input_dir!r} does not exist")
    if not config.predict.output_dir:
      problems.append("predict.output_dir: required for --mode=predict")
  if problems:
    raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def _check_pretrained(path: str) -> list[str]:
  """Problems with `model.pretrained` found without reading the file (its contents are
  checked when they are loaded: `convert.load_torch_checkpoint`)."""
  if not path:
    return []
  ext = os.path.splitext(path)[1].lower()
  if not os.path.isfile(path):
    return [f"model.pretrained: file {path!r} does not exist"]
  if ext not in convert.WEIGHT_EXTENSIONS:
    return [f"model.pretrained: {path!r} has extension {ext!r}; expected one of "
            f"{', '.join(convert.WEIGHT_EXTENSIONS)}"]
  return []


def _check_dataset(config: ml_collections.ConfigDict, mode: str) -> list[str]:
  """Problems opening the splits `mode` needs (dataset not prepared, unknown split/name)."""
  splits = {"train": ("train_split", "eval_split"), "eval": ("test_split",), "predict": ()}[mode]
  for field in splits:
    try:
      pipeline.open_source(config.data, config.data[field])
    except DamagedDataError:
      raise  # not a config problem: one line naming the shard and the rebuild command
    except (FileNotFoundError, ValueError, ImportError) as e:
      return [f"data.{field}={config.data[field]!r}: {e}"]
  return []


def write_config(config: ml_collections.ConfigDict, directory: str) -> str:
  """Writes the resolved config as `directory/config.json` and returns the path."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "config.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
  return path
