"""Train state, optimizer and learning-rate schedule.

The state is a plain pytree (``flax.struct``) holding only arrays, so Orbax can save and restore it
and ``sgdc_jax.run.sharding`` can shard it leaf by leaf. The model and the optax transformation are not
stored in it; they are bound into the jitted step with ``functools.partial``.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: int32 scalar, number of optimizer updates applied.
    params: model parameters (float32).
    batch_stats: BatchNorm running statistics (``{}`` when the model has none).
    opt_state: optax state.
    ema_params: exponential moving average of ``params`` (``None`` when EMA is off).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any = None

  def eval_variables(self, use_ema: bool = True) -> dict[str, Any]:
    """Variables for ``model.apply`` at evaluation (EMA parameters when present)."""
    params = self.ema_params if (use_ema and self.ema_params is not None) else self.params
    variables = {"params": params}
    if self.batch_stats:
      variables["batch_stats"] = self.batch_stats
    return variables


def learning_rate_schedule(opt: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to ``opt.learning_rate`` then cosine decay to
  ``opt.learning_rate * opt.min_lr_ratio`` at ``num_steps``."""
  warmup = int(opt.warmup_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=float(opt.learning_rate), warmup_steps=warmup,
      decay_steps=max(int(num_steps), warmup + 1),
      end_value=float(opt.learning_rate) * float(opt.min_lr_ratio))


def create_optimizer(opt: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """AdamW with global-norm clipping (``opt.grad_clip_norm <= 0`` disables clipping).

  Weight decay applies to kernels only (leaves with ndim >= 2), not to biases or norm scales.
  """
  schedule = learning_rate_schedule(opt, num_steps)
  mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  chain = []
  if float(opt.grad_clip_norm) > 0:
    chain.append(optax.clip_by_global_norm(float(opt.grad_clip_norm)))
  chain.append(optax.adamw(schedule, b1=float(opt.b1), b2=float(opt.b2), eps=float(opt.eps),
                           weight_decay=float(opt.weight_decay), mask=mask))
  return optax.chain(*chain)


def create_train_state(variables: dict[str, Any], tx: optax.GradientTransformation,
                       ema: bool) -> TrainState:
  """Initial state from freshly initialised (or pretrained) model variables."""
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params),
                    ema_params=jax.tree.map(jnp.copy, params) if ema else None)
