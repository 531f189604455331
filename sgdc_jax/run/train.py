"""Training: the pure train step and the train-and-evaluate loop.

``train_step`` is a module-level pure function ``(state, batch) -> (state, metrics)``; the model,
the optimizer and the loss are bound with ``functools.partial`` and the result is jitted with
explicit shardings (state: per-leaf ``NamedSharding``s; batch: split over ``'data'``; metrics:
replicated) and the state donated. The same code runs on one CPU, simulated CPU devices, several
processes, GPUs and TPUs.

The loop never waits on the host between steps: batches are put on the devices ahead of use
(``sharding.prefetch_to_device``), the step metrics are merged on the device into a
``clu.metrics.Collection`` and fetched only at ``train.log_every`` steps, before a checkpoint
and before validation.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metrics as clu_metrics

from sgdc_jax.run import checkpoints as checkpointing, experiment, inference
from sgdc_jax.models import losses
from sgdc_jax import log
from sgdc_jax.run import hooks as hooks_lib, outputs, writers
from sgdc_jax.run import config as config_lib
from sgdc_jax.run import sharding as shd
from sgdc_jax.run import workdir as workdir_lib
from sgdc_jax.run import train_state as ts
from sgdc_jax.data import pipeline
from sgdc_jax.errors import NonFiniteLossError

# The validation figures of the log line ('step N: val dice 0.8123, hd95 10.59 px, ...').
VAL_LOG_METRICS = ("dice", "iou", "hd95", "nsd", "boundary_iou", "cldice")

LossFn = Callable[[dict[str, jax.Array], dict[str, jax.Array]], tuple[jax.Array, dict[str, Any]]]


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
    'grad_norm', 'learning_rate' and 'finite' (1.0 if the loss and gradients were finite), and
    the int32 'step' this update counts as (``state.step + 1``).
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
  grad_norm = optax.tree.norm(grads)  # = the deprecated optax.global_norm
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  new_state = state.replace(step=state.step + 1, params=new_params, batch_stats=new_stats,
                            opt_state=new_opt, ema_params=new_ema)
  # Keep the last good state on a non-finite step (nothing of a NaN update is ever stored).
  new_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, state)
  metrics = {"loss": loss.astype(jnp.float32), "grad_norm": grad_norm.astype(jnp.float32),
             "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
             "finite": finite.astype(jnp.float32), "step": state.step + 1}
  metrics.update({k: jnp.asarray(v, jnp.float32) for k, v in aux.items()})
  return new_state, metrics


def jit_train_step(step_fn: Callable, state_shardings: Any,
                   mesh: jax.sharding.Mesh) -> Callable:
  """Jits a (partially applied) ``train_step`` with explicit shardings; the state is donated."""
  return jax.jit(step_fn, in_shardings=(state_shardings, shd.data_sharding(mesh)),
                 out_shardings=(state_shardings, shd.replicated(mesh)), donate_argnums=(0,))


def make_loss_fn(config: ml_collections.ConfigDict) -> LossFn:
  """``(outputs, batch) -> (loss, aux)`` from ``sgdc_jax.models.losses.total_loss`` and the config."""
  return functools.partial(losses.total_loss, num_classes=config.model.num_classes,
                           lambda_edge=float(config.loss.lambda_edge))


def make_train_step(exp: experiment.Experiment) -> Callable:
  """The jitted ``(state, batch) -> (state, metrics)`` step of ``exp`` (state donated)."""
  config = exp.config
  fn = functools.partial(train_step, apply_fn=exp.model.apply, loss_fn=make_loss_fn(config),
                         tx=exp.tx, schedule=exp.schedule,
                         ema_decay=float(config.optimizer.ema_decay), seed=int(config.seed))
  return jit_train_step(fn, exp.shardings, exp.mesh)


_NO_STEP = int(jnp.iinfo(jnp.int32).max)


@flax.struct.dataclass
class FirstNonFinite(clu_metrics.Metric):
  """The first step whose loss or gradients were not finite (``_NO_STEP`` when none)."""
  step: jax.Array

  @classmethod
  def empty(cls) -> "FirstNonFinite":
    return cls(step=jnp.array(_NO_STEP, jnp.int32))

  @classmethod
  def from_model_output(cls, finite: jax.Array, step: jax.Array, **_) -> "FirstNonFinite":
    return cls(step=jnp.where(finite > 0, _NO_STEP, step).astype(jnp.int32))

  def merge(self, other: "FirstNonFinite") -> "FirstNonFinite":
    return type(self)(step=jnp.minimum(self.step, other.step))

  def compute(self) -> jax.Array:
    return self.step


class MetricWindow:
  """Step metrics merged on the device (a ``clu.metrics.Collection``) until fetched.

  ``add`` only dispatches a tiny jitted merge; ``first_non_finite`` and ``fetch`` are the only
  places that wait for the devices.
  """

  def __init__(self, names: list[str], mesh: jax.sharding.Mesh):
    self.collection = clu_metrics.Collection.create(
        first_non_finite=FirstNonFinite,
        **{n: clu_metrics.Average.from_output(n) for n in names})
    rep = shd.replicated(mesh)
    self._empty = jax.jit(self.collection.empty, out_shardings=rep)
    self._merge = jax.jit(
        lambda acc, m: acc.merge(self.collection.single_from_model_output(**m)),
        out_shardings=rep)
    self._compute = jax.jit(lambda acc: acc.compute())
    self.acc = self._empty()

  def add(self, step_metrics: dict[str, jax.Array]) -> None:
    """Merges one step's metrics (no host wait)."""
    self.acc = self._merge(self.acc, step_metrics)

  def first_non_finite(self) -> Optional[int]:
    """The first non-finite step merged since the last ``fetch``, or None (waits)."""
    step = int(jax.device_get(self.acc.first_non_finite.step))
    return None if step == _NO_STEP else step

  def fetch(self) -> tuple[dict[str, float], Optional[int]]:
    """``(means since the last fetch, first non-finite step or None)``; starts a new window."""
    values = jax.device_get(self._compute(self.acc))
    self.acc = self._empty()
    step = int(values.pop("first_non_finite"))
    return {k: float(v) for k, v in values.items()}, (None if step == _NO_STEP else step)


