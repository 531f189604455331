"""Training losses: segmentation (BCE/CE + soft Dice) and SGE edge supervision.

All functions are pure jax.numpy, jittable, and compute in float32 whatever the logits' dtype
(bf16 logits are upcast first). Log-probabilities come from `log_sigmoid` / `log_softmax`, so
large logits never produce inf/NaN. Each loss is computed per image and then averaged over the
batch (optionally over valid images only).

Definitions (per image, N pixels, `p` = probability, `y` = target in [0, 1]):

* Soft Dice loss: `1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s)` with smoothing `s = 1`, so an
  empty target predicted empty costs ~0.
* Binary segmentation (`num_classes == 1`, logits `(B, H, W, 1)`, sigmoid):
  `mean BCE + soft Dice` of the foreground.
* Multi-class (`num_classes >= 2`, logits `(B, H, W, C)`, softmax): `mean CE + mean over the
  foreground classes 1..C-1 of the soft Dice loss` (background is left out of the Dice term,
  as in nnU-Net; it is in the CE).
* Edge loss (logits `(B, H, W, 1)`, target the boundary band from `boundary_target`):
  class-balanced BCE + soft Dice. With `beta = sum(y) / N` the fraction of boundary pixels in
  the image, the balanced BCE is
  `0.5 * sum(y * -log p) / sum(y) + 0.5 * sum((1-y) * -log(1-p)) / sum(1-y)`,
  i.e. plain per-pixel BCE weighted by `1 / (2 beta)` on boundary pixels and
  `1 / (2 (1 - beta))` elsewhere (HED's `(1 - beta) : beta` balance, normalised so that it
  equals plain mean BCE when beta = 1/2). If an image has no
  boundary pixel (or no background pixel), only the present class's mean is used.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

DICE_SMOOTH = 1.0


def _check_seg_shapes(logits, mask, num_classes: int, name: str) -> None:
  if int(num_classes) != num_classes or num_classes < 1:
    raise ValueError(f'losses.{name}: num_classes must be a positive integer, got '
                     f'{num_classes!r}')
  if logits.ndim != 4:
    raise ValueError(f'losses.{name}: logits must be (B, H, W, C), got shape {logits.shape}')
  expected_c = 1 if num_classes == 1 else num_classes
  if logits.shape[-1] != expected_c:
    raise ValueError(f'losses.{name}: logits have {logits.shape[-1]} channels, expected '
                     f'{expected_c} for num_classes={num_classes}')
  if tuple(mask.shape) != tuple(logits.shape[:3]):
    raise ValueError(f"losses.{name}: batch['mask'] must be (B, H, W) = {logits.shape[:3]}, "
                     f'got {mask.shape}')


def _soft_dice_loss(prob, target, axes=(1, 2)):
  """`1 - soft Dice` reduced over `axes`; prob, target float32 of the same shape."""
  inter = jnp.sum(prob * target, axis=axes)
  denom = jnp.sum(prob, axis=axes) + jnp.sum(target, axis=axes)
  return 1.0 - (2.0 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)


def _batch_mean(per_image, weights):
  """Mean of `(B,)` values, over images with weight 1 if `weights` is given."""
  if weights is None:
    return jnp.mean(per_image)
  return jnp.sum(per_image * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _segmentation_terms(logits, mask, num_classes: int, weights=None) -> dict[str, jax.Array]:
  x = jnp.asarray(logits).astype(jnp.float32)
  if num_classes == 1:
    x = x[..., 0]
    y = (mask != 0).astype(jnp.float32)
    bce = -(y * jax.nn.log_sigmoid(x) + (1.0 - y) * jax.nn.log_sigmoid(-x))
    xent = jnp.mean(bce, axis=(1, 2))
    dice = _soft_dice_loss(jax.nn.sigmoid(x), y)
  else:
    logp = jax.nn.log_softmax(x, axis=-1)
    onehot = jax.nn.one_hot(mask, num_classes, dtype=jnp.float32)
    xent = -jnp.mean(jnp.sum(onehot * logp, axis=-1), axis=(1, 2))
    dice = jnp.mean(_soft_dice_loss(jnp.exp(logp)[..., 1:], onehot[..., 1:]), axis=-1)
  xent = _batch_mean(xent, weights)
  dice = _batch_mean(dice, weights)
  return {'xent': xent, 'dice': dice, 'loss': xent + dice}


def segmentation_loss(logits, mask, num_classes: int, valid=None) -> jax.Array:
  """BCE + soft Dice (binary) or CE + foreground soft Dice (multi-class); see module docstring.

  Args:
    logits: `(B, H, W, 1)` (num_classes == 1) or `(B, H, W, C)`, C == num_classes; any float.
    mask: `(B, H, W)` integer labels (binary: nonzero is foreground; multi-class: in [0, C);
      values cannot be checked under jit: a label outside [0, C) gets an all-zero one-hot row
      and so contributes nothing to the CE or Dice targets).
    num_classes: 1 for binary (sigmoid), else the number of classes incl. background (softmax).
    valid: optional `(B,)` bool/float; images with 0 are left out of the batch mean.

  Returns:
    float32 scalar.

  Raises:
    ValueError: shapes inconsistent with num_classes.
  """
  _check_seg_shapes(logits, mask, num_classes, 'segmentation_loss')
  weights = None if valid is None else jnp.asarray(valid).astype(jnp.float32)
  return _segmentation_terms(logits, mask, num_classes, weights)['loss']


def _edge_terms(edge_logits, edge_target, weights=None) -> dict[str, jax.Array]:
  x = jnp.asarray(edge_logits).astype(jnp.float32)[..., 0]
  y = jnp.asarray(edge_target).astype(jnp.float32)
  n_pos = jnp.sum(y, axis=(1, 2))
  n_neg = jnp.sum(1.0 - y, axis=(1, 2))
  pos_mean = jnp.sum(y * -jax.nn.log_sigmoid(x), axis=(1, 2)) / jnp.maximum(n_pos, 1e-6)
  neg_mean = jnp.sum((1.0 - y) * -jax.nn.log_sigmoid(-x), axis=(1, 2)) / jnp.maximum(n_neg, 1e-6)
  has_pos = (n_pos > 0).astype(jnp.float32)
  has_neg = (n_neg > 0).astype(jnp.float32)
  bce = (has_pos * pos_mean + has_neg * neg_mean) / jnp.maximum(has_pos + has_neg, 1.0)
  dice = _soft_dice_loss(jax.nn.sigmoid(x), y)
  bce = _batch_mean(bce, weights)
  dice = _batch_mean(dice, weights)
  return {'bce': bce, 'dice': dice, 'loss': bce + dice}


def edge_loss(edge_logits, edge_target, valid=None) -> jax.Array:
  """Class-balanced BCE + soft Dice of SGE's edge logits against the boundary band.

  Args:
    edge_logits: `(B, H, W, 1)`, any float dtype.
    edge_target: `(B, H, W)` in [0, 1] (uint8 band from `boundary_target`, or soft float).
    valid: optional `(B,)` bool/float; images with 0 are left out of the batch mean.

  Returns:
    float32 scalar (formula in the module docstring).

  Raises:
    ValueError: shapes do not match.
  """
  if edge_logits.ndim != 4 or edge_logits.shape[-1] != 1:
    raise ValueError(f"losses.edge_loss: outputs['edge_logits'] must be (B, H, W, 1), got "
                     f'{edge_logits.shape}')
  if tuple(edge_target.shape) != tuple(edge_logits.shape[:3]):
    raise ValueError(f"losses.edge_loss: batch['edge'] must be (B, H, W) = "
                     f'{edge_logits.shape[:3]}, got {edge_target.shape}')
  weights = None if valid is None else jnp.asarray(valid).astype(jnp.float32)
  return _edge_terms(edge_logits, edge_target, weights)['loss']


def total_loss(outputs: Mapping[str, Any], batch: Mapping[str, Any], *, num_classes: int,
               lambda_edge: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`seg + lambda_edge * edge` for SGDCNet outputs; jittable.

  Args:
    outputs: `{'logits': (B, H, W, C), 'edge_logits': (B, H, W, 1) (optional)}`.
    batch: `{'mask': (B, H, W) int, 'edge': (B, H, W) uint8/float (needed when outputs has
      'edge_logits'), 'valid': (B,) bool (optional; padded images are ignored)}`.
    num_classes: 1 for binary, else number of classes including background.
    lambda_edge: weight of the edge loss.

  Returns:
    `(loss, aux)`: loss a float32 scalar; aux a dict of float32 scalars 'loss', 'seg_loss',
    'seg_xent', 'seg_dice', 'edge_loss', 'edge_bce', 'edge_dice' (edge terms are 0 when outputs
    has no 'edge_logits').

  Raises:
    ValueError: missing keys or inconsistent shapes.
  """
  if 'logits' not in outputs:
    raise ValueError(f"losses.total_loss: outputs lack 'logits' (keys: {sorted(outputs)})")
  if 'mask' not in batch:
    raise ValueError(f"losses.total_loss: batch lacks 'mask' (keys: {sorted(batch)})")
  logits, mask = outputs['logits'], batch['mask']
  _check_seg_shapes(logits, mask, num_classes, 'total_loss')
  weights = batch.get('valid')
  weights = None if weights is None else jnp.asarray(weights).astype(jnp.float32)
  seg = _segmentation_terms(logits, mask, num_classes, weights)
  zero = jnp.zeros((), jnp.float32)
  edge = {'bce': zero, 'dice': zero, 'loss': zero}
  if outputs.get('edge_logits') is not None:
    if 'edge' not in batch:
      raise ValueError("losses.total_loss: outputs have 'edge_logits' but batch lacks 'edge'")
    edge_logits = outputs['edge_logits']
    if edge_logits.ndim != 4 or edge_logits.shape[-1] != 1:
      raise ValueError(f"losses.total_loss: outputs['edge_logits'] must be (B, H, W, 1), got "
                       f'{edge_logits.shape}')
    if tuple(batch['edge'].shape) != tuple(edge_logits.shape[:3]):
      raise ValueError(f"losses.total_loss: batch['edge'] must be (B, H, W) = "
                       f"{edge_logits.shape[:3]}, got {batch['edge'].shape}")
    edge = _edge_terms(edge_logits, batch['edge'], weights)
  loss = seg['loss'] + jnp.asarray(lambda_edge, jnp.float32) * edge['loss']
  aux = {'loss': loss, 'seg_loss': seg['loss'], 'seg_xent': seg['xent'], 'seg_dice': seg['dice'],
         'edge_loss': edge['loss'], 'edge_bce': edge['bce'], 'edge_dice': edge['dice']}
  return loss, aux
