"""SGDCNet: shapes and dtypes per encoder and kernel_source, training, BatchNorm, config."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from sgdc_jax.models import losses
from sgdc_jax.ops.boundary import boundary_target
from sgdc_jax.data.synthetic import SyntheticLesions
from sgdc_jax.models import (ResNet, SGDCNet, build_model, default_model_config,
                             load_pretrained_encoder, stage_channels)

SIZE = 64


def tiny_config(**overrides):
  cfg = default_model_config()
  cfg.update(dict(encoder='resnet18', decoder_channels=16, n_blocks=1, guide_channels=4,
                  num_heads=2, kernel_size=3, mlp_ratio=2.0, sge_bottleneck=16, sge_mid=16))
  cfg.update(overrides)
  return cfg


def fast_init(model, x, seed=0):
  """Variables with the shapes of `model.init` filled from NumPy (avoids compiling init).

  Kernels He-normal, BatchNorm scale/var 1, biases/means 0, any other parameter (e.g. layer
  scales) N(0, 0.1). One test per model kind uses the real `model.init`.
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = getattr(path[-1], 'key', str(path[-1]))
    if name == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)
    elif name in ('scale', 'var'):
      value = np.ones(leaf.shape)
    elif name in ('bias', 'mean'):
      value = np.zeros(leaf.shape)
    else:
      value = 0.1 * rng.standard_normal(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def images(batch=2, size=SIZE, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3), jnp.float32)


def test_default_config_fields():
  cfg = default_model_config()
  assert cfg.encoder == 'resnet50' and cfg.decoder_channels == 256 and cfg.n_blocks == 2
  assert cfg.kernel_source == 'structure' and cfg.num_classes == 1 and cfg.pretrained == ''
  assert cfg.dtype == 'float32'
  assert isinstance(build_model(cfg), SGDCNet)


@pytest.mark.parametrize('depth', [18, 34, 50, 101])
def test_resnet_feature_shapes(depth):
  # Values are checked against NumPy in test_resnet_convert.py; here only shapes (abstractly).
  x = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)
  model = ResNet(depth)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  feats = jax.eval_shape(model.apply, variables, x)
  ch = stage_channels(depth)
  assert ch == ((64, 128, 256, 512) if depth < 50 else (256, 512, 1024, 2048))
  assert [f.shape for f in feats] == [(2, 16, 24, ch[0]), (2, 8, 12, ch[1]), (2, 4, 6, ch[2]),
                                      (2, 2, 3, ch[3])]
  assert all(f.dtype == jnp.float32 for f in feats)
  n_params = sum(np.prod(p.shape) for p in jax.tree.leaves(variables['params']))
  # torchvision's parameter counts, minus the 1000-way fc layer.
  torchvision = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160}[depth]
  assert n_params == torchvision - (ch[3] * 1000 + 1000)


@pytest.mark.parametrize('kernel_source', ['structure', 'pooled', 'none'])
def test_sgdcnet_outputs_per_kernel_source(kernel_source):
  model = build_model(tiny_config(kernel_source=kernel_source, num_classes=3))
  x = images()
  variables = fast_init(model, x)
  out = jax.jit(lambda v, im: model.apply(v, im, train=False))(variables, x)
  assert out['logits'].shape == (2, SIZE, SIZE, 3) and out['logits'].dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out['logits'])))
  if kernel_source == 'none':
    assert set(out) == {'logits'}
    assert 'sge' not in variables['params']
  else:
    assert set(out) == {'logits', 'edge_logits'}
    assert out['edge_logits'].shape == (2, SIZE, SIZE, 1)
    assert out['edge_logits'].dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out['edge_logits'])))
    assert 'sge' in variables['params']


