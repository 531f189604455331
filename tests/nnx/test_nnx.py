"""The NNX faces (sgdc_jax.nnx) against the linen modules they wrap: same outputs and
BatchNorm updates for the same weights, modes, drop path keys, a jitted training loop whose
state and traces stay fixed, orbax round trips, and the opt-in block diagnostics."""
import sgdc_jax  # noqa: F401  (first: sets the XLA CPU flag before JAX starts)

import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from sgdc_jax import nnx as sgdc_nnx
from sgdc_jax.models.sgdc_net import SGDCNet as LinenSGDCNet
from sgdc_jax.modules.sgdc import SGDC as LinenSGDC, recording_diagnostics
from sgdc_jax.modules.sge import SGE as LinenSGE

_rng = np.random.default_rng(0)
DEEP = jnp.asarray(_rng.normal(size=(2, 4, 4, 48)), jnp.float32)
SHALLOW = jnp.asarray(_rng.normal(size=(2, 16, 16, 24)), jnp.float32)
X = jnp.asarray(_rng.normal(size=(2, 16, 16, 32)), jnp.float32)
GUIDE = jnp.asarray(_rng.normal(size=(2, 16, 16, 16)), jnp.float32)
SGE_FIELDS = dict(bottleneck=32, mid=32, guide_channels=16)
# Layer scales of 1 so that both residual branches (and dropping them) show in the output.
SGDC_FIELDS = dict(dim=32, guide_channels=16, layer_scale_init=1.0)


def linen_variables(model: nnx.Module) -> dict:
  """The linen variables dict held by an sgdc_jax.nnx module."""
  out = {'params': nnx.to_pure_dict(nnx.state(model.linen, nnx.Param))}
  stats = nnx.to_pure_dict(nnx.state(model.linen, nnx.BatchStat))
  return {**out, 'batch_stats': stats} if stats else out


def n_leaves(*nodes) -> int:
  return sum(len(jax.tree.leaves(nnx.state(n))) for n in nodes)


def assert_trees_equal(a, b, tol=1e-6):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v),
                                                       rtol=tol, atol=tol), a, b)


def test_sge_equals_linen_in_eval_and_train_with_the_batch_stats_update():
  sge = sgdc_nnx.SGE(DEEP, SHALLOW, rngs=nnx.Rngs(0), **SGE_FIELDS)
  linen, before = LinenSGE(**SGE_FIELDS), linen_variables(sge)
  assert sge.use_running_average
  assert_trees_equal(sge(DEEP, SHALLOW), linen.apply(before, DEEP, SHALLOW, train=False))
  assert_trees_equal(linen_variables(sge), before)  # eval leaves the statistics alone

  sge.train()
  out = sge(DEEP, SHALLOW)
  ref, updates = linen.apply(before, DEEP, SHALLOW, train=True, mutable=['batch_stats'])
  assert_trees_equal(out, ref)
  assert_trees_equal(linen_variables(sge)['batch_stats'], updates['batch_stats'])
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before['batch_stats'],
                       updates['batch_stats'])
  assert all(jax.tree.leaves(moved))
  sge.eval()
  assert_trees_equal(sge(DEEP, SHALLOW), linen.apply(
      {**before, 'batch_stats': updates['batch_stats']}, DEEP, SHALLOW, train=False))


def test_sgdc_equals_linen_and_drop_path_masks_only_in_train_mode():
  block = sgdc_nnx.SGDC(X, GUIDE, rngs=nnx.Rngs(1), drop_path=0.5, **SGDC_FIELDS)
  expected = LinenSGDC(drop_path=0.5, **SGDC_FIELDS).apply(linen_variables(block), X, GUIDE)
  first, second = block(X, GUIDE), block(X, GUIDE)
  np.testing.assert_allclose(np.asarray(first), np.asarray(expected), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(first), np.asarray(second))  # no mask in eval

  block.train()
  assert not block.deterministic
  a, b = np.asarray(block(X, GUIDE)), np.asarray(block(X, GUIDE))
  assert np.abs(a - b).max() > 1e-3  # a fresh mask per call
  assert np.abs(a - np.asarray(first)).max() > 1e-3
  block.eval()
  np.testing.assert_array_equal(np.asarray(block(X, GUIDE)), np.asarray(first))

  nodrop = sgdc_nnx.SGDC(X, GUIDE, rngs=nnx.Rngs(1), **SGDC_FIELDS)
  nodrop.train()  # drop path is the only train-mode behaviour of the block
  np.testing.assert_allclose(np.asarray(nodrop(X, GUIDE)), np.asarray(first), rtol=1e-6,
                             atol=1e-6)


