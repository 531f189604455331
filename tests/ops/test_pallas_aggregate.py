"""The fused softmax + aggregation Pallas kernel, run in interpret mode on CPU.

Values and gradients against `softmax` + `aggregate_unfold` (and the NumPy reference), the
SGDC block with impl='pallas' against impl='unfold', and the kernel's lowering for CUDA
through a cross-platform export (Triton IR, no GPU needed).
"""
import sgdc_jax  # noqa: F401  (XLA CPU flag first)

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax.ops import aggregate
from sgdc_jax.ops.aggregate import aggregate_unfold, softmax_aggregate
from sgdc_jax.ops.pallas_aggregate import softmax_aggregate_pallas
import numpy_reference as ref
from test_aggregate import assert_sgdc_block_matches_unfold


def _inputs(shape, heads, k, dtype=jnp.float32, seed=0):
  kx, kl, kg = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, shape).astype(dtype)
  logits = (3 * jax.random.normal(kl, (*shape[:3], heads, k * k))).astype(dtype)
  cot = jax.random.normal(kg, shape)
  return x, logits, cot


def _reference(x, logits, k):
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return aggregate_unfold(x.astype(jnp.float32), probs, k)


def _value_and_grads(fn, x, logits, cot, k):
  # One jit: a single compile serves the value and both gradients (interpret mode compiles
  # slowly).
  def value_and_grads(a, b, c):
    out, vjp = jax.vjp(lambda a, b: fn(a, b, k), a, b)
    return out, vjp(c.astype(out.dtype))

  return jax.jit(value_and_grads)(x, logits, cot)


@pytest.mark.parametrize('shape, heads, k, tile', [
    ((1, 5, 11, 8), 1, 3, (8, 8)),   # H != W, W not a multiple of the tile, one head
    ((2, 9, 6, 16), 4, 7, (4, 4)),   # 4 heads of 4 channels (padded to the block), 3x2 tiles
    ((1, 3, 2, 8), 2, 7, (8, 8)),    # image smaller than the kernel
    ((1, 10, 7, 24), 4, 5, (4, 2)),  # k=5, 6 channels per head, 4x2 tiles with a ragged edge
])
def test_matches_softmax_unfold_fp32(shape, heads, k, tile):
  x, logits, cot = _inputs(shape, heads, k)
  fused = lambda a, b, kk: softmax_aggregate_pallas(a, b, kk, tile=tile, interpret=True)
  out, (gx, gl) = _value_and_grads(fused, x, logits, cot, k)
  out_r, (gx_r, gl_r) = _value_and_grads(_reference, x, logits, cot, k)
  np.testing.assert_allclose(np.asarray(out), np.asarray(out_r), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gx), np.asarray(gx_r), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gl), np.asarray(gl_r), rtol=1e-5, atol=1e-5)
  # Independent of the JAX reference: the NumPy softmax + aggregation in float64.
  expected = ref.aggregate(np.asarray(x, float), ref.softmax(np.asarray(logits, float)), k)
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(gl).max()) > 1e-3 and float(jnp.abs(gx).max()) > 1e-3


def test_bf16_within_2e_2():
  x, logits, cot = _inputs((1, 6, 9, 16), 2, 7, dtype=jnp.bfloat16, seed=1)
  fused = lambda a, b, kk: softmax_aggregate_pallas(a, b, kk, interpret=True)
  out, (gx, gl) = _value_and_grads(fused, x, logits, cot, 7)
  assert out.dtype == gx.dtype == gl.dtype == jnp.bfloat16
  # The float32 computation on the same (bf16-rounded) inputs.
  out_r, (gx_r, gl_r) = _value_and_grads(_reference, x.astype(jnp.float32),
                                         logits.astype(jnp.float32), cot, 7)
  for got, want in ((out, out_r), (gx, gx_r), (gl, gl_r)):
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), atol=2e-2,
                               rtol=2e-2)