@dataclasses.dataclass
class TrainResult:
  """What ``train_and_evaluate`` returns.

  Attributes:
    state: the final (or preempted) state.
    train_iter: the data iterator, positioned at the next unused batch, when
      ``train_and_evaluate`` was called with ``keep_iterator=True`` (close it when done);
      otherwise None (it was closed, which stops its worker processes).
    step: the last step run.
    preempted: stopped by SIGTERM after saving ``step``.
    last_val: the last validation summary (None without validation).
    compile_s: seconds to compile the train step; loop_s: seconds of the step loop
      (validation and checkpoint saves included).
  """
  state: ts.TrainState
  train_iter: Any
  step: int
  preempted: bool
  last_val: Optional[dict[str, Any]]
  compile_s: float = 0.0
  loop_s: float = 0.0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       step_callback: Optional[Callable[[int], None]] = None,
                       run_eval: bool = True, keep_iterator: bool = False) -> TrainResult:
  """Trains ``config.train.num_steps`` steps, evaluating and checkpointing periodically.

  Validates ``config``, writes it to ``workdir/config.json`` and resumes from the latest
  checkpoint in ``workdir/checkpoints`` when one exists. A SIGTERM makes the loop save a
  checkpoint at the current step and return with ``preempted=True``.

  NaN/Inf handling without a per-step host wait: ``train_step`` never applies a non-finite
  update (the state stays as it was), and each step's 'finite' flag and step number are merged
  on the device into ``FirstNonFinite``. The metrics are fetched at every ``log_every`` step and,
  whatever ``log_every`` is, before every checkpoint save and validation: a checkpoint is only
  written after a fetched check has shown every step since the previous check finite. So the
  newest checkpoint is always a good state, and the error names the first bad step even when it
  lies between two fetches.

  Args:
    config: a config like ``sgdc_jax.run.config.get_config()``.
    workdir: output directory (checkpoints, TensorBoard events, history, curve).
    step_callback: optional hook called with the step number after every step (tests).
    run_eval: False skips validation (benchmarks); the final checkpoint is still saved.
    keep_iterator: return the open data iterator in ``TrainResult.train_iter`` instead of
      closing it (to read on from where training stopped).
  Returns:
    ``TrainResult``.
  Raises:
    ConfigError: invalid config (nothing is computed).
    NonFiniteLossError: on a NaN/Inf loss or gradient, naming the step; checkpoints already
      written (the last good state) are kept and nothing is saved after the bad step.
  """
  config_lib.validate_config(config, mode="train")
  with workdir_lib.training_lock(workdir):
    return _train_and_evaluate(config, workdir, step_callback=step_callback, run_eval=run_eval,
                               keep_iterator=keep_iterator)


def _train_and_evaluate(config, workdir, *, step_callback, run_eval, keep_iterator):
  os.makedirs(workdir, exist_ok=True)
  exp = experiment.build(config)
  p_train_step = make_train_step(exp)
  grain_iter = pipeline.create_train_iterator(
      config.data, config.train.batch_size, seed=int(config.seed),
      process_index=jax.process_index(), process_count=jax.process_count())
  keep = False
  try:
    result = _train_loop(config, workdir, exp, p_train_step, grain_iter,
                         step_callback=step_callback, run_eval=run_eval)
    keep = keep_iterator
  finally:
    if not keep:
      grain_iter.close()  # stops the Grain worker processes and read threads
  return result if keep else dataclasses.replace(result, train_iter=None)


