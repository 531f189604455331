"""What every mode (train, eval, predict) builds from a config: processes, compilation cache,
mesh, model, optimizer, the abstract (shape + sharding) train state, and restoring it.

Nothing here trains or evaluates; `sgdc_jax.run.train`, `sgdc_jax.run.evaluate` and
`sgdc_jax.run.predict` call these pieces. `build` materialises nothing: the state is described
by `jax.eval_shape`, then either created already sharded (`init_state`, training) or restored
from a checkpoint into that layout (`restore_for_inference`), so eval/predict never initialise
weights they overwrite.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from sgdc_jax.run import checkpoints as checkpointing
from sgdc_jax import models
from sgdc_jax.errors import ConfigError
from sgdc_jax.run import config as config_lib
from sgdc_jax.run import peers
from sgdc_jax.run import sharding as shd
from sgdc_jax.run import train_state as ts


def multiprocess_from_env(env=None) -> Optional[dict]:
  """Arguments for `jax.distributed.initialize` when the environment says multi-process.

  Several processes (multi-host GPU/TPU, or loopback tests) are detected from
  `JAX_COORDINATOR_ADDRESS` + `JAX_NUM_PROCESSES` + `JAX_PROCESS_ID`, SLURM (`SLURM_NTASKS > 1`)
  or a multi-host Cloud TPU (`TPU_WORKER_HOSTNAMES` with several hosts).

  Returns:
    `{}` (let JAX auto-detect: SLURM, Cloud TPU), a dict with coordinator_address /
    num_processes / process_id (explicit JAX_* variables), or None for a single process.
  """
  env = os.environ if env is None else env
  if env.get("JAX_COORDINATOR_ADDRESS") and int(env.get("JAX_NUM_PROCESSES", "1")) > 1:
    return {"coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
            "num_processes": int(env["JAX_NUM_PROCESSES"]),
            "process_id": int(env["JAX_PROCESS_ID"])}
  if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
    return {}
  hosts = env.get("TPU_WORKER_HOSTNAMES", "")
  if hosts and len(hosts.split(",")) > 1:
    return {}
  return None


def initialize_processes(config: Optional[ml_collections.ConfigDict] = None, *,
                         checkpoint_dir: str = "") -> Optional[peers.Watchdog]:
  """Calls `jax.distributed.initialize` when `multiprocess_from_env()` asks for it; must run
  before anything touches the devices.

  Several processes are then watched (`sgdc_jax.run.peers`): a lost one ends every other
  within `config.mesh.peer_timeout_s` seconds (default 60) with one line naming it,
  `checkpoint_dir`'s last complete step and this process's command line.

  Returns:
    The started `peers.Watchdog` (pass it to `peers.guard`), or None for a single process.
  Raises:
    ConfigError: `mesh.peer_timeout_s` breaks its rule in `config_lib.RULES` (checked here:
      the config is validated later, after the processes are up).
  """
  dist = multiprocess_from_env()
  if dist is None:
    return None
  timeout_s = peers.DEFAULT_TIMEOUT_S if config is None else config.mesh.peer_timeout_s
  valid, expected = config_lib.RULES["mesh.peer_timeout_s"]
  if not valid(timeout_s):
    raise ConfigError(f"mesh.peer_timeout_s: expected {expected}, got {timeout_s!r}")
  return peers.initialize(dist, timeout_s=float(timeout_s), checkpoint_dir=checkpoint_dir)


def default_cache_dir() -> str:
  """`$JAX_COMPILATION_CACHE_DIR` if set, else `$XDG_CACHE_HOME/sgdc_jax/jax` (~/.cache)."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "sgdc_jax", "jax")


def enable_compilation_cache(config: ml_collections.ConfigDict) -> str:
  """Turns on JAX's persistent compilation cache (every entry point calls this first).

  A rerun of the same config loads the compiled train/eval programs from disk instead of
  compiling them again (minutes for ResNet-50 on a CPU).

  Returns:
    The cache directory: `config.compilation_cache_dir`, or `default_cache_dir()` when ''.
  """
  directory = config.compilation_cache_dir or default_cache_dir()
  jax.config.update("jax_compilation_cache_dir", directory)
  return directory