def test_padded_taps_take_softmax_mass():
  # Uniform logits, x = 1, a 5x5 kernel on a 2x3 image: out = (taps inside the image) / 25.
  out = softmax_aggregate_pallas(jnp.ones((1, 2, 3, 8)), jnp.zeros((1, 2, 3, 1, 25)), 5,
                                 interpret=True)
  np.testing.assert_allclose(np.asarray(out[0, :, :, 0]), [[6 / 25, 6 / 25, 6 / 25]] * 2,
                             rtol=1e-6)


def test_sgdc_block_pallas_equals_unfold():
  assert_sgdc_block_matches_unfold('pallas', batch=1, kernel_size=7)


# A GPU to lower for on this CPU machine: jax >= 0.12 takes the target's compute capability from
# the abstract mesh's device when no GPU is attached (and raises without one); older jax ignores
# it and falls back to compute capability 9.0, so both lower the same kernels.
_ABSTRACT_GPU = {'cuda': 'NVIDIA H100 80GB HBM3', 'rocm': 'gfx942'}


def _gpu_target(platform):
  device = jax.sharding.AbstractDevice(device_kind=_ABSTRACT_GPU[platform], num_cores=None,
                                       platform='gpu')
  return jax.sharding.use_abstract_mesh(
      jax.sharding.AbstractMesh((1,), ('gpu',), abstract_device=device))


@pytest.mark.parametrize('platform', ['cuda', 'rocm'])
def test_lowers_to_triton_for_gpu(platform):
  # Lowers the forward and the custom-VJP backward kernels to Triton IR for a GPU without
  # one (the PTX compile itself happens in XLA on the device). The Triton custom call has
  # no serialisation-compatibility guarantee, hence the disabled check.
  shapes = (jax.ShapeDtypeStruct((2, 20, 13, 64), jnp.bfloat16),
            jax.ShapeDtypeStruct((2, 20, 13, 4, 49), jnp.bfloat16))
  fused = lambda x, l: softmax_aggregate_pallas(x, l, 7, interpret=False)
  grads = jax.grad(lambda x, l: jnp.sum(fused(x, l).astype(jnp.float32)), argnums=(0, 1))
  check = jax.export.DisabledSafetyCheck.custom_call('__gpu$xla.gpu.triton')
  with _gpu_target(platform):
    exported = jax.export.export(jax.jit(grads), platforms=[platform],
                                 disabled_checks=[check])(*shapes)
  text = exported.mlir_module()
  assert text.count('stablehlo.custom_call @__gpu$xla.gpu.triton') == 2  # forward + backward
  assert 'name = "forward_kernel"' in text and 'name = "backward_kernel"' in text