def test_drop_path_keys_come_from_the_construction_rngs():
  def train_out(dropout_seed):
    block = sgdc_nnx.SGDC(X, GUIDE, rngs=nnx.Rngs(params=0, dropout=dropout_seed),
                          drop_path=0.5, **SGDC_FIELDS)
    block.train()
    return linen_variables(block), np.asarray(block(X, GUIDE))
  (params_a, a), (params_b, b), (_, a_again) = train_out(1), train_out(2), train_out(1)
  assert_trees_equal(params_a, params_b)  # same 'params' stream, same weights
  np.testing.assert_array_equal(a, a_again)
  assert np.abs(a - b).max() > 1e-3


@pytest.mark.slow  # > 30 s on 2 CPU cores
def test_sgdcnet_equals_linen_in_eval_and_train():
  images = jnp.asarray(_rng.normal(size=(2, 64, 64, 3)), jnp.float32)
  fields = dict(encoder='resnet18', decoder_channels=32, n_blocks=1)
  net = sgdc_nnx.SGDCNet(images, rngs=nnx.Rngs(2), **fields)
  linen, before = LinenSGDCNet(**fields), linen_variables(net)
  evaluated = linen.apply(before, images, train=False)
  assert_trees_equal(net(images), evaluated)
  net.train()
  assert not net.use_running_average and not net.deterministic
  out = net(images)
  ref, updates = linen.apply(before, images, train=True, mutable=['batch_stats'])
  assert_trees_equal(out, ref)
  assert_trees_equal(linen_variables(net)['batch_stats'], updates['batch_stats'])
  assert not np.allclose(np.asarray(out['logits']), np.asarray(evaluated['logits']))
  with pytest.raises(ValueError, match='use_running_average'):
    nnx.view(net, deterministic=True)(images)


def test_nnx_view_sets_the_modes_without_touching_the_model():
  block = sgdc_nnx.SGDC(X, GUIDE, rngs=nnx.Rngs(1), **SGDC_FIELDS)
  sge = sgdc_nnx.SGE(DEEP, SHALLOW, rngs=nnx.Rngs(0), **SGE_FIELDS)
  assert not nnx.view(block, deterministic=False).deterministic and block.deterministic
  assert not nnx.view(sge, use_running_average=False).use_running_average
  assert sge.use_running_average


class _Pair(nnx.Module):
  """SGE feeding an SGDC block, as a user's model would."""

  def __init__(self, rngs: nnx.Rngs):
    self.sge = sgdc_nnx.SGE(DEEP, SHALLOW, rngs=rngs, **SGE_FIELDS)
    self.block = sgdc_nnx.SGDC(X, GUIDE, rngs=rngs, drop_path=0.2, **SGDC_FIELDS)

  def __call__(self, deep, shallow, x):
    edge_logits, guidance = self.sge(deep, shallow)
    return edge_logits, self.block(x, guidance)


@pytest.mark.slow  # > 30 s on 2 CPU cores
def test_jitted_training_loop_keeps_state_and_trace_fixed():
  model = _Pair(nnx.Rngs(3))
  model.train()
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  traces = []

  @nnx.jit
  def train_step(model, optimizer, deep, shallow, x):
    traces.append(1)  # runs once per trace

    def loss_fn(model):
      edge_logits, y = model(deep, shallow, x)
      return jnp.mean(jnp.square(edge_logits)) + jnp.mean(jnp.square(y - 0.5 * x))
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  leaves = n_leaves(model, optimizer)
  start = linen_variables(model.sge)
  losses, stats = [], []
  for _ in range(4):
    losses.append(float(train_step(model, optimizer, DEEP, SHALLOW, X)))
    stats.append(linen_variables(model.sge)['batch_stats'])
    assert n_leaves(model, optimizer) == leaves
  assert len(traces) == 1
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats[-2], stats[-1])
  assert all(jax.tree.leaves(changed))  # running averages move on every step
  assert not np.allclose(np.asarray(start['params']['edge_head']['kernel']),
                         np.asarray(model.sge.linen.edge_head['kernel'][...]))
  model.eval()  # a mode change is a new static attribute, hence one (and only one) retrace
  train_step(model, optimizer, DEEP, SHALLOW, X)
  assert len(traces) == 2 and n_leaves(model, optimizer) == leaves


