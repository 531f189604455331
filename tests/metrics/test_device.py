"""Tests of sgdc_jax.metrics.device: jitted Dice/IoU counts agree with the NumPy metrics."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax import metrics

@pytest.mark.parametrize('num_classes', [1, 4])
def test_device_dice_iou_matches_numpy(num_classes):
  rng = np.random.default_rng(num_classes)
  b, h, w = 5, 16, 16
  c = 1 if num_classes == 1 else num_classes
  mask = rng.integers(0, max(num_classes, 2), size=(b, h, w)).astype(np.int32)
  logits = rng.normal(size=(b, h, w, c)).astype(np.float32)
  mask[1] = 0                                 # empty target
  logits[1] = -5.0                            # and empty prediction (binary: both empty)
  if num_classes > 1:
    logits[1, ..., 0] = 5.0
  valid = np.array([True, True, True, True, False])
  fn = jax.jit(lambda l, m, v: metrics.device_dice_iou(l, m, num_classes, v))
  counts = jax.tree.map(np.asarray, fn(jnp.asarray(logits), jnp.asarray(mask), valid))
  assert int(counts['n_images']) == 4
  pred = (logits[..., 0] > 0) if num_classes == 1 else np.argmax(logits, -1)
  per_image = [metrics.image_metrics(pred[i], mask[i], num_classes) for i in range(4)]
  summary = metrics.summarize(per_image)
  res = metrics.dice_iou_from_counts(counts)
  assert float(res['dice']) == pytest.approx(summary['mean']['dice'], abs=1e-6)
  assert float(res['iou']) == pytest.approx(summary['mean']['iou'], abs=1e-6)
  # Global (pixel-pooled) scores from the counts.
  classes = [1] if num_classes == 1 else range(1, num_classes)
  g = []
  for j, cl in enumerate(classes):
    pc = (pred[:4] != 0) if num_classes == 1 else pred[:4] == cl
    tc = (mask[:4] != 0) if num_classes == 1 else mask[:4] == cl
    inter = np.sum(pc & tc)
    assert int(counts['intersection'][j]) == inter
    g.append(2 * inter / (pc.sum() + tc.sum()))
  assert float(res['dice_global']) == pytest.approx(np.mean(g), abs=1e-9)
  # Jax inputs give the same answer (float32).
  res_j = metrics.dice_iou_from_counts(fn(jnp.asarray(logits), jnp.asarray(mask), valid))
  assert float(res_j['dice']) == pytest.approx(float(res['dice']), abs=1e-6)
