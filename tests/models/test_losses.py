"""Tests for sgdc_jax.models.losses against float64 NumPy references."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax.models import losses
from sgdc_jax.ops.boundary import boundary_target


def _np_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def _np_soft_dice_loss(p, y):
  inter = (p * y).sum(axis=(1, 2))
  return 1 - (2 * inter + 1.0) / (p.sum(axis=(1, 2)) + y.sum(axis=(1, 2)) + 1.0)


def _np_binary(logits, mask):
  x = logits[..., 0].astype(np.float64)
  y = (mask != 0).astype(np.float64)
  bce = -(y * _np_log_sigmoid(x) + (1 - y) * _np_log_sigmoid(-x)).mean()
  return bce + _np_soft_dice_loss(1 / (1 + np.exp(-x)), y).mean()


def _np_multiclass(logits, mask, c):
  x = logits.astype(np.float64)
  x = x - x.max(-1, keepdims=True)
  logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
  onehot = np.eye(c)[mask]
  ce = -(onehot * logp).sum(-1).mean()
  p = np.exp(logp)
  dice = np.mean([_np_soft_dice_loss(p[..., k], onehot[..., k]).mean() for k in range(1, c)])
  return ce + dice


def _np_edge(logits, target):
  x = logits[..., 0].astype(np.float64)
  y = target.astype(np.float64)
  out = []
  for xi, yi in zip(x, y):
    pos = -(yi * _np_log_sigmoid(xi)).sum() / yi.sum()
    neg = -((1 - yi) * _np_log_sigmoid(-xi)).sum() / (1 - yi).sum()
    out.append(0.5 * pos + 0.5 * neg)
  return np.mean(out) + _np_soft_dice_loss(1 / (1 + np.exp(-x)), y).mean()


def _square_masks(b=2, n=16):
  mask = np.zeros((b, n, n), np.int32)
  mask[:, 4:11, 3:12] = 1
  mask[1, 2:5, 2:5] = 0
  return mask


def test_binary_matches_numpy_reference():
  rng = np.random.default_rng(0)
  mask = _square_masks()
  logits = rng.normal(scale=3.0, size=mask.shape + (1,)).astype(np.float32)
  got = losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(mask), 1)
  assert got.dtype == jnp.float32
  assert float(got) == pytest.approx(_np_binary(logits, mask), rel=1e-5)


def test_multiclass_matches_numpy_reference():
  rng = np.random.default_rng(1)
  mask = rng.integers(0, 3, size=(2, 12, 12)).astype(np.int32)
  logits = rng.normal(scale=2.0, size=(2, 12, 12, 3)).astype(np.float32)
  got = losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(mask), 3)
  assert float(got) == pytest.approx(_np_multiclass(logits, mask, 3), rel=1e-5)


def test_edge_loss_matches_balanced_formula():
  rng = np.random.default_rng(2)
  target = boundary_target(_square_masks(), width=2)
  logits = rng.normal(size=target.shape + (1,)).astype(np.float32)
  got = losses.edge_loss(jnp.asarray(logits), jnp.asarray(target))
  assert float(got) == pytest.approx(_np_edge(logits, target), rel=1e-5)
  # The balance: a constant logit gives 0.5 * (-log s) + 0.5 * (-log(1 - s)) in the BCE part
  # whatever the fraction of boundary pixels.
  x0 = 0.7
  s = 1 / (1 + np.exp(-x0))
  const = jnp.full(target.shape + (1,), x0, jnp.float32)
  bce = losses._edge_terms(const, jnp.asarray(target))['bce']
  assert float(bce) == pytest.approx(0.5 * -np.log(s) + 0.5 * -np.log(1 - s), rel=1e-5)


def test_perfect_confident_prediction_is_near_zero():
  mask = _square_masks()
  logits = np.where(mask[..., None] > 0, 30.0, -30.0).astype(np.float32)
  assert float(losses.segmentation_loss(logits, mask, 1)) < 1e-3
  labels = mask.copy()
  labels[:, :, 9:] *= 2
  onehot = np.eye(3)[labels]
  assert float(losses.segmentation_loss((onehot * 60 - 30).astype(np.float32), labels, 3)) < 1e-3
  edge = boundary_target(mask, width=2)
  e_logits = np.where(edge[..., None] > 0, 30.0, -30.0).astype(np.float32)
  assert float(losses.edge_loss(e_logits, edge)) < 1e-3
  # A wrong confident prediction is far from zero.
  assert float(losses.segmentation_loss(-logits, mask, 1)) > 10


@pytest.mark.parametrize('num_classes', [1, 3])
def test_gradient_sign(num_classes):
  mask = _square_masks()
  if num_classes == 3:
    mask = mask * 2
  c = 1 if num_classes == 1 else 3
  logits = jnp.zeros(mask.shape + (c,), jnp.float32)
  g = jax.grad(lambda l: losses.segmentation_loss(l, jnp.asarray(mask), num_classes))(logits)
  fg = mask > 0
  true_c = 0 if num_classes == 1 else 2
  # Raising the true class's logit on a foreground pixel lowers the loss, and on a
  # background pixel (binary) raising the foreground logit raises it.
  assert np.all(np.asarray(g[..., true_c])[fg] < 0)
  if num_classes == 1:
    assert np.all(np.asarray(g[..., 0])[~fg] > 0)
  else:
    assert np.all(np.asarray(g[..., 0])[~fg] < 0)
  edge = boundary_target(mask, width=2)
  ge = jax.grad(lambda l: losses.edge_loss(l, jnp.asarray(edge)))(
      jnp.zeros(edge.shape + (1,), jnp.float32))
  assert np.all(np.asarray(ge[..., 0])[edge > 0] < 0)
  assert np.all(np.asarray(ge[..., 0])[edge == 0] > 0)


def test_bf16_and_extreme_logits_stay_finite_fp32():
  mask = _square_masks()
  logits = jnp.asarray(np.where(mask[..., None] > 0, -1e4, 1e4), jnp.bfloat16)
  loss, aux = losses.total_loss({'logits': logits, 'edge_logits': logits},
                                {'mask': mask, 'edge': boundary_target(mask)},
                                num_classes=1, lambda_edge=1.0)
  assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
  assert all(v.dtype == jnp.float32 and np.isfinite(float(v)) for v in aux.values())
  g = jax.grad(lambda l: losses.segmentation_loss(l, jnp.asarray(mask), 1))(logits)
  assert np.all(np.isfinite(np.asarray(g, np.float32)))
  # Edge target with no boundary at all (empty mask) is handled.
  empty = np.zeros((1, 8, 8), np.uint8)
  assert np.isfinite(float(losses.edge_loss(jnp.zeros((1, 8, 8, 1)), empty)))


def test_total_loss_jit_aux_and_edge_target_width():
  rng = np.random.default_rng(4)
  mask = jnp.asarray(_square_masks())
  width = 3
  edge = boundary_target(mask, width=width, xp=jnp)
  # Band across a straight edge is `width` pixels: row 7 of image 0 is foreground in columns
  # 3..11; a 4x4 window (2 before, 1 after) straddles the edges from x = 2..4 and 11..13.
  row = np.asarray(edge[0, 7])
  np.testing.assert_array_equal(np.flatnonzero(row), [2, 3, 4, 11, 12, 13])
  outputs = {'logits': jnp.asarray(rng.normal(size=(2, 16, 16, 1)), jnp.float32),
             'edge_logits': jnp.asarray(rng.normal(size=(2, 16, 16, 1)), jnp.float32)}
  batch = {'mask': mask, 'edge': edge}
  fn = jax.jit(lambda o, b: losses.total_loss(o, b, num_classes=1, lambda_edge=0.5))
  loss, aux = fn(outputs, batch)
  assert set(aux) >= {'loss', 'seg_loss', 'edge_loss'}
  seg = losses.segmentation_loss(outputs['logits'], mask, 1)
  edg = losses.edge_loss(outputs['edge_logits'], edge)
  assert float(aux['seg_loss']) == pytest.approx(float(seg), rel=1e-6)
  assert float(aux['edge_loss']) == pytest.approx(float(edg), rel=1e-6)
  assert float(loss) == pytest.approx(float(seg) + 0.5 * float(edg), rel=1e-6)
  assert float(aux['loss']) == float(loss)
  # Without edge logits ('none' kernel source) the edge loss is 0 and 'edge' is not needed.
  loss2, aux2 = losses.total_loss({'logits': outputs['logits']}, {'mask': mask},
                                  num_classes=1, lambda_edge=0.5)
  assert float(aux2['edge_loss']) == 0.0 and float(loss2) == pytest.approx(float(seg), rel=1e-6)


def test_valid_weights_ignore_padded_images():
  rng = np.random.default_rng(5)
  mask = _square_masks(b=3)
  logits = rng.normal(size=(3, 16, 16, 1)).astype(np.float32)
  padded = {'mask': mask, 'valid': np.array([True, True, False])}
  loss, _ = losses.total_loss({'logits': logits}, padded, num_classes=1, lambda_edge=1.0)
  ref = losses.segmentation_loss(logits[:2], mask[:2], 1)
  assert float(loss) == pytest.approx(float(ref), rel=1e-6)


def test_bad_shapes_raise():
  mask = np.zeros((2, 8, 8), np.int32)
  with pytest.raises(ValueError, match='channels'):
    losses.segmentation_loss(jnp.zeros((2, 8, 8, 2)), mask, 1)
  with pytest.raises(ValueError, match="batch\\['mask'\\]"):
    losses.segmentation_loss(jnp.zeros((2, 8, 9, 1)), mask, 1)
  with pytest.raises(ValueError, match="lacks 'edge'"):
    losses.total_loss({'logits': jnp.zeros((2, 8, 8, 1)), 'edge_logits': jnp.zeros((2, 8, 8, 1))},
                      {'mask': mask}, num_classes=1, lambda_edge=1.0)
  with pytest.raises(ValueError, match="batch\\['edge'\\]"):
    losses.edge_loss(jnp.zeros((2, 8, 8, 1)), np.zeros((2, 4, 4)))