def test_launch_parameters_reach_the_triton_call():
  # The tuning knobs of benchmarks/bench_sgdc.py (--pallas_launch) must change what is launched.
  shapes = (jax.ShapeDtypeStruct((2, 20, 13, 64), jnp.float32),
            jax.ShapeDtypeStruct((2, 20, 13, 4, 49), jnp.float32))
  check = jax.export.DisabledSafetyCheck.custom_call('__gpu$xla.gpu.triton')
  for tile, warps, stages in (((8, 8), 4, 2), ((16, 8), 8, 3)):
    fused = lambda x, l, t=tile, w=warps, s=stages: softmax_aggregate_pallas(
        x, l, 7, tile=t, num_warps=w, num_stages=s, interpret=False)
    with _gpu_target('cuda'):
      text = jax.export.export(jax.jit(fused), platforms=['cuda'],
                               disabled_checks=[check])(*shapes).mlir_module()
    tiles = -(-20 // tile[0]) * -(-13 // tile[1])
    assert f'grid_x = {tiles} : i32, grid_y = 4 : i32, grid_z = 2 : i32' in text
    assert f'num_warps = {warps} : i32' in text and f'num_stages = {stages} : i32' in text


_DATA_PARALLEL = """
import json
import jax, jax.numpy as jnp
from sgdc_jax.run import sharding as shd
from sgdc_jax.ops.aggregate import softmax_aggregate
data = shd.data_sharding(shd.make_mesh())
x = jax.random.normal(jax.random.key(0), (4, 6, 5, 8))
logits = 3 * jax.random.normal(jax.random.key(1), (4, 6, 5, 2, 9))
loss = lambda impl: lambda x, l: jnp.sum(softmax_aggregate(x, l, 3, impl) ** 2)
want = jax.jit(jax.value_and_grad(loss('unfold'), argnums=(0, 1)))(x, logits)
out = {}
for impl in ('pallas', 'shift'):
  f = jax.jit(jax.value_and_grad(loss(impl), argnums=(0, 1)))
  args = jax.device_put((x, logits), data)
  got = f(*args)
  out[impl] = dict(
      all_gathers=f.lower(*args).compile().as_text().count('all-gather'),
      batch_sharded=[str(g.sharding.spec) for g in got[1]],
      loss_rel_diff=float(abs(got[0] / want[0] - 1)),
      grad_max_diff=max(float(jnp.abs(a - b).max()) for a, b in zip(got[1], want[1])))
print('RESULT' + json.dumps(out))
"""


@pytest.mark.slow  # a 4-device subprocess: ~50 s on the loaded 2-core machine
def test_data_parallel_keeps_the_batch_sharded():
  # Batch-sharded over 4 devices, the Pallas kernels run per shard (custom_partitioning) and
  # shift's backward propagates the sharding: no all-gather, same values as one device.
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu', PYTHONPATH=repo)
  proc = subprocess.run([sys.executable, '-c', 'import sgdc_jax\n' + _DATA_PARALLEL], env=env,
                        capture_output=True, text=True, timeout=300, cwd=repo, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')][-1]
  for impl, r in json.loads(line[len('RESULT'):]).items():
    assert r['all_gathers'] == 0, (impl, r)
    assert r['batch_sharded'] == ["P('data',)"] * 2, (impl, r)
    # The loss sums 960 float32 squares; per shard and then across shards it adds them in
    # another order than one device does: a few ulps apart (shift: 1.01e-6 on jax 0.12.1),
    # where a lost or doubled shard would be off by a quarter.
    assert r['loss_rel_diff'] < 1e-5 and r['grad_max_diff'] < 1e-5, (impl, r)


def test_auto_picks_pallas_only_where_enabled(monkeypatch):
  assert aggregate.resolve_impl('auto') == 'shift'  # this CPU
  assert aggregate.resolve_impl('unfold') == 'unfold'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  # Not enabled until timed on a GPU (see aggregate.PALLAS_BACKENDS).
  assert aggregate.resolve_impl('auto') == 'shift'
  monkeypatch.setattr(aggregate, 'PALLAS_BACKENDS', ('gpu',))
  assert aggregate.resolve_impl('auto') == 'pallas'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'tpu')
  assert aggregate.resolve_impl('auto') == 'shift'
  with pytest.raises(ValueError, match='no TPU kernel'):
    softmax_aggregate(jnp.zeros((1, 4, 4, 8)), jnp.zeros((1, 4, 4, 2, 9)), 3, 'pallas')


def test_bad_arguments():
  x, logits = jnp.zeros((1, 4, 4, 8)), jnp.zeros((1, 4, 4, 2, 9))
  with pytest.raises(ValueError, match='powers of two'):
    softmax_aggregate_pallas(x, logits, 3, tile=(6, 8))
  with pytest.raises(ValueError, match='num_warps must be a power of two'):
    softmax_aggregate_pallas(x, logits, 3, num_warps=6)
  with pytest.raises(ValueError, match='num_stages must be a positive int'):
    softmax_aggregate_pallas(x, logits, 3, num_stages=0)
  with pytest.raises(ValueError, match='expected kernel_size'):
    softmax_aggregate_pallas(x, logits, 5)
  with pytest.raises(ValueError, match='divisible by heads'):
    softmax_aggregate_pallas(jnp.zeros((1, 4, 4, 7)), logits, 3)
  with pytest.raises(ValueError, match='softmax_aggregate'):
    aggregate.pixel_adaptive_aggregate(x, jax.nn.softmax(logits), 3, 'pallas')
