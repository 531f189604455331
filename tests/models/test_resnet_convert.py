"""torchvision ResNet state_dict -> flax ResNet: names, shapes, errors, and a NumPy forward."""
import importlib.util
import sys

import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax.models.resnet import ResNet
from sgdc_jax.models.convert import load_torch_checkpoint as read_state_dict
from sgdc_jax.models.resnet_convert import load_pretrained_encoder, torchvision_resnet_to_flax

EPS = 1e-5


def torchvision_state_dict(depth, rng):
  """A state_dict with torchvision's exact names and shapes, written out independently here.

  Mirrors torchvision.models.resnet: `_make_layer` adds `downsample` to the first block of a
  stage when stride != 1 or inplanes != planes * expansion; conv weights are OIHW.
  """
  layers = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
  bottleneck = depth >= 50
  expansion = 4 if bottleneck else 1
  sd = {}

  def conv(name, o, i, k):
    sd[name + '.weight'] = (rng.standard_normal((o, i, k, k)) *
                            np.sqrt(2.0 / (i * k * k))).astype(np.float32)

  def bn(name, c):
    sd[name + '.weight'] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[name + '.bias'] = rng.uniform(-0.2, 0.2, c).astype(np.float32)
    sd[name + '.running_mean'] = rng.uniform(-0.2, 0.2, c).astype(np.float32)
    sd[name + '.running_var'] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    sd[name + '.num_batches_tracked'] = np.array(7, np.int64)

  conv('conv1', 64, 3, 7)
  bn('bn1', 64)
  inplanes = 64
  for li, (planes, blocks) in enumerate(zip([64, 128, 256, 512], layers), start=1):
    stride = 1 if li == 1 else 2
    for b in range(blocks):
      p = f'layer{li}.{b}'
      if bottleneck:
        conv(p + '.conv1', planes, inplanes, 1)
        bn(p + '.bn1', planes)
        conv(p + '.conv2', planes, planes, 3)
        bn(p + '.bn2', planes)
        conv(p + '.conv3', planes * 4, planes, 1)
        bn(p + '.bn3', planes * 4)
      else:
        conv(p + '.conv1', planes, inplanes, 3)
        bn(p + '.bn1', planes)
        conv(p + '.conv2', planes, planes, 3)
        bn(p + '.bn2', planes)
      if b == 0 and (stride != 1 or inplanes != planes * expansion):
        conv(p + '.downsample.0', planes * expansion, inplanes, 1)
        bn(p + '.downsample.1', planes * expansion)
      inplanes = planes * expansion
  sd['fc.weight'] = rng.standard_normal((1000, 512 * expansion)).astype(np.float32)
  sd['fc.bias'] = np.zeros(1000, np.float32)
  return sd