@dataclasses.dataclass(frozen=True)
class Experiment:
  """The static pieces every mode shares.

  Attributes:
    config: the validated config.
    mesh: the 1-D ('data',) device mesh.
    model: the `SGDCNet`.
    tx, schedule: optimizer and learning-rate schedule (train; harmless for inference).
    abstract_state: `TrainState` of `jax.ShapeDtypeStruct`s carrying their shardings.
    shardings: pytree of `NamedSharding`s of the state.
  """
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  abstract_state: Any
  shardings: Any

  def init_fn(self) -> ts.TrainState:
    """Freshly initialised (random) train state; traced by `build` and `init_state`."""
    size = self.config.data.image_size
    dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    variables = self.model.init({"params": jax.random.key(self.config.seed)}, dummy, train=False)
    return ts.create_train_state(variables, self.tx, float(self.config.optimizer.ema_decay) > 0)


def build(config: ml_collections.ConfigDict) -> Experiment:
  """Mesh, model, optimizer and the abstract sharded state of `config`; no arrays created."""
  mesh = shd.make_mesh(config.mesh.data)
  model = models.build_model(config.model)
  tx = ts.create_optimizer(config.optimizer, config.train.num_steps)
  schedule = ts.learning_rate_schedule(config.optimizer, config.train.num_steps)
  exp = Experiment(config, mesh, model, tx, schedule, None, None)
  abstract = jax.eval_shape(exp.init_fn)
  shardings = shd.state_shardings(abstract, mesh, fsdp=config.mesh.fsdp,
                                  min_size=config.mesh.fsdp_min_size)
  return dataclasses.replace(exp, abstract_state=shd.abstract_with_shardings(abstract, shardings),
                             shardings=shardings)


def init_state(exp: Experiment, *, load_pretrained: bool = True) -> ts.TrainState:
  """The initial train state, created directly in its sharded layout.

  With `config.model.pretrained` set (and `load_pretrained`), the encoder weights are read
  from that file and the state rebuilt around them.
  """
  state, _ = shd.create_sharded_state(exp.init_fn, exp.mesh, fsdp=exp.config.mesh.fsdp,
                                      min_size=exp.config.mesh.fsdp_min_size)
  if load_pretrained and exp.config.model.pretrained:
    ema = float(exp.config.optimizer.ema_decay) > 0
    variables = jax.device_get(state.eval_variables(use_ema=False))
    variables = models.load_pretrained_encoder(variables, exp.config.model.pretrained)
    state = jax.jit(lambda v: ts.create_train_state(v, exp.tx, ema),
                    out_shardings=exp.shardings)(variables)
  return state


def checkpoint_dir(workdir: str) -> str:
  """Where a run keeps its Orbax checkpoints."""
  return os.path.join(workdir, "checkpoints")


def restore_for_inference(exp: Experiment, workdir: str) -> tuple[ts.TrainState, int]:
  """Restores the state of the best (`config.eval.checkpoint == 'best'`) or latest checkpoint.

  Returns:
    `(state, step)`.
  Raises:
    FileNotFoundError: no checkpoint in `workdir/checkpoints`.
  """
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints in {directory}: train first "
                            f"(--mode=train --workdir={workdir})")
  ckpt = checkpointing.Checkpointer(directory, keep_best=exp.config.train.keep_best,
                                    read_only=True)
  try:
    best = ckpt.best_step() if exp.config.eval.checkpoint == "best" else ckpt.latest_step()
    if best is None:
      raise FileNotFoundError(f"no checkpoints in {directory}: train first")
    state, _, step = ckpt.restore_intact(exp.abstract_state, prefer=best)
  finally:
    ckpt.close()
  return state, step
