"""Test-time knock-outs and diagnostics: each knock-out equals the network it claims to leave
(identity blocks, x-only kernels), the guidance swap moves guidance between images only, and the
sown branch norms are what they say; `config_from_record` rebuilds a recorded config."""
import sgdc_jax  # noqa: F401  (sets XLA flags before jax initialises)
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdc_jax.run import config as config_lib
from sgdc_jax.analysis import diagnose, knockouts
from sgdc_jax.models import build_model
from sgdc_jax.modules.sgdc import recording_diagnostics
from test_sgdc_net import fast_init, images, tiny_config


def _variables(model, x, seed=0):
  variables = fast_init(model, x, seed)
  rng = np.random.default_rng(seed + 1)
  # Non-zero guidance-projection biases, so zeroing the projection is not a no-op.
  def bias(path, leaf):
    names = [getattr(p, 'key', '') for p in path]
    if 'guidance_proj' in names and names[-1] == 'bias':
      return jnp.asarray(rng.normal(size=leaf.shape), leaf.dtype)
    return leaf
  return jax.tree_util.tree_map_with_path(bias, variables)


_COMPILED = {}


def _apply(model, variables, x):
  """`model.apply` in eval mode, jitted once per model (compiling dominates these tests)."""
  key = repr(model)
  if key not in _COMPILED:
    _COMPILED[key] = jax.jit(lambda v, im: model.apply(v, im, train=False))
  return _COMPILED[key](variables, x)


def _without(params, predicate):
  return {k: v for k, v in params.items() if not predicate(k)}


def test_blocks_off_equals_the_network_without_blocks():
  x = images(2)
  model = build_model(tiny_config(n_blocks=2))
  variables = _variables(model, x)
  knocked = knockouts.knocked_variables(variables, 'blocks_off')
  got = _apply(model, knocked, x)
  bare = build_model(tiny_config(n_blocks=0))
  bare_vars = {**variables, 'params': _without(variables['params'], lambda k: k.startswith('sgdc'))}
  want = _apply(bare, bare_vars, x)
  np.testing.assert_array_equal(np.asarray(got['logits']), np.asarray(want['logits']))
  intact = _apply(model, variables, x)
  assert np.abs(np.asarray(intact['logits']) - np.asarray(want['logits'])).max() > 1e-4
  # The input tree is unchanged.
  assert float(jnp.abs(variables['params']['sgdc0']['layer_scale1']).sum()) > 0


def test_zero_layer_scales_are_unchanged_by_blocks_off():
  x = images(2, seed=3)
  model = build_model(tiny_config(n_blocks=2))
  zero_scales = lambda path, leaf: (jnp.zeros_like(leaf) if getattr(path[-1], 'key', '')
                                    .startswith('layer_scale') else leaf)
  variables = jax.tree_util.tree_map_with_path(zero_scales, _variables(model, x, seed=3))
  a = _apply(model, variables, x)
  b = _apply(model, knockouts.knocked_variables(variables, 'blocks_off'), x)
  np.testing.assert_array_equal(np.asarray(a['logits']), np.asarray(b['logits']))


def test_dynamic_off_keeps_the_mlp_branch():
  x = images(2, seed=1)
  model = build_model(tiny_config(n_blocks=2))
  variables = _variables(model, x)
  knocked = knockouts.knocked_variables(variables, 'dynamic_off')
  p = knocked['params']['sgdc0']
  assert not np.asarray(p['layer_scale1']).any() and np.asarray(p['layer_scale2']).any()
  outs = [np.asarray(_apply(model, v, x)['logits']) for v in
          (variables, knocked, knockouts.knocked_variables(variables, 'blocks_off'))]
  assert np.abs(outs[0] - outs[1]).max() > 1e-5 and np.abs(outs[1] - outs[2]).max() > 1e-5


@pytest.mark.parametrize('source', ['structure', 'pooled'])
def test_guidance_zeroed_equals_kernels_from_x_alone(source):
  x = images(2, seed=2)
  model = build_model(tiny_config(n_blocks=2, kernel_source=source))
  variables = _variables(model, x)
  got = _apply(model, knockouts.knocked_variables(variables, 'guidance_zeroed'), x)
  # kernel_source 'none' builds gates and kernels from x alone; same weights otherwise.
  none = build_model(tiny_config(n_blocks=2, kernel_source='none'))
  params = {k: (_without(v, lambda n: n == 'guidance_proj') if k.startswith('sgdc') else v)
            for k, v in variables['params'].items() if k != 'sge'}
  stats = _without(variables['batch_stats'], lambda k: k == 'sge')
  want = _apply(none, {'params': params, 'batch_stats': stats}, x)
  np.testing.assert_allclose(np.asarray(got['logits']), np.asarray(want['logits']), atol=1e-6)
  intact = _apply(model, variables, x)
  assert np.abs(np.asarray(intact['logits']) - np.asarray(want['logits'])).max() > 1e-5