# ----------------------------------------------------------------- NumPy reference forward
def np_conv(x, w, stride, pad):
  """x (B,H,W,C), w OIHW -> (B,H',W',O); cross-correlation with zero padding, float64."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  k = w.shape[-1]
  win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
  return np.einsum('bhwcij,ocij->bhwo', win, w.astype(np.float64))


def np_bn(x, sd, name):
  return ((x - sd[name + '.running_mean']) / np.sqrt(sd[name + '.running_var'] + EPS)
          * sd[name + '.weight'] + sd[name + '.bias'])


def np_maxpool(x):
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2]
  return win.max(axis=(-2, -1))


def np_basic_block(x, sd, p, stride):
  relu = lambda v: np.maximum(v, 0)
  y = relu(np_bn(np_conv(x, sd[p + '.conv1.weight'], stride, 1), sd, p + '.bn1'))
  y = np_bn(np_conv(y, sd[p + '.conv2.weight'], 1, 1), sd, p + '.bn2')
  if p + '.downsample.0.weight' in sd:
    x = np_bn(np_conv(x, sd[p + '.downsample.0.weight'], stride, 0), sd, p + '.downsample.1')
  return relu(y + x)


def np_resnet18(x, sd):
  """Returns the output of stem + layer1.0, and c1..c4, eval-mode BatchNorm."""
  x = np.maximum(np_bn(np_conv(x.astype(np.float64), sd['conv1.weight'], 2, 3), sd, 'bn1'), 0)
  x = np_maxpool(x)
  first_block = None
  feats = []
  for li in range(1, 5):
    for b in range(2):
      x = np_basic_block(x, sd, f'layer{li}.{b}', 2 if (b == 0 and li > 1) else 1)
      if first_block is None:
        first_block = x
    feats.append(x)
  return first_block, feats


# ----------------------------------------------------------------------------------- tests
def test_torchvision_key_counts_are_the_real_ones():
  rng = np.random.default_rng(0)
  # torchvision's resnet18 / resnet50 state_dicts have 122 / 320 entries (fc included).
  assert len(torchvision_state_dict(18, rng)) == 122
  sd50 = torchvision_state_dict(50, rng)
  assert len(sd50) == 320
  assert sd50['layer1.0.downsample.0.weight'].shape == (256, 64, 1, 1)
  assert sd50['layer4.2.conv3.weight'].shape == (2048, 512, 1, 1)


@pytest.mark.parametrize('depth', [18, 50])
def test_converted_tree_matches_flax_resnet(depth):
  sd = torchvision_state_dict(depth, np.random.default_rng(1))
  converted = torchvision_resnet_to_flax(sd, depth)
  shapes = jax.eval_shape(lambda: ResNet(depth).init(jax.random.key(0),
                                                     jnp.zeros((1, 32, 32, 3))))
  for col in ('params', 'batch_stats'):
    assert jax.tree.structure(converted[col]) == jax.tree.structure(shapes[col])
    got = jax.tree.map(lambda a: a.shape, converted[col])
    want = jax.tree.map(lambda a: a.shape, shapes[col])
    assert got == want
  # Spot-check the layout: OIHW -> HWIO, BN names.
  np.testing.assert_array_equal(converted['params']['conv1']['kernel'][1, 2, 0, 5],
                                sd['conv1.weight'][5, 0, 1, 2])
  np.testing.assert_array_equal(converted['batch_stats']['layer1_0']['downsample_1']['var']
                                if depth == 50 else converted['batch_stats']['layer2_0']
                                ['downsample_1']['var'],
                                sd['layer1.0.downsample.1.running_var'] if depth == 50
                                else sd['layer2.0.downsample.1.running_var'])


def test_resnet101_keys_convert():
  sd = torchvision_state_dict(101, np.random.default_rng(2))
  converted = torchvision_resnet_to_flax(sd, 101)
  assert 'layer3_22' in converted['params'] and 'layer3_23' not in converted['params']


def test_encoder_with_converted_weights_matches_numpy_forward():
  sd = torchvision_state_dict(18, np.random.default_rng(3))
  variables = torchvision_resnet_to_flax(sd, 18)
  x = np.random.default_rng(4).standard_normal((2, 64, 64, 3)).astype(np.float32)
  feats, state = ResNet(18).apply(variables, jnp.asarray(x), train=False,
                                  capture_intermediates=True, mutable=['intermediates'])
  first_block_ref, feats_ref = np_resnet18(x, sd)
  first_block = state['intermediates']['layer1_0']['__call__'][0]
  assert first_block.shape == (2, 16, 16, 64)
  np.testing.assert_allclose(np.asarray(first_block), first_block_ref, rtol=1e-4, atol=1e-4)
  for got, ref in zip(feats, feats_ref):
    assert got.shape == ref.shape
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-3,
                               atol=1e-4 * max(1.0, np.abs(ref).max()))


def test_missing_unknown_and_bad_shape_keys_are_listed():
  sd = torchvision_state_dict(18, np.random.default_rng(5))
  broken = dict(sd)
  del broken['layer3.1.bn2.running_var']
  del broken['conv1.weight']
  broken['layer5.0.conv1.weight'] = np.zeros((1,), np.float32)
  with pytest.raises(ValueError) as e:
    torchvision_resnet_to_flax(broken, 18)
  msg = str(e.value)
  assert 'layer3.1.bn2.running_var' in msg and 'conv1.weight' in msg
  assert 'unknown' in msg and 'layer5.0.conv1.weight' in msg
  bad = dict(sd)
  bad['layer1.0.conv2.weight'] = np.zeros((64, 64, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r'layer1\.0\.conv2\.weight.*\(64, 64, 3, 3\)'):
    torchvision_resnet_to_flax(bad, 18)
  # A resnet18 state_dict is not a resnet34 one.
  with pytest.raises(ValueError, match='missing keys'):
    torchvision_resnet_to_flax(sd, 34)
  with pytest.raises(ValueError, match='depth'):
    torchvision_resnet_to_flax(sd, 20)


def test_num_batches_tracked_and_fc_are_optional():
  sd = {k: v for k, v in torchvision_state_dict(18, np.random.default_rng(6)).items()
        if not k.endswith('num_batches_tracked') and not k.startswith('fc.')}
  converted = torchvision_resnet_to_flax(sd, 18)
  np.testing.assert_array_equal(converted['batch_stats']['bn1']['mean'], sd['bn1.running_mean'])


def _fake_net_variables(depth):
  shapes = jax.eval_shape(ResNet(depth).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  enc = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return {'params': {'encoder': enc['params'], 'head': {'w': jnp.ones(3)}},
          'batch_stats': {'encoder': enc['batch_stats'], 'head_bn': {'mean': jnp.zeros(3)}}}


@pytest.mark.parametrize('ext', ['npz', 'safetensors'])
def test_load_pretrained_encoder_from_file(tmp_path, ext):
  sd = torchvision_state_dict(18, np.random.default_rng(7))
  path = str(tmp_path / f'r18.{ext}')
  if ext == 'npz':
    np.savez(path, **sd)
  else:
    from safetensors.numpy import save_file
    save_file(sd, path)
  assert set(read_state_dict(path)) == set(sd)
  variables = _fake_net_variables(18)
  new = load_pretrained_encoder(variables, path)
  np.testing.assert_array_equal(np.asarray(new['params']['encoder']['layer4_1']['conv2']['kernel']),
                                sd['layer4.1.conv2.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(np.asarray(new['batch_stats']['encoder']['bn1']['var']),
                                sd['bn1.running_var'])
  assert new['params']['head'] is variables['params']['head']
  assert new['batch_stats']['head_bn'] is variables['batch_stats']['head_bn']
  # The input variables are untouched.
  assert not np.array_equal(np.asarray(variables['batch_stats']['encoder']['bn1']['var']),
                            sd['bn1.running_var'])


def test_load_pretrained_encoder_errors(tmp_path):
  variables = _fake_net_variables(18)
  with pytest.raises(FileNotFoundError, match='not found'):
    load_pretrained_encoder(variables, str(tmp_path / 'nope.safetensors'))
  sd50 = torchvision_state_dict(50, np.random.default_rng(8))
  path = str(tmp_path / 'r50.npz')
  np.savez(path, **sd50)
  with pytest.raises(ValueError, match='ResNet-18'):
    load_pretrained_encoder(variables, path)
  (tmp_path / 'w.bin').write_bytes(b'x')
  with pytest.raises(ValueError, match='unsupported extension'):
    load_pretrained_encoder(variables, str(tmp_path / 'w.bin'))
  with pytest.raises(ValueError, match='encoder'):
    load_pretrained_encoder({'params': {}, 'batch_stats': {}}, path)


def test_pth_without_torch_has_clear_message(tmp_path, monkeypatch):
  path = tmp_path / 'r18.pth'
  path.write_bytes(b'not really a checkpoint')
  monkeypatch.setitem(sys.modules, 'torch', None)  # makes `import torch` raise ImportError
  with pytest.raises(ImportError, match='PyTorch'):
    read_state_dict(str(path))


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='torch not installed')
def test_pth_with_torch(tmp_path):
  import torch
  sd = torchvision_state_dict(18, np.random.default_rng(9))
  path = str(tmp_path / 'r18.pth')
  torch.save({'state_dict': {k: torch.from_numpy(v) for k, v in sd.items()}}, path)
  loaded = read_state_dict(path)
  assert set(loaded) == set(sd)
  np.testing.assert_array_equal(loaded['layer2.0.downsample.0.weight'],
                                sd['layer2.0.downsample.0.weight'])
  variables = load_pretrained_encoder(_fake_net_variables(18), path)
  np.testing.assert_array_equal(variables['params']['encoder']['bn1']['scale'],
                                sd['bn1.weight'])
