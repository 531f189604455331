"""DRIVE retinal vessels at the stored resolution (565x584), from scratch; any folder data set.

Prepare the official DRIVE layout once (docs/datasets.md, "DRIVE"):

  python -m sgdc_jax.data.prepare --dataset=drive --manual_dir=DIR --data_dir=TFDS_DIR

Train on random patches at the stored resolution, validate and test on whole images padded to a
multiple of 32 (`eval.resolution='native'`), scored inside the field of view:

  python -m sgdc_jax.main --config=configs/drive.py:cpu --workdir=runs/drive_cpu \
      --config.data.data_dir=TFDS_DIR

The same config trains any other folder data set at its stored resolution
(`--config.data.name=NAME`; check `data.crop_size` against its image size and the splits'
names). Ablation of the kernel source on DRIVE:
`python -m sgdc_jax.analysis.ablation --config=configs/drive.py:cpu --workdir=runs/drive_abl
--sources=structure,pooled,none --seeds=0,1,2 --config.data.data_dir=TFDS_DIR`.

Variants:
  ''     accelerator-sized: ResNet-50, D=256, output stride 1, patches of 256, 20k steps of 16.
         Not yet run.
  'cpu'  ResNet-18, D=64, output stride 1, patches of 128, 1000 steps of 8 (11-13 min of
         training measured on a quiet 2-core CPU, under 20 min with test scoring and the
         ablation's diagnostics; docs/results_drive.md gives the measured times and the
         validation sweep behind these settings).
"""

import ml_collections

from sgdc_jax.run import config as base

VARIANTS = ("", "cpu")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """DRIVE; `variant` '' (accelerator-sized) or 'cpu' (see the module docstring)."""
  base.check_variant("configs/drive.py", variant, VARIANTS)
  config = base.get_config()
  d = config.data
  d.name = "drive"
  d.train_split, d.eval_split, d.test_split = "train", "validation", "test"
  d.train_mode = "patch"
  # Vessels are thin: a band of 1 px each side is the edge target, not the lesions' 2.
  d.boundary_width = 1
  # Fundus colour varies between cameras and patients; keep the jitter, drop hue.
  d.augment.hue = 0.0
  ev = config.eval
  ev.resolution = "native"
  ev.window = 640          # 565x584 padded to 576x608: one window per image
  ev.batch_size = 2
  ev.window_batch = 2
  ev.overlays = 4
  config.model.output_stride = 1
  config.model.layer_scale_init = 1.0
  if variant == "cpu":
    base.use_cpu_model(config)  # ResNet-18, D=64, lr 1e-3, as the demo
    d.crop_size = 128
    config.train.batch_size = 8
    config.optimizer.warmup_steps = 100
    config.train.num_steps = 1000
    config.train.log_every = 50
    config.train.eval_every = 250
    config.train.checkpoint_every = 250
  else:
    config.model.dtype = "bfloat16"
    d.crop_size = 256
    config.train.batch_size = 16
    config.optimizer.learning_rate = 5e-4
    config.optimizer.warmup_steps = 500
    config.train.num_steps = 20_000
    config.train.eval_every = 1000
  return config
