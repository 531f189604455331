"""Flax NNX faces of SGE, SGDC and SGDCNet: the linen modules (the one copy of the math)
held through `flax.nnx.bridge.ToNNX`, with the mode kept as NNX attributes.

Each class stores the linen module's variables in a `bridge.ToNNX` child named `linen`
(`nnx.Param` for 'params', `nnx.BatchStat` for 'batch_stats', plus the rng streams that feed
drop path), initialised from example inputs. `.train()` / `.eval()` (or `nnx.view`) set
`use_running_average` (BatchNorm) and `deterministic` (drop path), which become the linen
flags `train=` / `deterministic=` on every call; in training the BatchNorm running averages
are updated in place. The linen 'diagnostics' collection is never requested, so calls never
add state (`sgdc_jax.modules.sgdc.recording_diagnostics`).
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
from flax import nnx

from sgdc_jax.models.sgdc_net import SGDCNet as LinenSGDCNet
from sgdc_jax.modules.sgdc import SGDC as LinenSGDC
from sgdc_jax.modules.sge import SGE as LinenSGE


def _bridge(module: nn.Module, rngs: nnx.Rngs, *args: Any, **kwargs: Any) -> nnx.bridge.ToNNX:
  """`module`'s variables as a `ToNNX` child, initialised from example inputs. Its rngs are
  a fork of `rngs`: 'params' (or 'default') initialises, and each call draws fresh keys, so
  drop path ('dropout', else 'params' as linen falls back) differs between calls."""
  return nnx.bridge.lazy_init(nnx.bridge.ToNNX(module, rngs=rngs), *args, **kwargs)


def _mutable(use_running_average: bool) -> Any:
  """The linen `mutable=` of a call: the BatchNorm statistics in training, else nothing."""
  return False if use_running_average else ['batch_stats']


class SGE(nnx.Module):
  """Structural Guidance Extractor (`sgdc_jax.modules.sge.SGE`) as an NNX module.

  `SGE(deep, shallow, rngs=nnx.Rngs(0), guide_channels=16)`: `deep` `(B, Hd, Wd, Cd)` and
  `shallow` `(B, Hs, Ws, Cs)` are example inputs (their channels fix the parameter shapes);
  keywords are the linen module's fields. Eval mode by default (BatchNorm running averages);
  `.train()` normalises with batch statistics and updates the running averages.

  Call: `edge_logits (B, Hs, Ws, 1), guidance (B, Hs, Ws, G) = sge(deep, shallow)`.
  """

  def __init__(self, deep: jax.Array, shallow: jax.Array, *, rngs: nnx.Rngs,
               use_running_average: bool = True, **fields: Any):
    self.use_running_average = use_running_average
    self.linen = _bridge(LinenSGE(**fields), rngs, deep, shallow, train=False)

  def set_view(self, use_running_average: Optional[bool] = None) -> None:
    """Used by `nnx.view(sge, use_running_average=...)`."""
    if use_running_average is not None:
      self.use_running_average = use_running_average

  def __call__(self, deep: jax.Array, shallow: jax.Array) -> tuple[jax.Array, jax.Array]:
    train = not self.use_running_average
    return self.linen(deep, shallow, train=train, mutable=_mutable(self.use_running_average))


class SGDC(nnx.Module):
  """SGDC block (`sgdc_jax.modules.sgdc.SGDC`) as an NNX module.

  `SGDC(x, guidance, rngs=nnx.Rngs(1), dim=256, drop_path=0.1)`: `x` `(B, H, W, dim)` and
  `guidance` `(B, h, w, G)` (None for kernel_source 'pooled'/'none') are example inputs;
  keywords are the linen module's fields. Eval mode by default; `.train()` turns drop path
  on, with keys drawn from the construction `rngs` ('dropout' stream, else its default).

  Call: `y (B, H, W, dim) = block(x, guidance)`.
  """

  def __init__(self, x: jax.Array, guidance: Optional[jax.Array] = None, *, rngs: nnx.Rngs,
               deterministic: bool = True, **fields: Any):
    self.deterministic = deterministic
    self.linen = _bridge(LinenSGDC(**fields), rngs, x, guidance, deterministic=True)

  def set_view(self, deterministic: Optional[bool] = None) -> None:
    """Used by `nnx.view(block, deterministic=...)`."""
    if deterministic is not None:
      self.deterministic = deterministic

  def __call__(self, x: jax.Array, guidance: Optional[jax.Array] = None) -> jax.Array:
    return self.linen(x, guidance, deterministic=self.deterministic, mutable=False)


class SGDCNet(nnx.Module):
  """The segmentation network (`sgdc_jax.models.SGDCNet`) as an NNX module.

  `SGDCNet(images, rngs=nnx.Rngs(2), encoder='resnet18', decoder_channels=32)`: `images`
  `(B, H, W, 3)` is an example input; keywords are the linen module's fields. Eval mode by
  default; `.train()` is the linen `train=True` (batch statistics + running-average update,
  drop path), which covers BatchNorm and drop path together, so `use_running_average` and
  `deterministic` must agree.

  Call: `out = net(images)`, the dict the linen network returns.
  """

  def __init__(self, images: jax.Array, *, rngs: nnx.Rngs, use_running_average: bool = True,
               deterministic: bool = True, **fields: Any):
    self.use_running_average = use_running_average
    self.deterministic = deterministic
    self.linen = _bridge(LinenSGDCNet(**fields), rngs, images, train=False)

  def set_view(self, use_running_average: Optional[bool] = None,
               deterministic: Optional[bool] = None) -> None:
    """Used by `nnx.view(net, use_running_average=..., deterministic=...)`."""
    if use_running_average is not None:
      self.use_running_average = use_running_average
    if deterministic is not None:
      self.deterministic = deterministic

  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    if self.use_running_average != self.deterministic:
      raise ValueError(
          'SGDCNet trains BatchNorm and drop path together (linen train=); got '
          f'use_running_average={self.use_running_average}, '
          f'deterministic={self.deterministic}: use .train() / .eval()')
    train = not self.deterministic
    return self.linen(images, train=train, mutable=_mutable(self.use_running_average))
