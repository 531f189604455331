"""Reference state_dicts -> flax variables: round trip, errors, file formats."""
import sgdc_jax  # noqa: F401

import jax
import numpy as np
import pytest

from sgdc_jax import SGDC, SGE
from sgdc_jax.models.convert import (ConversionError, load_torch_checkpoint,
                              torch_state_dict_to_flax)
import numpy_reference as ref


def _sgdc_sd(seed=0):
  return ref.sgdc_state_dict(np.random.default_rng(seed), 8, 4, 2, 3)


def test_layouts():
  sd = _sgdc_sd()
  v = torch_state_dict_to_flax(sd, 'sgdc')['params']
  np.testing.assert_array_equal(v['attn']['kernel'][0, 0], sd['attn.weight'][:, :, 0, 0].T)
  np.testing.assert_array_equal(v['dwconv']['kernel'][:, :, 0, 5], sd['dwconv.weight'][5, 0])
  np.testing.assert_array_equal(v['layer_scale2'], sd['ls2'])
  sge = torch_state_dict_to_flax(ref.sge_state_dict(np.random.default_rng(0), 6, 4, 8, 8, 4),
                                 'sge')
  assert set(sge) == {'params', 'batch_stats'}
  assert set(sge['batch_stats']['deep_refiner']['spatial']['bn']) == {'mean', 'var'}


def test_missing_unknown_and_mismatched_keys_are_listed():
  sd = _sgdc_sd()
  del sd['norm2.bias']
  sd['extra.weight'] = np.zeros(3)
  sd['dwconv.bias'] = np.zeros(5, np.float32)
  with pytest.raises(ConversionError) as err:
    torch_state_dict_to_flax(sd, 'sgdc')
  msg = str(err.value)
  assert "missing keys: ['norm2.bias']" in msg
  assert "unknown keys: ['extra.weight']" in msg
  assert 'dwconv.bias: got (5,), expected (8,)' in msg


def test_ignored_entries_are_accepted():
  sd = ref.sge_state_dict(np.random.default_rng(1), 6, 4, 8, 8, 4)
  assert 'sobel_x.weight' in sd and 'fuse.bn.num_batches_tracked' in sd
  torch_state_dict_to_flax(sd, 'sge')  # no error


def test_target_check_catches_a_module_of_another_size():
  sd = _sgdc_sd()
  x, g = np.zeros((1, 4, 4, 8), np.float32), np.zeros((1, 2, 2, 4), np.float32)
  good = SGDC(8, guide_channels=4, num_heads=2, kernel_size=3).init(jax.random.key(0), x, g)
  torch_state_dict_to_flax(sd, 'sgdc', target=good)
  other = SGDC(8, guide_channels=4, num_heads=2, kernel_size=5).init(jax.random.key(0), x, g)
  with pytest.raises(ConversionError, match='attn/kernel'):
    torch_state_dict_to_flax(sd, 'sgdc', target=other)


def test_unknown_module_name():
  with pytest.raises(ValueError, match="'sgdc' or 'sge'"):
    torch_state_dict_to_flax(_sgdc_sd(), 'resnet')


@pytest.mark.parametrize('ext', ['.npz', '.safetensors', '.pth'])
def test_checkpoint_formats_round_trip(tmp_path, ext):
  sd = ref.sge_state_dict(np.random.default_rng(2), 6, 4, 8, 8, 4)
  path = str(tmp_path / f'sge{ext}')
  if ext == '.npz':
    np.savez(path, **sd)
  elif ext == '.safetensors':
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, path)
  else:
    torch = pytest.importorskip('torch')
    torch.save({'state_dict': {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}}, path)
  loaded = load_torch_checkpoint(path)
  assert set(loaded) == set(sd)
  for k in sd:
    np.testing.assert_array_equal(loaded[k], sd[k])
  rng = np.random.default_rng(3)
  deep, shallow = rng.normal(size=(1, 2, 2, 6)), rng.normal(size=(1, 8, 8, 4))
  edge, _ = SGE(bottleneck=8, mid=8, guide_channels=4).apply(
      torch_state_dict_to_flax(loaded, 'sge'), deep.astype(np.float32), shallow.astype(np.float32))
  np.testing.assert_allclose(np.asarray(edge), ref.sge(sd, deep, shallow)[0], rtol=1e-5, atol=1e-5)


def test_checkpoint_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    load_torch_checkpoint(str(tmp_path / 'nope.pth'))
  bad = tmp_path / 'weights.h5'
  bad.write_bytes(b'x')
  with pytest.raises(ValueError, match='unsupported extension'):
    load_torch_checkpoint(str(bad))
