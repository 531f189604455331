"""Base config: SGDCNet (ResNet-50, D=256, 2 structure-guided SGDC blocks) on 256x256 inputs.

Every other config starts from this one and changes a few fields. Run it (synthetic data, no
download) with:

  python -m sgdc_jax.main --config=configs/default.py --workdir=runs/default

Cost: ~20k steps of batch 16 at 256x256 with ResNet-50 -- an accelerator job (hours on one GPU);
on a CPU use configs/demo.py instead.
"""

import ml_collections

from sgdc_jax.data.pipeline import default_data_config
from sgdc_jax.models import default_model_config


def get_config() -> ml_collections.ConfigDict:
  """Returns the base config (see the module docstring)."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = default_model_config()
  config.data = default_data_config()

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
      log_every=50,
      eval_every=1000,        # validation on data.eval_split (0 = only at the end)
      checkpoint_every=1000,  # periodic saves besides the validation ones (0 = none)
      keep_best=3,            # best-by-val-Dice checkpoints kept besides the latest
      preemption_check_every=10,  # multi-process: steps between SIGTERM consensus checks
      profile_steps=0,        # > 0: capture a profiler trace of this many steps
      profile_first_step=10,
  ))

  config.mesh = ml_collections.ConfigDict(dict(
      data=-1,                # devices on the 'data' axis, -1 = all
      fsdp=False,             # shard large parameters (and their optimizer state) over 'data'
      fsdp_min_size=2**18,    # elements; smaller leaves stay replicated
  ))

  config.loss = ml_collections.ConfigDict(dict(lambda_edge=1.0))

  config.eval = ml_collections.ConfigDict(dict(
      batch_size=16,          # global eval batch (need not divide the split)
      overlays=16,            # PNG overlays written by --mode=eval
      use_ema=True,           # evaluate EMA parameters when EMA is on
      checkpoint="best",      # best | latest (for --mode=eval and --mode=predict)
  ))

  config.predict = ml_collections.ConfigDict(dict(
      input_dir="",
      output_dir="",
      save_probabilities=False,  # also write 8-bit probability maps
      batch_size=8,
  ))
  return config