@pytest.mark.slow
def test_real_init_runs():
  model = build_model(tiny_config())
  x = images(1)
  variables = jax.jit(model.init, static_argnames='train')(jax.random.key(1), x, train=False)
  shapes = jax.eval_shape(lambda: fast_init(model, x))
  assert jax.tree.map(lambda a: (a.shape, a.dtype), variables) == jax.tree.map(
      lambda a: (a.shape, a.dtype), shapes)
  np.testing.assert_array_equal(variables['batch_stats']['encoder']['bn1']['var'], 1.0)
  np.testing.assert_allclose(variables['params']['sgdc0']['layer_scale1'], 1e-6)
  kernel = np.asarray(variables['params']['encoder']['layer1_0']['conv1']['kernel'])
  assert 0.5 < kernel.std() / np.sqrt(2.0 / (3 * 3 * 64)) < 1.5  # kaiming fan_out


@pytest.mark.parametrize('encoder', ['resnet18', 'resnet34', 'resnet50', 'resnet101'])
def test_sgdcnet_abstract_shapes_per_encoder(encoder):
  cfg = default_model_config() if encoder == 'resnet50' else tiny_config(encoder=encoder)
  if encoder == 'resnet18':
    cfg.n_blocks = 0  # decoder straight into the head
  model = build_model(cfg)
  x = jax.ShapeDtypeStruct((1, 96, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
  out = jax.eval_shape(lambda v, im: model.apply(v, im, train=False), variables, x)
  assert out['logits'].shape == (1, 96, 64, 1) and out['logits'].dtype == jnp.float32
  assert out['edge_logits'].shape == (1, 96, 64, 1)
  enc = variables['params']['encoder']
  assert enc['conv1']['kernel'].shape == (7, 7, 3, 64)
  last = 'layer4_2' if encoder in ('resnet34', 'resnet50', 'resnet101') else 'layer4_1'
  assert last in enc
  assert ('sgdc0' in variables['params']) == (encoder != 'resnet18')


def test_bfloat16_compute_float32_params_and_outputs():
  model = build_model(tiny_config(dtype='bfloat16'))
  x = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(2), jnp.zeros(x.shape)))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  out, state = jax.eval_shape(
      lambda v, im: model.apply(v, im, train=True, capture_intermediates=True,
                                mutable=['intermediates', 'batch_stats']), variables, x)
  assert out['logits'].dtype == jnp.float32 and out['edge_logits'].dtype == jnp.float32
  inter = state['intermediates']
  assert inter['decoder']['__call__'][0].dtype == jnp.bfloat16
  assert all(f.dtype == jnp.bfloat16 for f in inter['encoder']['__call__'][0])
  assert inter['sgdc0']['__call__'][0].dtype == jnp.bfloat16
  assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(state['batch_stats']))


def test_input_size_not_divisible_by_32():
  model = build_model(tiny_config())
  with pytest.raises(ValueError, match='divisible by 32'):
    model.init(jax.random.key(0), jnp.zeros((1, 64, 48, 3)))
  with pytest.raises(ValueError, match=r'\(B, H, W, 3\)'):
    model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 1)))


@pytest.mark.parametrize('field,value', [('encoder', 'resnet152'), ('kernel_source', 'avg'),
                                         ('dtype', 'float16'), ('decoder_channels', 0),
                                         ('decoder_channels', 17), ('n_blocks', -1),
                                         ('kernel_size', 4), ('drop_path', 1.0),
                                         ('num_classes', 0)])
def test_build_model_rejects_bad_fields(field, value):
  cfg = tiny_config()
  cfg[field] = value
  with pytest.raises(ValueError, match=field):
    build_model(cfg)


def test_build_model_fills_missing_fields_and_checks_types():
  model = build_model(ml_collections.ConfigDict(dict(encoder='resnet18', n_blocks=0)))
  assert model.encoder == 'resnet18' and model.n_blocks == 0 and model.decoder_channels == 256
  with pytest.raises(ValueError, match='n_blocks'):
    build_model(ml_collections.ConfigDict(dict(n_blocks='2')))
  with pytest.raises(ValueError, match='pool_size'):
    build_model(ml_collections.ConfigDict(dict(pool_size=0)))