def test_guidance_swapped_moves_guidance_between_images_only():
  a, b = images(1, seed=4), images(1, seed=5)
  model = build_model(tiny_config(n_blocks=2))
  variables = _variables(model, a)
  swapped = knockouts.knocked_model(model, 'guidance_swapped')
  assert knockouts.knocked_variables(variables, 'guidance_swapped') is variables
  swap_fn = jax.jit(lambda v, im: swapped.apply(v, im, train=False))
  run = lambda m, x: (swap_fn(variables, x) if m is swapped else _apply(m, variables, x))
  ab = run(swapped, jnp.concatenate([a, b]))
  ba = run(swapped, jnp.concatenate([b, a]))
  intact = run(model, jnp.concatenate([a, b]))
  # Image a with b's guidance, whichever row a is in; the edge map is a's own.
  np.testing.assert_allclose(np.asarray(ab['logits'][0]), np.asarray(ba['logits'][1]), atol=1e-5)
  np.testing.assert_allclose(np.asarray(ab['edge_logits']), np.asarray(intact['edge_logits']),
                             atol=1e-6)
  assert np.abs(np.asarray(ab['logits'] - intact['logits'])).max() > 1e-5
  # Identical images: swapping changes nothing.
  aa = jnp.concatenate([a, a])
  np.testing.assert_allclose(np.asarray(run(swapped, aa)['logits']),
                             np.asarray(run(model, aa)['logits']), atol=1e-6)


def test_applicable_and_bad_names():
  assert knockouts.applicable('structure', 2) == knockouts.KNOCKOUTS
  assert knockouts.applicable('pooled', 2) == ('blocks_off', 'dynamic_off', 'guidance_zeroed')
  assert knockouts.applicable('none', 2) == ('blocks_off', 'dynamic_off')
  assert knockouts.applicable('structure', 0) == ()
  # Native-resolution passes hold one image: no other image's guidance to swap in.
  assert knockouts.applicable('structure', 2, one_image_per_pass=True) == (
      'blocks_off', 'dynamic_off', 'guidance_zeroed')
  assert set(knockouts.not_run('structure', 2, True)) == {'guidance_swapped'}
  assert knockouts.not_run('structure', 2, False) == {} == knockouts.not_run('pooled', 2, True)
  with pytest.raises(ValueError, match='unknown knock-out'):
    knockouts.knocked_variables({'params': {}}, 'blocks')
  with pytest.raises(ValueError, match='no SGDC block'):
    knockouts.knocked_variables({'params': {'head_out': {}}}, 'blocks_off')


def test_sown_branch_norms_and_layer_scale_stats():
  x = images(2, seed=6)
  model = build_model(tiny_config(n_blocks=1))
  variables = _variables(model, x)
  with recording_diagnostics():
    out, state = model.apply(variables, x, train=False, mutable=['diagnostics'])
  np.testing.assert_array_equal(np.asarray(out['logits']),
                                np.asarray(model.apply(variables, x, train=False)['logits']))
  assert 'diagnostics' not in jax.eval_shape(lambda: model.init(jax.random.key(0), x,
                                                                 train=False))
  sown = state['diagnostics']['sgdc0']
  assert set(sown) == {'input_sq', 'branch1_sq', 'mid_sq', 'branch2_sq'}
  assert all(v[0].shape == (2,) for v in sown.values())
  knocked = knockouts.knocked_variables(variables, 'blocks_off')
  with recording_diagnostics():
    _, zero = model.apply(knocked, x, train=False, mutable=['diagnostics'])
  z = zero['diagnostics']['sgdc0']
  assert not np.asarray(z['branch1_sq'][0]).any() and not np.asarray(z['branch2_sq'][0]).any()
  np.testing.assert_allclose(np.asarray(z['input_sq'][0]), np.asarray(z['mid_sq'][0]), rtol=1e-6)
  (row,) = knockouts.layer_scale_stats(variables['params'])
  ls1 = np.abs(np.asarray(variables['params']['sgdc0']['layer_scale1']))
  assert row['ls1_mean_abs'] == pytest.approx(ls1.mean()) and row['ls1_max_abs'] == pytest.approx(
      ls1.max())


def test_config_from_record_round_trip_and_unknown_field():
  config = config_lib.demo_config()
  config.model.layer_scale_init = 0.1
  record = config.to_dict()
  rebuilt = diagnose.config_from_record(record)
  assert config_lib.flatten(rebuilt) == config_lib.flatten(config)
  del record['eval']['nsd_tolerance']  # a field added after the run: keeps its default
  assert diagnose.config_from_record(record).eval.nsd_tolerance == 2.0
  record['model']['gone'] = 1
  with pytest.raises(ValueError, match='model.gone'):
    diagnose.config_from_record(record)


@pytest.mark.parametrize('window', [64, 32])
def test_native_branch_norm_inputs_are_what_the_native_scorer_sees(window):
  from sgdc_jax.data import pipeline, transforms
  from sgdc_jax.run import experiment, inference, windows
  config = config_lib.demo_config()
  config.data.synthetic.height, config.data.synthetic.width = 40, 56
  config.data.synthetic.validation_size = 2
  config.eval.resolution, config.eval.window = 'native', window
  exp = experiment.build(config)
  batches = list(diagnose._native_batches(exp, 'validation'))
  source = pipeline.open_source(config.data, 'validation')
  assert len(batches) == 2
  for idx, (images_, valid) in enumerate(batches):
    got = np.asarray(images_)
    assert got.shape[1:] == (min(window, 64), min(window, 64), 3)  # 40x56 pads to 64x64
    assert valid[0] and not valid[1:].any() and len(valid) == got.shape[0]
    image = inference.record_image(dict(source[idx]))
    padded = windows.pad_to_multiple(transforms.normalise(image, tuple(config.data.mean),
                                                          tuple(config.data.std)))
    top = left = (64 - window) // 2 if window < 64 else 0  # the central window
    np.testing.assert_allclose(got[0], padded[top:top + window, left:left + window], rtol=1e-6)
