"""Training: the pure train step and the train-and-evaluate loop.

``train_step`` is a module-level pure function ``(state, batch) -> (state, metrics)``; the model,
the optimizer and the loss are bound with ``functools.partial`` and the result is jitted with
explicit shardings (state: per-leaf ``NamedSharding``s; batch: split over ``'data'``; metrics:
replicated) and the state donated. The same code runs on one CPU, simulated CPU devices, several
processes, GPUs and TPUs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sgdc_jax import sharding as shd
from sgdc_jax import train_state as ts

LossFn = Callable[[dict[str, jax.Array], dict[str, jax.Array]], tuple[jax.Array, dict[str, Any]]]


class NonFiniteLossError(FloatingPointError):
  """Raised when a training step produced a NaN or Inf loss."""


def train_step(state: ts.TrainState, batch: dict[str, jax.Array], *, apply_fn: Callable,
               loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule,
               ema_decay: float, seed: int) -> tuple[ts.TrainState, dict[str, jax.Array]]:
  """One optimizer update.

  Args:
    state: the current ``TrainState``.
    batch: dict with 'image' float32 (B, H, W, 3) and whatever ``loss_fn`` reads
      (e.g. 'mask' int32 (B, H, W), 'edge' uint8 (B, H, W)); B is the global batch.
    apply_fn: ``model.apply``; called as ``apply_fn(variables, images, train=True,
      mutable=['batch_stats'], rngs={'dropout': key})``.
    loss_fn: ``(outputs, batch) -> (scalar loss, dict of scalar aux metrics)``.
    tx: the optax transformation (``train_state.create_optimizer``).
    schedule: learning-rate schedule, only for logging.
    ema_decay: EMA decay in [0, 1); 0 leaves ``state.ema_params`` untouched (``None``).
    seed: base seed; the dropout/drop-path key is ``fold_in(key(seed), state.step)``, so a resumed
      run draws the same randomness as an uninterrupted one.
  Returns:
    ``(new_state, metrics)``; metrics are float32 scalars: 'loss', the aux entries,
    'grad_norm', 'learning_rate' and 'finite' (1.0 if the loss and gradients were finite).
    A non-finite step leaves the state unchanged (the caller stops training).
  """
  dropout_key = jax.random.fold_in(jax.random.key(seed), state.step)

  def loss_of(params):
    variables = {"params": params}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
    outputs, updates = apply_fn(variables, batch["image"], train=True, mutable=["batch_stats"],
                                rngs={"dropout": dropout_key})
    loss, aux = loss_fn(outputs, batch)
    return loss, (aux, updates.get("batch_stats", {}))

  (loss, (aux, new_stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  updates, new_opt = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  new_ema = state.ema_params
  if state.ema_params is not None and ema_decay > 0:
    new_ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p,
                           state.ema_params, new_params)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  new_state = state.replace(step=state.step + 1, params=new_params, batch_stats=new_stats,
                            opt_state=new_opt, ema_params=new_ema)
  # Keep the last good state on a non-finite step (nothing of a NaN update is ever stored).
  new_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, state)
  metrics = {"loss": loss.astype(jnp.float32), "grad_norm": grad_norm.astype(jnp.float32),
             "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
             "finite": finite.astype(jnp.float32)}
  metrics.update({k: jnp.asarray(v, jnp.float32) for k, v in aux.items()})
  return new_state, metrics


def jit_train_step(step_fn: Callable, state_shardings: Any,
                   mesh: jax.sharding.Mesh) -> Callable:
  """Jits a (partially applied) ``train_step`` with explicit shardings; the state is donated."""
  return jax.jit(step_fn, in_shardings=(state_shardings, shd.data_sharding(mesh)),
                 out_shardings=(state_shardings, shd.replicated(mesh)), donate_argnums=(0,))


@dataclasses.dataclass
class Setup:
  """What the train/eval/predict modes share: mesh, model, state and its shardings."""
  mesh: jax.sharding.Mesh
  model: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  state: ts.TrainState
  shardings: Any
  abstract_state: Any


def setup(config: ml_collections.ConfigDict, *, load_pretrained: bool = True) -> Setup:
  """Builds mesh, model, optimizer and the sharded initial state from ``config``."""
  from sgdc_jax import models  # pylint: disable=g-import-not-at-top
  mesh = shd.make_mesh(config.mesh.data)
  model = models.build_model(config.model)
  tx = ts.create_optimizer(config.optimizer, config.train.num_steps)
  schedule = ts.learning_rate_schedule(config.optimizer, config.train.num_steps)
  size = config.data.image_size
  ema = float(config.optimizer.ema_decay) > 0

  def init_variables():
    dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    return model.init({"params": jax.random.key(config.seed)}, dummy, train=False)

  init_fn = lambda: ts.create_train_state(init_variables(), tx, ema)
  state, shardings = shd.create_sharded_state(init_fn, mesh, fsdp=config.mesh.fsdp,
                                              min_size=config.mesh.fsdp_min_size)
  if load_pretrained and config.model.pretrained:
    variables = jax.device_get(state.eval_variables(use_ema=False))
    variables = models.load_pretrained_encoder(variables, config.model.pretrained)
    state = jax.jit(lambda v: ts.create_train_state(v, tx, ema), out_shardings=shardings)(
        variables)
  abstract = shd.abstract_with_shardings(jax.eval_shape(lambda: state), shardings)
  return Setup(mesh, model, tx, schedule, state, shardings, abstract)


def make_loss_fn(config: ml_collections.ConfigDict) -> LossFn:
  """``(outputs, batch) -> (loss, aux)`` from ``sgdc_jax.losses.total_loss`` and the config."""
  from sgdc_jax import losses  # pylint: disable=g-import-not-at-top
  return functools.partial(losses.total_loss, num_classes=config.model.num_classes,
                           lambda_edge=float(config.loss.lambda_edge))


def _append_history(path: str, record: dict[str, Any]) -> None:
  if jax.process_index() == 0:
    with open(path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")


def _truncate_history(path: str, last_step: int) -> None:
  """Drops history lines after ``last_step`` (steps repeated after a resume)."""
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(l) for l in f if l.strip()]
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      if r["step"] <= last_step:
        f.write(json.dumps(r) + "\n")


@dataclasses.dataclass
class TrainResult:
  """What ``train_and_evaluate`` returns."""
  state: ts.TrainState
  train_iter: Any
  step: int
  preempted: bool
  last_val: Optional[dict[str, Any]]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       step_callback: Optional[Callable[[int], None]] = None) -> TrainResult:
  """Trains ``config.train.num_steps`` steps, evaluating and checkpointing periodically.

  Resumes from the latest checkpoint in ``workdir/checkpoints`` when one exists. A SIGTERM makes
  the loop save a checkpoint at the current step and return with ``preempted=True``.

  Args:
    config: a validated config (see ``config_validation.validate_config``).
    workdir: output directory (checkpoints, TensorBoard events, history, curve).
    step_callback: optional hook called with the step number after every step (tests).
  Returns:
    ``TrainResult``.
  Raises:
    NonFiniteLossError: on a NaN/Inf loss, naming the step; checkpoints already written
      (the last good state) are kept and nothing is saved for the bad step.
  """
  from sgdc_jax import checkpointing, evaluate, logging_utils  # pylint: disable=g-import-not-at-top
  from sgdc_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  os.makedirs(workdir, exist_ok=True)
  s = setup(config)
  step_fn = functools.partial(train_step, apply_fn=s.model.apply, loss_fn=make_loss_fn(config),
                              tx=s.tx, schedule=s.schedule,
                              ema_decay=float(config.optimizer.ema_decay), seed=int(config.seed))
  p_train_step = jit_train_step(step_fn, s.shardings, s.mesh)
  train_iter = pipeline.create_train_iterator(
      config.data, config.train.batch_size, seed=int(config.seed),
      process_index=jax.process_index(), process_count=jax.process_count())

  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    keep_best=config.train.keep_best)
  state = s.state
  start = 0
  restored = ckpt.restore_latest(s.abstract_state, train_iter)
  if restored is not None:
    state, train_iter, start = restored
    logging_utils.log(f"resumed from step {start} in {ckpt.directory}")
  history_path = os.path.join(workdir, "history.jsonl")
  _truncate_history(history_path, start)

  num_steps = int(config.train.num_steps)
  writer = logging_utils.create_writer(workdir)
  if start == 0:
    logging_utils.write_hparams(writer, config)
  hooks = logging_utils.create_hooks(config, workdir, writer, num_steps)
  eval_runner = evaluate.Evaluator(config, s.model, s.mesh)
  sigterm = checkpointing.PreemptionFlag(check_every=config.train.preemption_check_every)

  acc: dict[str, float] = {}
  acc_n = 0
  last_val = None
  step = start
  preempted = False
  bar = logging_utils.progress_bar(num_steps, start)
  last_log = [start, time.time()]
  first_batch = None
  if start < num_steps:
    # Compile ahead, then line the processes up: the first collective must not wait on a
    # process that is still compiling (CPU Gloo contexts give up after 30 s).
    first_batch = shd.host_to_global(next(train_iter), s.mesh)
    p_train_step = p_train_step.lower(state, first_batch).compile()
  shd.barrier("train_start")
  try:
    for step in range(start + 1, num_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        if first_batch is not None:
          batch, first_batch = first_batch, None
        else:
          batch = shd.host_to_global(next(train_iter), s.mesh)
        state, metrics = p_train_step(state, batch)
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not metrics.pop("finite") or not np.isfinite(metrics["loss"]):
        raise NonFiniteLossError(
            f"non-finite loss ({metrics['loss']}) at step {step}; training stopped. The last "
            f"good checkpoint (step {ckpt.latest_step()}) is kept in {ckpt.directory}.")
      for k, v in metrics.items():
        acc[k] = acc.get(k, 0.0) + v
      acc_n += 1
      for h in hooks:
        h(step)
      if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")
      if step % config.train.log_every == 0 or step == num_steps:
        means = {f"train/{k}": v / acc_n for k, v in acc.items()}
        writer.write_scalars(step, means)
        now = time.time()
        rate = (step - last_log[0]) / max(now - last_log[1], 1e-9)
        last_log[:] = [step, now]
        if bar is None:
          logging_utils.log(f"step {step}/{num_steps}: loss {means['train/loss']:.4f}, "
                            f"lr {means['train/learning_rate']:.2e}, {rate:.2f} steps/s")
        _append_history(history_path, {"step": step, "loss": means["train/loss"]})
        acc, acc_n = {}, 0
      is_last = step == num_steps
      val = None
      if (config.train.eval_every and step % config.train.eval_every == 0) or is_last:
        val = eval_runner.evaluate(state, config.data.eval_split)
        last_val = val
        writer.write_scalars(step, {f"val/{k}": v for k, v in val["mean"].items()
                                    if isinstance(v, (int, float))})
        _append_history(history_path, {"step": step, "val_dice": val["mean"].get("dice"),
                                       "val_hd95": val["mean"].get("hd95")})
        logging_utils.log(f"step {step}: val dice {val['mean'].get('dice'):.4f} "
                          f"hd95 {val['mean'].get('hd95')}")
      if val is not None:
        ckpt.save(step, state, train_iter, metrics={"val_dice": float(val["mean"]["dice"])})
      elif (config.train.checkpoint_every and step % config.train.checkpoint_every == 0):
        ckpt.save(step, state, train_iter)
      if step_callback is not None:
        step_callback(step)
      if sigterm.should_stop(step):
        if step not in ckpt.all_steps():
          ckpt.save(step, state, train_iter)
        ckpt.wait_until_finished()
        logging_utils.log(f"SIGTERM: saved step {step} to {ckpt.directory}; rerun the same "
                          f"command to resume")
        preempted = True
        break
  finally:
    if bar is not None:
      bar.close()
    sigterm.restore()
    ckpt.wait_until_finished()
    writer.flush()
  if not preempted and jax.process_index() == 0:
    evaluate.plot_training_curve(history_path, os.path.join(workdir, "training_curve.png"))
  ckpt.close()
  return TrainResult(state=state, train_iter=train_iter, step=step, preempted=preempted,
                     last_val=last_val)
