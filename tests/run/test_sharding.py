"""Mesh/sharding tests: partition rules, and 8 simulated CPU devices == 1 device."""

import collections
import json
import os
import subprocess
import sys
import textwrap

import sgdc_jax  # noqa: F401  (XLA flags before jax)
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sgdc_jax.run import sharding as shd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A toy network with the features that matter for sharding equivalence: convs, BatchNorm
# (statistics over the global batch), dropout (rng folded per step) and a per-pixel loss.
TOY = textwrap.dedent("""
    import functools
    import flax.linen as nn
    import jax, jax.numpy as jnp, numpy as np, optax, ml_collections
    from sgdc_jax.run import sharding as shd, train, train_state as ts

    class Toy(nn.Module):
      @nn.compact
      def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3), use_bias=False)(x)  # no bias before BN (zero gradient)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.Dropout(0.2, deterministic=not train)(nn.relu(x))
        x = nn.Conv(64, (1, 1))(x)
        return {'logits': nn.Conv(1, (3, 3))(nn.relu(x))}

    def toy_loss(outputs, batch):
      logits = outputs['logits'][..., 0]
      loss = optax.sigmoid_binary_cross_entropy(logits, batch['mask'].astype(jnp.float32)).mean()
      return loss, {'seg': loss}

    OPT = ml_collections.ConfigDict(dict(learning_rate=1e-2, weight_decay=1e-4, b1=0.9,
        b2=0.999, eps=1e-8, warmup_steps=1, min_lr_ratio=0.1, grad_clip_norm=1.0, ema_decay=0.9))

    def toy_batches(n, b, s=16):
      rng = np.random.default_rng(0)
      for _ in range(n):
        img = rng.normal(size=(b, s, s, 3)).astype(np.float32)
        yield {'image': img, 'mask': (img[..., 0] > 0.3).astype(np.int32)}

    def run_toy(mesh, steps=4, b=8, fsdp=False):
      model = Toy()
      tx = ts.create_optimizer(OPT, steps)
      init = lambda: ts.create_train_state(
          model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False), tx, ema=True)
      state, shardings = shd.create_sharded_state(init, mesh, fsdp=fsdp, min_size=64)
      step = functools.partial(train.train_step, apply_fn=model.apply, loss_fn=toy_loss, tx=tx,
                               schedule=ts.learning_rate_schedule(OPT, steps), ema_decay=0.9,
                               seed=3)
      p_step = train.jit_train_step(step, shardings, mesh)
      losses = []
      for batch in toy_batches(steps, b):
        state, m = p_step(state, shd.host_to_global(batch, mesh))
        losses.append(float(m['loss']))
      return state, shardings, losses
""")


class _CountingIterator:
  """Grain-like iterator of batches {'x': [[i]]} with a {'next': i} state and a close()."""

  def __init__(self, n):
    self.i, self.n, self.closed = 0, n, False

  def __next__(self):
    if self.i == self.n:
      raise StopIteration
    self.i += 1
    return {'x': np.array([[self.i - 1]], np.float32)}

  def get_state(self):
    return {'next': self.i}

  def set_state(self, state):
    self.i = state['next']

  def close(self):
    self.closed = True


def test_device_prefetcher_order_state_and_close():
  mesh = shd.make_mesh()
  source = _CountingIterator(5)
  batches = shd.prefetch_to_device(source, mesh, size=2)
  assert float(batches.peek()['x'][0, 0]) == 0      # peek does not consume
  assert float(next(batches)['x'][0, 0]) == 0
  assert source.i == 3                                # two batches queued ahead
  # The state is that of the next batch this object returns, not of the source's position.
  assert json.loads(batches.get_state()) == {'next': 1}
  assert [float(b['x'][0, 0]) for b in batches] == [1, 2, 3, 4]
  batches.close()
  assert source.closed and batches._queue == collections.deque()  # pylint: disable=protected-access


def test_leaf_spec_rules():
  assert shd.leaf_spec((3, 3, 16, 64), 8, True, 100) == P(None, None, None, "data")
  assert shd.leaf_spec((64, 3, 3, 12), 8, True, 100) == P("data", None, None, None)
  assert shd.leaf_spec((64,), 8, True, 100) == P()            # too small
  assert shd.leaf_spec((3, 3, 5, 7), 8, True, 1) == P()       # nothing divisible
  assert shd.leaf_spec((3, 3, 16, 64), 8, False, 1) == P()    # fsdp off
  assert shd.leaf_spec((), 8, True, 0) == P()                 # scalar


def test_make_mesh_errors():
  with pytest.raises(ValueError, match="mesh.data"):
    shd.make_mesh(jax.device_count() + 1)
  mesh = shd.make_mesh(-1)
  assert mesh.axis_names == ("data",) and mesh.shape["data"] == jax.device_count()


def test_host_to_global_rejects_indivisible_batch():
  mesh = shd.make_mesh(1)
  out = shd.host_to_global({"x": np.arange(6, dtype=np.float32).reshape(3, 2)}, mesh)
  np.testing.assert_array_equal(np.asarray(out["x"]), np.arange(6).reshape(3, 2))


EIGHT = TOY + textwrap.dedent("""
    import json
    assert jax.device_count() == 8, jax.device_count()
    ref, _, ref_losses = run_toy(shd.make_mesh(1))
    out = {'ref_losses': ref_losses}
    for fsdp in (False, True):
      mesh = shd.make_mesh(8)
      st, shardings, losses = run_toy(mesh, fsdp=fsdp)
      diffs = jax.tree.leaves(jax.tree.map(
          lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
          (st.params, st.batch_stats, st.ema_params), (ref.params, ref.batch_stats, ref.ema_params)))
      kernel = st.params['Conv_1']['kernel']
      out[f'fsdp={fsdp}'] = {'max_diff': max(diffs), 'losses': losses,
                             'kernel_spec': str(kernel.sharding.spec),
                             'kernel_shards': len({str(s.index) for s in kernel.addressable_shards})}
    print('RESULT' + json.dumps(out))
""")


def _run(script: str, devices: int, timeout: int = 300) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  code = "import sgdc_jax\n" + script
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        timeout=timeout, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  return json.loads(line[len("RESULT"):])


def test_eight_devices_match_one_device():
  out = _run(EIGHT, devices=8)
  for fsdp in (False, True):
    r = out[f"fsdp={fsdp}"]
    assert r["max_diff"] < 1e-5, (fsdp, r)
    np.testing.assert_allclose(r["losses"], out["ref_losses"], rtol=1e-5, atol=1e-6)
  # The loss must actually move (the comparison is not between two untouched states).
  assert out["ref_losses"][-1] != out["ref_losses"][0]
  # FSDP really splits the (1, 1, 8, 64) kernel over the 8 devices; without it, replicated.
  assert out["fsdp=True"]["kernel_spec"] == str(P(None, None, None, "data"))
  assert out["fsdp=True"]["kernel_shards"] == 8
  assert out["fsdp=False"]["kernel_shards"] == 1