def test_build_model_rejects_unknown_field():
  cfg = tiny_config()
  cfg.decoder_chanels = 8
  with pytest.raises(ValueError, match='decoder_chanels'):
    build_model(cfg)


def test_batchnorm_stats_update_only_in_train_mode():
  model = build_model(tiny_config())
  x = images()
  variables = fast_init(model, x, seed=3)
  run = jax.jit(lambda v, train: model.apply(v, x, train=train, mutable=['batch_stats'])[1],
                static_argnums=1)
  state = run(variables, False)
  jax.tree.map(np.testing.assert_array_equal, state['batch_stats'], variables['batch_stats'])
  state = run(variables, True)
  for part in ('encoder', 'decoder', 'sge', 'head_bn'):
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), state['batch_stats'][part],
                           variables['batch_stats'][part])
    assert all(jax.tree.leaves(changed)), part


@pytest.mark.slow
def test_a_few_adam_steps_reduce_the_loss():
  model = build_model(tiny_config())
  x = images(2, seed=4)
  yy, xx = np.mgrid[:SIZE, :SIZE]
  mask = jnp.asarray(((yy - 30) ** 2 + (xx - 34) ** 2 < 15 ** 2)[None, :, :, None]
                     .repeat(2, 0).astype(np.float32))
  variables = fast_init(model, x, seed=5)
  params, batch_stats = variables['params'], variables['batch_stats']
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  def loss_fn(params, batch_stats):
    out, state = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                             mutable=['batch_stats'])
    loss = optax.sigmoid_binary_cross_entropy(out['logits'], mask).mean()
    loss += optax.sigmoid_binary_cross_entropy(out['edge_logits'], mask).mean()
    return loss, state['batch_stats']

  @jax.jit
  def step(params, batch_stats, opt_state):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss, grads

  losses = []
  for i in range(6):
    params, batch_stats, opt_state, loss, grads = step(params, batch_stats, opt_state)
    if i == 0:
      assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    losses.append(float(loss))
  assert all(np.isfinite(losses))
  assert losses[-1] < 0.8 * losses[0], losses


def test_drop_path_train_uses_dropout_rng():
  model = build_model(tiny_config(n_blocks=2, drop_path=0.5, layer_scale_init=1.0))
  x = images(2)
  variables = fast_init(model, x, seed=6)
  run = jax.jit(lambda seed: model.apply(variables, x, train=True, mutable=['batch_stats'],
                                         rngs={'dropout': jax.random.key(seed)})[0]['logits'])
  outs = [np.asarray(run(seed)) for seed in range(4)]
  assert all(np.isfinite(o).all() for o in outs)
  assert any(not np.array_equal(outs[0], o) for o in outs[1:])
  np.testing.assert_array_equal(outs[0], np.asarray(run(0)))  # same key, same drops