def test_checkpoint_round_trip_with_orbax(tmp_path):
  model = _Pair(nnx.Rngs(4))
  model.train()
  model(DEEP, SHALLOW, X)  # moves the BatchNorm statistics and the rng counters
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / 'state', nnx.state(model))
  checkpointer.wait_until_finished()
  expected = model(DEEP, SHALLOW, X)  # the next drop path mask is part of the saved state

  abstract = nnx.eval_shape(lambda: _Pair(nnx.Rngs(9)))
  graphdef, abstract_state = nnx.split(abstract)
  restored = nnx.merge(graphdef, checkpointer.restore(tmp_path / 'state', abstract_state))
  restored.train()
  assert_trees_equal(restored(DEEP, SHALLOW, X), expected)

  fresh = _Pair(nnx.Rngs(9))  # a concrete model with other weights, updated in place
  nnx.update(fresh, checkpointer.restore(tmp_path / 'state', nnx.state(fresh)))
  fresh.train()
  assert_trees_equal(fresh(DEEP, SHALLOW, X), expected)
  model.eval()
  fresh.eval()
  assert_trees_equal(fresh(DEEP, SHALLOW, X), model(DEEP, SHALLOW, X))


def test_block_diagnostics_are_recorded_only_on_request():
  linen = LinenSGDC(**SGDC_FIELDS)
  variables = linen.init(jax.random.key(0), X, GUIDE)
  y, state = linen.apply(variables, X, GUIDE, mutable=True)
  assert 'diagnostics' not in state
  np.testing.assert_array_equal(np.asarray(y), np.asarray(linen.apply(variables, X, GUIDE)))

  with recording_diagnostics():
    _, state = linen.apply(variables, X, GUIDE, mutable=['diagnostics'])
  sown = {k: np.asarray(v[0]) for k, v in state['diagnostics'].items()}
  assert set(sown) == {'input_sq', 'branch1_sq', 'mid_sq', 'branch2_sq'}
  np.testing.assert_allclose(sown['input_sq'], np.sum(np.square(np.asarray(X)), (1, 2, 3)),
                             rtol=1e-5)
  assert all(v.shape == (2,) and np.all(v > 0) for v in sown.values())
  _, state = linen.apply(variables, X, GUIDE, mutable=['diagnostics'])  # off again
  assert 'diagnostics' not in state

  def jitted(v):
    with recording_diagnostics():  # inside the traced function, as sgdc_jax.analysis does
      return linen.apply(v, X, GUIDE, mutable=['diagnostics'])[1]['diagnostics']
  # jit fuses the sums differently: float32 rounding of ~1e4 sums
  assert_trees_equal({k: v[0] for k, v in jax.jit(jitted)(variables).items()}, sown, tol=1e-5)

  # The user's report: a bridged block called with mutable=True gained 4 leaves per call.
  bridged = nnx.bridge.ToNNX(linen, rngs=nnx.Rngs(0)).lazy_init(X, GUIDE)
  leaves = n_leaves(bridged)
  for _ in range(3):
    bridged(X, GUIDE, mutable=True)
  assert n_leaves(bridged) == leaves


def test_import_sgdc_jax_does_not_import_nnx():
  code = ('import sys, sgdc_jax; '
          'print(sorted(m for m in ("flax.nnx", "sgdc_jax.nnx") if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == '[]'


@pytest.mark.slow  # > 30 s on 2 CPU cores
def test_docs_page_training_checkpoint_and_diagnostics_blocks_run():
  """docs/nnx.md after its first block (the README's snippet, run by tests/test_docs.py), on
  the snippet's names at a smaller block size."""
  page = pathlib.Path(__file__).resolve().parents[2] / 'docs' / 'nnx.md'
  blocks = re.findall(r'```python\n(.*?)```', page.read_text(), flags=re.S)
  assert 'sgdc_nnx.SGE(' in blocks[0] and len(blocks) == 4
  x, guidance = jnp.ones((1, 8, 8, 256)), jnp.ones((1, 8, 8, 16))
  namespace = dict(
      sgdc_jax=sgdc_jax, jnp=jnp, nnx=nnx, sgdc_nnx=sgdc_nnx, x=x, guidance=guidance,
      block=sgdc_nnx.SGDC(x, guidance, rngs=nnx.Rngs(1), dim=256, drop_path=0.1),
      net=sgdc_nnx.SGDCNet(jnp.ones((1, 64, 64, 3)), rngs=nnx.Rngs(2), encoder='resnet18',
                           decoder_channels=32))
  for block in blocks[1:]:
    exec(compile(block, str(page), 'exec'), namespace)  # pylint: disable=exec-used
  losses = namespace['losses']
  assert len(losses) == 3 and np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  images = namespace['images']
  assert_trees_equal(namespace['restored'](images), namespace['net'](images))
  assert set(namespace['sq']) == {'input_sq', 'branch1_sq', 'mid_sq', 'branch2_sq'}
  assert all(v.shape == (1,) for v in namespace['sq'].values())
