"""torchvision/timm ResNet weights -> the flax `ResNet` encoder of `SGDCNet`.

`torchvision_resnet_to_flax` renames and transposes a state_dict (OIHW -> HWIO);
`load_pretrained_encoder` reads a local `.pth`, `.safetensors` or `.npz` file and inserts the
converted weights into an `SGDCNet`'s variables (subtree 'encoder'). Nothing is downloaded.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import flax
import jax

from sgdc_jax.models import convert
from sgdc_jax.models.resnet import EXPANSION, RESNET_SPECS, STAGE_WIDTHS


def _module_table(depth: int) -> dict[str, tuple[str, tuple[int, ...]]]:
  """torch module prefix -> ('conv', OIHW shape) or ('bn', (C,)), for every encoder module."""
  if depth not in RESNET_SPECS:
    raise ValueError(f'ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth!r}')
  kind, blocks = RESNET_SPECS[depth]
  table: dict[str, tuple[str, tuple[int, ...]]] = {
      'conv1': ('conv', (64, 3, 7, 7)), 'bn1': ('bn', (64,))}
  in_ch = 64
  for stage, (n_blocks, width) in enumerate(zip(blocks, STAGE_WIDTHS)):
    out_ch = width * EXPANSION[kind]
    for j in range(n_blocks):
      p = f'layer{stage + 1}.{j}'
      if kind == 'basic':
        convs = [(width, in_ch, 3), (width, width, 3)]
      else:
        convs = [(width, in_ch, 1), (width, width, 3), (out_ch, width, 1)]
      for z, (o, i, k) in enumerate(convs, start=1):
        table[f'{p}.conv{z}'] = ('conv', (o, i, k, k))
        table[f'{p}.bn{z}'] = ('bn', (o,))
      stride = 2 if (j == 0 and stage > 0) else 1
      if j == 0 and (stride != 1 or in_ch != out_ch):
        table[f'{p}.downsample.0'] = ('conv', (out_ch, in_ch, 1, 1))
        table[f'{p}.downsample.1'] = ('bn', (out_ch,))
      in_ch = out_ch
  return table


def _flax_module_path(torch_prefix: str) -> tuple[str, ...]:
  """'layer1.0.downsample.1' -> ('layer1_0', 'downsample_1'); 'bn1' -> ('bn1',)."""
  parts = torch_prefix.split('.')
  if parts[0].startswith('layer'):
    block = f'{parts[0]}_{parts[1]}'
    rest = parts[2:]
    if rest[0] == 'downsample':
      return (block, f'downsample_{rest[1]}')
    return (block, rest[0])
  return (parts[0],)


def torchvision_resnet_to_flax(state_dict: Mapping[str, Any], depth: int
                               ) -> dict[str, dict]:
  """Converts a torchvision (or timm) ResNet state_dict into `ResNet(depth)` variables.

  Args:
    state_dict: name -> array-like (NumPy arrays, or anything `np.asarray` accepts), with
      torchvision's names: `conv1.weight` (64, 3, 7, 7), `bn1.{weight,bias,running_mean,
      running_var,num_batches_tracked}`, `layerX.Y.convZ.weight`, `layerX.Y.bnZ.*`,
      `layerX.Y.downsample.{0,1}.*`. `fc.*` entries are ignored; `num_batches_tracked` is
      optional.
    depth: 18, 34, 50 or 101.

  Returns:
    `{'params': ..., 'batch_stats': ...}` nested dicts of float32 NumPy arrays shaped like the
    flax `ResNet(depth)` variables (conv kernels HWIO).

  Raises:
    ValueError: unsupported depth; missing keys, unknown keys or shape mismatches (all of
      them listed in the message).
  """
  table = []
  for prefix, (kind, shape) in _module_table(depth).items():
    path = _flax_module_path(prefix)
    if kind == 'conv':
      table.append(convert.conv_entry(f'{prefix}.weight', path, shape))
    else:
      table += convert.bn_entries(prefix, path, shape[0])
  return convert.convert_with_table(
      state_dict, table, ignored=[k for k in state_dict if k.startswith('fc.')],
      what=f'a torchvision ResNet-{depth}')


def _infer_depth(encoder_params: Mapping[str, Any]) -> int:
  """Recovers the ResNet depth from the block names of an encoder 'params' subtree."""
  n_blocks = tuple(sum(1 for k in encoder_params if k.startswith(f'layer{s}_'))
                   for s in range(1, 5))
  kind = 'bottleneck' if 'conv3' in encoder_params.get('layer1_0', {}) else 'basic'
  for depth, spec in RESNET_SPECS.items():
    if spec == (kind, n_blocks):
      return depth
  raise ValueError(f'variables hold no known ResNet encoder (blocks per stage {n_blocks}, '
                   f'{kind} blocks)')


def state_dict_depth(state_dict: Mapping[str, Any]) -> Optional[int]:
  """The torchvision ResNet depth whose block layout the keys of `state_dict` have (blocks
  per stage `layerS.J.*`, bottleneck blocks by their `conv3`), or None when none matches."""
  blocks = [set() for _ in range(4)]
  for key in state_dict:
    m = re.match(r'layer([1-4])\.(\d+)\.', key)
    if m:
      blocks[int(m.group(1)) - 1].add(int(m.group(2)))
  kind = 'bottleneck' if 'layer1.0.conv3.weight' in state_dict else 'basic'
  for depth, spec in RESNET_SPECS.items():
    if spec == (kind, tuple(len(b) for b in blocks)):
      return depth
  return None


def _explain_mismatch(state_dict: Mapping[str, Any], depth: int, path: str) -> str:
  """Why the file at `path` cannot fill a `ResNet(depth)` encoder, in one sentence."""
  found = state_dict_depth(state_dict)
  if found is not None:
    return (f'{path}: ResNet-{found} weights for a resnet{depth} encoder (model.encoder); '
            f'set model.encoder=resnet{found} or use ResNet-{depth} weights')
  if 'conv1.weight' not in state_dict or not any(k.startswith('layer1.') for k in state_dict):
    keys = sorted(state_dict)
    return (f'{path}: not a torchvision/timm ResNet state dict (no conv1.weight / layer1.* '
            f'keys; {len(keys)} keys such as {keys[:5]})')
  return ''


def load_pretrained_encoder(variables: Mapping[str, Any], path: str) -> dict[str, Any]:
  """Returns `variables` of an `SGDCNet` with the encoder replaced by the weights in `path`.

  Args:
    variables: `{'params': {'encoder': ..., ...}, 'batch_stats': {'encoder': ..., ...}}` as
      returned by `SGDCNet.init` (dict or FrozenDict). Not modified.
    path: local torchvision/timm ResNet file (`.pth`, `.safetensors` or `.npz`), with the
      depth matching the network's encoder.

  Returns:
    New variables (same container type as given); every other entry is shared unchanged. The
    encoder arrays are float32 `jax.Array`s.

  Raises:
    FileNotFoundError: missing file. ValueError naming `path`: not a readable weights file,
    not a ResNet, a ResNet of another depth (named), other wrong keys/shapes (see
    `torchvision_resnet_to_flax`); or variables without an encoder.
  """
  frozen = isinstance(variables, flax.core.FrozenDict)
  new = flax.core.unfreeze(variables) if frozen else dict(variables)
  if 'encoder' not in new.get('params', {}) or 'encoder' not in new.get('batch_stats', {}):
    raise ValueError("variables must contain 'params'/'encoder' and 'batch_stats'/'encoder' "
                     '(from SGDCNet.init)')
  depth = _infer_depth(new['params']['encoder'])
  state_dict = convert.load_torch_checkpoint(path)
  try:
    converted = torchvision_resnet_to_flax(state_dict, depth)
  except convert.ConversionError as e:
    raise convert.ConversionError(_explain_mismatch(state_dict, depth, path) or f'{path}: {e}'
                                  ) from None
  for collection in ('params', 'batch_stats'):
    old = new[collection]['encoder']
    old_struct = jax.tree.structure(old)
    if jax.tree.structure(converted[collection]) != old_struct:
      raise ValueError(f'converted {collection} tree does not match the encoder in variables')
    for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(converted[collection])):
      if a.shape != b.shape:
        raise ValueError(f'converted {collection} shape {b.shape} != encoder shape {a.shape}')
    new[collection] = dict(new[collection])
    new[collection]['encoder'] = jax.tree.map(jax.numpy.asarray, converted[collection])
  return flax.core.freeze(new) if frozen else new