def test_load_pretrained_encoder_into_sgdcnet(tmp_path):
  model = build_model(tiny_config())
  x = images(1)
  variables = fast_init(model, x, seed=7)
  enc = jax.tree.map(np.asarray, variables['params']['encoder'])
  stats = jax.tree.map(np.asarray, variables['batch_stats']['encoder'])
  # Write the encoder back out in torchvision layout, scaled, and load it.
  sd = {}
  modules = [((top,), enc[top]) for top in ('conv1', 'bn1')]
  modules += [((block, mod), leaves) for block, mods in enc.items() if block.startswith('layer')
              for mod, leaves in mods.items()]
  for path, leaves in modules:
    name = '.'.join(p.replace('_', '.') for p in path)  # layer2_0/downsample_0 -> layer2.0...
    if 'kernel' in leaves:
      sd[f'{name}.weight'] = 2.0 * leaves['kernel'].transpose(3, 2, 0, 1)
    else:
      bn_stats = stats[path[0]] if len(path) == 1 else stats[path[0]][path[1]]
      sd[f'{name}.weight'] = leaves['scale'] + 1.0
      sd[f'{name}.bias'] = leaves['bias'] + 0.5
      sd[f'{name}.running_mean'] = bn_stats['mean'] + 0.25
      sd[f'{name}.running_var'] = bn_stats['var'] * 3.0
  assert len(sd) == 100  # torchvision resnet18 without fc and num_batches_tracked
  path = str(tmp_path / 'enc.npz')
  np.savez(path, **sd)
  new = load_pretrained_encoder(variables, path)
  np.testing.assert_allclose(new['params']['encoder']['layer2_0']['downsample_0']['kernel'],
                             2.0 * enc['layer2_0']['downsample_0']['kernel'])
  np.testing.assert_allclose(new['batch_stats']['encoder']['layer3_1']['bn2']['mean'],
                             stats['layer3_1']['bn2']['mean'] + 0.25)
  assert new['params']['decoder'] is variables['params']['decoder']


def test_aggregation_impl_is_a_validated_config_field():
  cfg = default_model_config()
  cfg.impl = 'unfold'
  assert build_model(cfg).impl == 'unfold'
  cfg.impl = 'fft'
  with pytest.raises(ValueError, match='impl'):
    build_model(cfg)


# bfloat16 compute vs float32, same float32 variables, on synthetic lesions. bf16 keeps 8 bits of
# mantissa (relative step 2^-8 = 0.4%) through ~40 layers. Measured here (CPU), eval-mode
# BatchNorm / train-mode BatchNorm: max |logit diff| / max |logit| 0.022 / 0.040, max |probability
# diff| 0.074 / 0.023 (random weights give eval logits up to ~40, so a few pixels sit near 0.5),
# total loss relative diff 0.0047 / 0.0009. The bounds are about 2x those.
BF16_LOGIT_REL = 0.08
BF16_PROB_ABS = 0.15
BF16_LOSS_REL = 0.01


def _lesion_batch(seed: int):
  """Two synthetic lesions: normalised images (2, SIZE, SIZE, 3) and their {'mask', 'edge'}."""
  source = SyntheticLesions(2, (SIZE, SIZE), seed=seed)
  examples = [source[i] for i in range(2)]
  x = jnp.asarray(np.stack([(e['image'] / 255.0 - 0.45) / 0.25 for e in examples]), jnp.float32)
  mask = np.stack([(e['mask'] > 0).astype(np.int32) for e in examples])
  edge = np.stack([boundary_target(m.astype(np.uint8), 2) for m in mask])
  return x, {'mask': jnp.asarray(mask), 'edge': jnp.asarray(edge)}


def test_bfloat16_forward_and_loss_agree_with_float32():
  x, batch = _lesion_batch(seed=3)
  f32, bf16 = build_model(tiny_config()), build_model(tiny_config(dtype='bfloat16'))
  variables = fast_init(f32, x, seed=4)

  def run(model, train):
    kw = dict(train=True, mutable=['batch_stats']) if train else dict(train=False)
    out = model.apply(variables, x, **kw)
    out = out[0] if train else out
    loss, _ = losses.total_loss(out, batch, num_classes=1, lambda_edge=1.0)
    return out, loss

  for train in (False, True):
    (o32, l32), (o16, l16) = [jax.jit(lambda m=m: run(m, train))() for m in (f32, bf16)]
    assert o16['logits'].dtype == jnp.float32   # outputs are float32 either way
    scale = float(jnp.max(jnp.abs(o32['logits'])))
    diff = float(jnp.max(jnp.abs(o16['logits'] - o32['logits'])))
    assert diff / scale < BF16_LOGIT_REL, (train, diff, scale)
    prob_diff = float(jnp.max(jnp.abs(jax.nn.sigmoid(o16['logits']) -
                                      jax.nn.sigmoid(o32['logits']))))
    assert prob_diff < BF16_PROB_ABS, (train, prob_diff)
    assert abs(float(l16) - float(l32)) / abs(float(l32)) < BF16_LOSS_REL, (train, l16, l32)
    # bf16 really computes in bf16: the outputs differ (not silently float32).
    assert diff > 0
    print(f'train={train}: logits rel {diff / scale:.4f}, probs {prob_diff:.4f}, '
          f'loss rel {abs(float(l16) - float(l32)) / abs(float(l32)):.4f}')