def _train_loop(config, workdir, exp, p_train_step, grain_iter, *, step_callback, run_eval):
  ckpt = checkpointing.Checkpointer(experiment.checkpoint_dir(workdir),
                                    keep_best=config.train.keep_best)
  if ckpt.all_steps():
    workdir_lib.check_training_config(config, workdir, action="resume")
  else:
    workdir_lib.record_training_config(config, workdir)
  if not ckpt.all_steps():
    start = 0
    state = experiment.init_state(exp)
  else:
    state, grain_iter, start = ckpt.restore_intact(
        exp.abstract_state, grain_iter, set_aside_to=ckpt.directory + ".damaged")
    log.log(f"resumed from step {start} in {ckpt.directory}")
  batches = shd.prefetch_to_device(grain_iter, exp.mesh, config.train.prefetch_to_device)

  num_steps = int(config.train.num_steps)
  if start >= num_steps:
    log.log(f"workdir already at step {start} >= train.num_steps={num_steps}: nothing to "
                  f"train (raise --config.train.num_steps to continue)")
  writer = writers.create_writer(workdir, start)
  if start == 0:
    writers.write_hparams(writer, config)
  hooks = hooks_lib.create_hooks(config, workdir, writer)
  scorer = inference.Scorer(config, exp.model, exp.mesh) if run_eval else None
  preemption = checkpointing.PreemptionFlag(ckpt)

  def check_finite(bad: Optional[int]) -> None:
    if bad is not None:
      raise NonFiniteLossError(
          f"non-finite loss or gradient at step {bad}; training stopped. The last good "
          f"checkpoint (step {ckpt.latest_step()}) is kept in {ckpt.directory}.")

  last_val = None
  step = start
  preempted = False
  bar = hooks_lib.progress_bar(num_steps, start)
  compile_s = 0.0
  window = None
  if start < num_steps:
    # Compile ahead, then line the processes up: the first collective must not wait on a
    # process that is still compiling (CPU Gloo contexts give up after 30 s).
    first = batches.peek()  # waits for the input pipeline outside the compile timing
    t0 = time.perf_counter()
    lowered = p_train_step.lower(state, first)
    names = sorted(k for k in lowered.out_info[1] if k not in ("finite", "step"))
    p_train_step = lowered.compile()
    compile_s = time.perf_counter() - t0
    window = MetricWindow(names, exp.mesh)
  shd.barrier("train_start")
  loop_start = time.perf_counter()
  last_log = [start, time.perf_counter()]
  try:
    for step in range(start + 1, num_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = p_train_step(state, next(batches))
      window.add(metrics)
      for h in hooks:
        h(step)
      is_last = step == num_steps
      checked = False
      if step % config.train.log_every == 0 or is_last:
        means, bad = window.fetch()
        check_finite(bad)
        checked = True
        writer.write_scalars(step, means)
        now = time.perf_counter()
        rate = (step - last_log[0]) / max(now - last_log[1], 1e-9)
        if bar is not None:
          bar.update(step - last_log[0])
          bar.set_postfix(loss=f"{means['loss']:.4f}")
        else:
          log.log(f"step {step}/{num_steps}: loss {means['loss']:.4f}, "
                        f"lr {means['learning_rate']:.2e}, {rate:.2f} steps/s")
        last_log[:] = [step, now]
      do_eval = run_eval and ((config.train.eval_every and step % config.train.eval_every == 0)
                              or is_last)
      do_save = do_eval or is_last or (
          config.train.checkpoint_every and step % config.train.checkpoint_every == 0)
      if do_save and not checked:
        check_finite(window.first_non_finite())
        checked = True
      val_metrics = None
      if do_eval:
        _, last_val = scorer.score(state, config.data.eval_split)
        mean = last_val["mean"]
        writer.write_scalars(step, {f"val_{k}": v for k, v in mean.items()
                                    if isinstance(v, (int, float))})
        log.log(f"step {step}: val " + outputs.format_metrics(mean, VAL_LOG_METRICS))
        val_metrics = {checkpointing.BEST_METRIC: float(mean["dice"])}
      if do_save:
        ckpt.save(step, state, batches, metrics=val_metrics)
      if step_callback is not None:
        step_callback(step)
      if preemption.should_stop(step):
        if not do_save:
          check_finite(window.first_non_finite())
          ckpt.save(step, state, batches)
        ckpt.wait_until_finished()
        log.log(f"SIGTERM: saved step {step} to {ckpt.directory}; rerun the same "
                      f"command to resume")
        preempted = True
        break
  finally:
    if bar is not None:
      bar.close()
    preemption.restore()
    ckpt.wait_until_finished()
    for h in hooks:
      h.close()  # stops a profiler trace still running
    writer.close()
  loop_s = time.perf_counter() - loop_start
  if not preempted and jax.process_index() == 0:
    outputs.plot_training_curve(os.path.join(workdir, writers.HISTORY),
                                  os.path.join(workdir, "training_curve.png"))
  ckpt.close()
  return TrainResult(state=state, train_iter=batches, step=step, preempted=preempted,
                     last_val=last_val, compile_s=compile_s, loop_s=loop_s)
