"""Test-time knock-outs of a trained SGDCNet: how much do its SGDC blocks and their guidance carry?

Each knock-out changes the trained network at inference only, then the split is scored by the
ordinary `inference.Scorer`, so a knock-out's numbers differ from the intact network's by the
knock-out alone:

- `blocks_off`: both layer scales of every SGDC block set to 0, so every block is the identity
  (`x + 0 * branch`);
- `dynamic_off`: `layer_scale1 = 0` in every block: the gated depthwise + pixel-adaptive branch
  is removed, the MLP branch stays;
- `guidance_zeroed`: the guidance projection's kernel and bias set to 0 in every block, so the
  gates and kernels are generated from `x` alone (`structure`: no SGE guidance; `pooled`: no
  pooled context);
- `guidance_swapped` (`structure` only): every image gets the SGE guidance of the previous
  image of its eval batch (a cyclic roll over the batch; in a padded last batch, the first
  image may get the guidance of an all-zero padding row). Not run with native-resolution
  inference (`eval.resolution='native'`): each forward pass there holds windows and flips of
  one image, so the roll would give an image its own guidance, or none changed at all.

The first three edit parameters (`knocked_variables`); the swap intercepts `SGE.__call__`
(`knocked_model`), so the network's code is not changed for any of them.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from sgdc_jax.modules import SGE

DESCRIPTIONS = {
    'blocks_off': 'both layer scales 0: every SGDC block is the identity',
    'dynamic_off': 'layer_scale1 0: the dynamic-convolution branch removed, the MLP kept',
    'guidance_zeroed': 'guidance projection 0: gates and kernels from x alone',
    'guidance_swapped': "SGE guidance of another image of the batch (cyclic roll)",
}
KNOCKOUTS = tuple(DESCRIPTIONS)
# Why a knock-out that `applicable` drops for one-image forward passes is not run.
ONE_IMAGE_PER_PASS = {
    'guidance_swapped': 'with eval.resolution=native each forward pass holds one image, whose '
                        "guidance cannot be swapped with another image's",
}


def applicable(kernel_source: str, n_blocks: int, one_image_per_pass: bool = False
               ) -> tuple[str, ...]:
  """The knock-outs that change a network with this kernel source and block count
  (`one_image_per_pass`: the scorer's forward passes each hold one image, as native-resolution
  inference does; `guidance_swapped` then has no other image to take guidance from)."""
  if n_blocks == 0:
    return ()
  names = ['blocks_off', 'dynamic_off']
  if kernel_source in ('structure', 'pooled'):
    names.append('guidance_zeroed')
  if kernel_source == 'structure':
    names.append('guidance_swapped')
  if one_image_per_pass:
    names = [n for n in names if n not in ONE_IMAGE_PER_PASS]
  return tuple(names)


def not_run(kernel_source: str, n_blocks: int, one_image_per_pass: bool) -> dict[str, str]:
  """`{knock-out: why}` for those that would change the network but `applicable` drops."""
  kept = applicable(kernel_source, n_blocks, one_image_per_pass)
  return {n: ONE_IMAGE_PER_PASS[n] for n in applicable(kernel_source, n_blocks)
          if n not in kept}


def _block_names(params: Any) -> list[str]:
  names = sorted(k for k in params if k.startswith('sgdc') and k[4:].isdigit())
  if not names:
    raise ValueError('knockouts: the parameters hold no SGDC block (sgdc0, sgdc1, ...)')
  return names


def knocked_variables(variables: dict[str, Any], name: str) -> dict[str, Any]:
  """`variables` with knock-out `name` applied to the parameters (a new tree; the input is
  unchanged). `guidance_swapped` leaves the parameters as they are.

  Raises:
    ValueError: unknown name, or no SGDC block / guidance projection to knock out.
  """
  if name not in DESCRIPTIONS:
    raise ValueError(f'knockouts: unknown knock-out {name!r}; expected one of {KNOCKOUTS}')
  if name == 'guidance_swapped':
    return variables
  params = flax.core.unfreeze(variables['params'])
  params = jax.tree.map(lambda x: x, params)  # copy the containers before editing
  for block in _block_names(params):
    p = dict(params[block])
    if name in ('blocks_off', 'dynamic_off'):
      p['layer_scale1'] = jnp.zeros_like(p['layer_scale1'])
    if name == 'blocks_off':
      p['layer_scale2'] = jnp.zeros_like(p['layer_scale2'])
    if name == 'guidance_zeroed':
      if 'guidance_proj' not in p:
        raise ValueError(f'knockouts: block {block} has no guidance projection '
                         "(kernel_source 'none'); guidance_zeroed does not apply")
      p['guidance_proj'] = jax.tree.map(jnp.zeros_like, p['guidance_proj'])
    params[block] = p
  return {**variables, 'params': params}


def _swap_guidance(next_fun: Callable, args, kwargs, context):
  out = next_fun(*args, **kwargs)
  if isinstance(context.module, SGE) and context.method_name == '__call__':
    edge_logits, guidance = out
    return edge_logits, jnp.roll(guidance, 1, axis=0)
  return out


class _Intercepted:
  """A model whose `apply` runs under a flax method interceptor (read at trace time)."""

  def __init__(self, model: nn.Module, interceptor: Callable):
    self._model = model
    self._interceptor = interceptor

  def apply(self, *args, **kwargs):
    with nn.intercept_methods(self._interceptor):
      return self._model.apply(*args, **kwargs)


def knocked_model(model: nn.Module, name: str) -> Any:
  """The object whose `apply` the scorer should call for knock-out `name`: `model` itself,
  or for `guidance_swapped` a wrapper that swaps SGE's guidance between images."""
  if name not in DESCRIPTIONS:
    raise ValueError(f'knockouts: unknown knock-out {name!r}; expected one of {KNOCKOUTS}')
  return _Intercepted(model, _swap_guidance) if name == 'guidance_swapped' else model


def layer_scale_stats(params: Any) -> list[dict[str, Any]]:
  """Per SGDC block: mean and max |layer_scale1| and |layer_scale2| (floats)."""
  out = []
  for block in _block_names(params):
    row: dict[str, Any] = {'block': block}
    for key, short in (('layer_scale1', 'ls1'), ('layer_scale2', 'ls2')):
      v = jnp.abs(jnp.asarray(params[block][key], jnp.float32))
      row[f'{short}_mean_abs'] = float(v.mean())
      row[f'{short}_max_abs'] = float(v.max())
    out.append(row)
  return out