# Output stride (issue 24): tiny network, D=32 (so C = max(16, 32 // 4) = 16, S = 16).
OS_D = 32


def os_config(output_stride=None, **overrides):
  cfg = tiny_config(decoder_channels=OS_D, **overrides)
  if output_stride is None:
    del cfg['output_stride']
  else:
    cfg.output_stride = output_stride
  return cfg


@pytest.mark.parametrize('output_stride', [4, 2, 1])
@pytest.mark.parametrize('height,width', [(64, 64), (64, 96)])
def test_output_stride_shapes(output_stride, height, width):
  model = build_model(os_config(output_stride, num_classes=3))
  x = jax.ShapeDtypeStruct((2, height, width, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
  out, state = jax.eval_shape(
      lambda v, im: model.apply(v, im, capture_intermediates=True), variables, x)
  assert out['logits'].shape == (2, height, width, 3) and out['logits'].dtype == jnp.float32
  assert out['edge_logits'].shape == (2, height, width, 1)
  inter = state['intermediates']
  # The logits are computed at the requested stride, the SGDC blocks and SGE at stride 4.
  s = output_stride
  assert inter['head_out']['__call__'][0].shape == (2, height // s, width // s, 3)
  assert inter['sgdc0']['__call__'][0].shape == (2, height // 4, width // 4, OS_D)
  assert inter['sge']['__call__'][0][0].shape == (2, height // 4, width // 4, 1)
  assert ('upsample' in variables['params']) == (output_stride < 4)


def test_output_stride_4_is_the_network_without_the_field():
  cfg = os_config()
  assert 'output_stride' not in cfg
  implicit, explicit = build_model(cfg), build_model(os_config(4))
  assert implicit.output_stride == 4 and explicit == implicit
  assert default_model_config().output_stride == 4
  variables = jax.eval_shape(lambda: explicit.init(jax.random.key(0), images(2)))
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params']))
  # Measured on the network before output_stride existed (same config): unchanged.
  assert n_params == 11_248_163
  assert len(jax.tree.leaves(variables['params'])) == 121
  assert set(variables['params']) == {'encoder', 'decoder', 'sge', 'sgdc0', 'head_conv',
                                      'head_bn', 'head_out'}
  assert variables['params']['head_out']['kernel'].shape == (1, 1, OS_D, 1)
  _, state = jax.eval_shape(lambda v: explicit.apply(v, images(2), capture_intermediates=True),
                            variables)
  assert len(state['intermediates']['encoder']['__call__'][0]) == 4  # no stem output asked for


@pytest.mark.parametrize('output_stride', [2, 1])
def test_output_stride_adds_only_the_small_upsampling_params(output_stride):
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)

  def param_shapes(cfg):
    model = build_model(cfg)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
    return v['params']

  nc = 2
  base, fine = param_shapes(os_config(4, num_classes=nc)), param_shapes(
      os_config(output_stride, num_classes=nc))
  # Everything but the new 'upsample' subtree and head_out's input channels is unchanged.
  assert set(fine) == set(base) | {'upsample'}
  for name in base:
    if name != 'head_out':
      assert jax.tree.map(jnp.shape, fine[name]) == jax.tree.map(jnp.shape, base[name]), name
  c, s = 16, 16
  added = OS_D * c + 64 * c + 9 * c * c + 2 * c   # reduce2, lateral2 (stem c0), conv2, bn2
  out_in = c
  if output_stride == 1:
    added += c * s + 27 * s + 2 * s + 9 * s * s + 2 * s   # reduce1, image stem, conv1, bn1
    out_in = s
  count = lambda t: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(t))  # noqa: E731
  assert count(fine['upsample']) == added
  assert fine['head_out']['kernel'].shape == (1, 1, out_in, nc)
  assert count(fine) - count(base) == added + (out_in - OS_D) * nc
  assert added < 0.001 * count(base)


@pytest.mark.parametrize('output_stride', [4, 2, 1])
def test_output_stride_total_loss_and_gradient(output_stride):
  x, batch = _lesion_batch(seed=5)
  model = build_model(os_config(output_stride))
  variables = fast_init(model, x, seed=12)

  @jax.jit
  def loss_and_grad(params):
    def loss_fn(p):
      out, _ = model.apply({'params': p, 'batch_stats': variables['batch_stats']}, x,
                           train=True, mutable=['batch_stats'])
      assert out['edge_logits'].shape == (2, SIZE, SIZE, 1)  # SGE output unchanged
      return losses.total_loss(out, batch, num_classes=1, lambda_edge=1.0)
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, aux), grads = loss_and_grad(variables['params'])
  assert np.isfinite(float(loss)) and float(aux['edge_loss']) > 0
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  norm = lambda t: float(optax.global_norm(t))  # noqa: E731
  assert norm(grads['encoder']['conv1']) > 0
  if output_stride < 4:
    assert norm(grads['upsample']['lateral2']) > 0   # the encoder stem's path to the logits
  if output_stride == 1:
    assert norm(grads['upsample']['image_conv']) > 0 and norm(grads['upsample']['image_bn']) > 0


@pytest.mark.parametrize('value', [3, 8, 0, '2', 2.0, True])
def test_output_stride_rejects_other_values(value):
  with pytest.raises(ValueError, match='output_stride'):
    build_model(ml_collections.ConfigDict(dict(output_stride=value)))
  if not isinstance(value, str):
    with pytest.raises(ValueError, match='output_stride'):
      SGDCNet(encoder='resnet18', output_stride=value).init(jax.random.key(0),
                                                          jnp.zeros((1, 32, 32, 3)))


def test_output_stride_in_the_nnx_wrapper():
  from flax import nnx

  from sgdc_jax.nnx import SGDCNet as NNXSGDCNet
  x = images(1)
  fields = {k: v for k, v in os_config(2).items() if k != 'pretrained'}
  # Abstractly (nnx.eval_shape): a concrete NNX init runs the whole network op by op.
  net = nnx.eval_shape(lambda: NNXSGDCNet(x, rngs=nnx.Rngs(0), **fields))
  assert 'upsample' in nnx.state(net, nnx.Param)['linen']
  out = nnx.eval_shape(lambda n: n(x), net)
  assert out['logits'].shape == (1, SIZE, SIZE, 1) and out['logits'].dtype == jnp.float32


def test_upsample_bilinear_matches_resize_bilinear():
  from sgdc_jax.models.sgdc_net import upsample_bilinear
  from sgdc_jax.ops.image import resize_bilinear
  for shape in [(2, 5, 7, 3), (1, 1, 4, 2), (1, 8, 12, 1)]:
    x = jax.random.normal(jax.random.key(sum(shape)), shape)
    size = (2 * shape[1], 2 * shape[2])
    np.testing.assert_allclose(upsample_bilinear(x, size), resize_bilinear(x, size), atol=1e-6)
  x = jnp.ones((1, 4, 6, 1))
  assert upsample_bilinear(x, (6, 9)).shape == (1, 6, 9, 1)  # not x2: resize_bilinear
  assert upsample_bilinear(x.astype(jnp.bfloat16), (8, 12)).dtype == jnp.bfloat16
