"""Weights from the reference PyTorch modules (and torchvision ResNets) into our variables.

torchvision ResNet weights for `SGDCNet`'s encoder build on this table converter:
`sgdc_jax.models.torchvision_resnet_to_flax` and `sgdc_jax.models.load_pretrained_encoder`.

    state_dict = load_torch_checkpoint('sgdc_block.pth')
    variables = torch_state_dict_to_flax(state_dict, module='sgdc')
    y = SGDC(dim=256).apply(variables, x, guidance)

PyTorch stores convolutions as OIHW and we use HWIO (NHWC activations); BatchNorm running
statistics go to the 'batch_stats' collection. The reference's constant Sobel weights and
BatchNorm `num_batches_tracked` counters are accepted and ignored.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np
from flax import traverse_util

from sgdc_jax.errors import ConversionError

_IGNORED_SUFFIXES = ('num_batches_tracked',)
# Extensions `load_torch_checkpoint` reads (checked up front by `config.validate_config`).
WEIGHT_EXTENSIONS = ('.pth', '.pt', '.safetensors', '.npz')
_SGE_IGNORED = ('sobel_x.weight', 'sobel_y.weight')


def _as_numpy(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):  # torch.Tensor, without importing torch
    value = value.detach().cpu().float().numpy() if value.is_floating_point() else (
        value.detach().cpu().numpy())
  return np.asarray(value)


def _conv(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO


def _identity(w: np.ndarray) -> np.ndarray:
  return w


def bn_entries(torch_prefix: str, flax_path: tuple[str, ...], channels: int):
  """Table entries of one PyTorch BatchNorm2d (scale/bias params, running stats)."""
  return [
      (f'{torch_prefix}.weight', ('params',) + flax_path + ('scale',), (channels,), _identity),
      (f'{torch_prefix}.bias', ('params',) + flax_path + ('bias',), (channels,), _identity),
      (f'{torch_prefix}.running_mean', ('batch_stats',) + flax_path + ('mean',), (channels,),
       _identity),
      (f'{torch_prefix}.running_var', ('batch_stats',) + flax_path + ('var',), (channels,),
       _identity),
  ]


def conv_entry(torch_key: str, flax_path: tuple[str, ...], shape: tuple[int, ...]):
  """Table entry of one PyTorch conv weight `shape` (OIHW), stored as an HWIO kernel."""
  return (torch_key, ('params',) + flax_path + ('kernel',), shape, _conv)


def _shape(sd: Mapping[str, np.ndarray], key: str, dim: int) -> int:
  if key not in sd:
    raise ConversionError(f'missing keys: [{key!r}] (needed to infer the module size)')
  if sd[key].ndim <= dim:
    raise ConversionError(f'shape mismatch: {key!r} has shape {sd[key].shape}')
  return int(sd[key].shape[dim])


def _sgdc_table(sd: Mapping[str, np.ndarray]):
  """Reference SGDC keys -> (flax path, expected torch shape, transform)."""
  c = _shape(sd, 'ls1', 0)
  g = _shape(sd, 'proj_guidance.weight', 1)
  a = _shape(sd, 'attn.weight', 0)
  hidden = _shape(sd, 'mlp.0.weight', 0)
  vec = lambda key, path, n: (key, ('params',) + path, (n,), _identity)
  return [
      vec('ls1', ('layer_scale1',), c),
      vec('ls2', ('layer_scale2',), c),
      conv_entry('proj_guidance.weight', ('guidance_proj',), (c, g, 1, 1)),
      vec('proj_guidance.bias', ('guidance_proj', 'bias'), c),
      conv_entry('attn.weight', ('attn',), (a, c, 1, 1)),
      vec('attn.bias', ('attn', 'bias'), a),
      vec('norm1.weight', ('norm1', 'scale'), c),
      vec('norm1.bias', ('norm1', 'bias'), c),
      vec('norm2.weight', ('norm2', 'scale'), c),
      vec('norm2.bias', ('norm2', 'bias'), c),
      conv_entry('dwconv.weight', ('dwconv',), (c, 1, 3, 3)),
      vec('dwconv.bias', ('dwconv', 'bias'), c),
      conv_entry('mlp.0.weight', ('mlp_fc1',), (hidden, c, 1, 1)),
      vec('mlp.0.bias', ('mlp_fc1', 'bias'), hidden),
      conv_entry('mlp.2.weight', ('mlp_fc2',), (c, hidden, 1, 1)),
      vec('mlp.2.bias', ('mlp_fc2', 'bias'), c),
  ]


def _conv_bn(torch_conv, torch_bn, path, out_ch, in_ch, k):
  return [conv_entry(torch_conv, path + ('conv',), (out_ch, in_ch, k, k))] + bn_entries(
      torch_bn, path + ('bn',), out_ch)


def _sge_table(sd: Mapping[str, np.ndarray]):
  """Reference SGE keys -> (flax path, expected torch shape, transform)."""
  bottleneck = _shape(sd, 's4_proj.conv.weight', 0)
  deep_in = _shape(sd, 's4_proj.conv.weight', 1)
  shallow_in = _shape(sd, 's1_proj.conv.weight', 1)
  reduced = _shape(sd, 'refine4.refine.0.weight', 0)
  mid = _shape(sd, 'fuse.conv.weight', 0)
  guide = _shape(sd, 'out_guidance.weight', 0)
  table = (_conv_bn('s4_proj.conv.weight', 's4_proj.bn', ('deep_proj',), bottleneck, deep_in, 1)
           + _conv_bn('s1_proj.conv.weight', 's1_proj.bn', ('shallow_proj',), bottleneck,
                      shallow_in, 1))
  for torch_name, flax_name in (('refine4', 'deep_refiner'), ('refine1', 'shallow_refiner')):
    p = f'{torch_name}.refine'
    table += _conv_bn(f'{p}.0.weight', f'{p}.1', (flax_name, 'reduce'), reduced, bottleneck, 1)
    table += _conv_bn(f'{p}.3.weight', f'{p}.4', (flax_name, 'spatial'), reduced, reduced, 3)
    table += _conv_bn(f'{p}.6.weight', f'{p}.7', (flax_name, 'expand'), bottleneck, reduced, 1)
  table += _conv_bn('fuse.conv.weight', 'fuse.bn', ('fuse',), mid, 2 * bottleneck, 3)
  table += [conv_entry('out_edge_map.weight', ('edge_head',), (1, mid, 1, 1)),
            conv_entry('out_guidance.weight', ('guidance_head',), (guide, mid, 1, 1))]
  return table


def convert_with_table(state_dict: Mapping[str, Any], table, ignored=(),
                       target: Optional[Mapping] = None, what: str = 'the module') -> dict:
  """Applies a (torch key, flax path, torch shape, transform) table; shared by all converters.

  `ignored` keys are accepted and dropped, as is every `*.num_batches_tracked`; `what` names
  the expected model in error messages.

  Raises:
    ConversionError listing every missing, unknown and mis-shaped key at once.
  """
  sd = {k: _as_numpy(v) for k, v in state_dict.items()}
  expected = {entry[0] for entry in table}
  missing = sorted(expected - set(sd))
  unknown = sorted(k for k in sd if k not in expected and k not in ignored
                   and not k.endswith(_IGNORED_SUFFIXES))
  problems = []
  if missing:
    problems.append(f'missing keys: {missing}')
  if unknown:
    problems.append(f'unknown keys: {unknown}')
  mismatched = [f'{key}: got {sd[key].shape}, expected {shape}'
                for key, _, shape, _ in table if key in sd and sd[key].shape != shape]
  if mismatched:
    problems.append('shape mismatches: ' + '; '.join(mismatched))
  if problems:
    raise ConversionError(f'state_dict does not fit {what}: ' + ' | '.join(problems))
  out = traverse_util.unflatten_dict(
      {path: np.ascontiguousarray(transform(sd[key]).astype(np.float32))
       for key, path, _, transform in table})
  if target is not None:
    check_against_target(out, target)
  return out


def check_against_target(converted: Mapping, target: Mapping) -> None:
  """Checks converted variables against `module.init(...)` variables: same leaves, shapes."""
  got = traverse_util.flatten_dict(dict(converted))
  want = {path: leaf for path, leaf in traverse_util.flatten_dict(dict(target)).items()
          if path[0] in ('params', 'batch_stats')}
  problems = []
  missing = sorted('/'.join(p) for p in set(want) - set(got))
  extra = sorted('/'.join(p) for p in set(got) - set(want))
  if missing:
    problems.append(f'variables the module has but the state_dict does not fill: {missing}')
  if extra:
    problems.append(f'variables the module does not have: {extra}')
  mismatched = [f"{'/'.join(p)}: converted {got[p].shape}, module {tuple(want[p].shape)}"
                for p in set(got) & set(want) if tuple(got[p].shape) != tuple(want[p].shape)]
  if mismatched:
    problems.append('shape mismatches: ' + '; '.join(sorted(mismatched)))
  if problems:
    raise ConversionError(' | '.join(problems))


def torch_state_dict_to_flax(state_dict: Mapping[str, Any], module: str = 'sgdc',
                             target: Optional[Mapping] = None) -> dict:
  """Maps a reference PyTorch state_dict to `{'params': ..., 'batch_stats': ...}`.

  Args:
    state_dict: reference parameter names (docs/design.md section 3) to arrays or tensors,
      NCHW/OIHW layout.
    module: 'sgdc' (the SGDC block; kernel_source='structure') or 'sge'.
    target: optional variables from our module's `init`, to check leaf names and shapes.

  Returns:
    Nested dicts of float32 NumPy arrays; 'batch_stats' only for 'sge'.

  Raises:
    ConversionError (a ValueError) listing missing, unknown and mis-shaped keys.
  """
  if module == 'sgdc':
    return convert_with_table(state_dict, _sgdc_table(state_dict), target=target,
                              what='the SGDC block')
  if module == 'sge':
    return convert_with_table(state_dict, _sge_table(state_dict), ignored=_SGE_IGNORED,
                              target=target, what='SGE')
  raise ValueError(f"module must be 'sgdc' or 'sge', got {module!r}")


def load_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
  """Reads a state_dict from `.pth`/`.pt` (needs torch), `.safetensors` or `.npz`.

  `.pth`/`.pt` files are read with torch's weights-only unpickler, `.npz` without pickle: no
  code from the file is ever run. A checkpoint that wraps its weights in a 'state_dict' or
  'model' entry is unwrapped.

  Raises:
    FileNotFoundError: no such file. ImportError: a `.pth` without torch installed.
    ValueError: unknown extension, a file its format cannot read (corrupt, or a pickle of
      anything but tensors), or contents that are not a flat name -> array mapping.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'checkpoint file not found: {path}')
  ext = os.path.splitext(path)[1].lower()
  if ext not in WEIGHT_EXTENSIONS:
    raise ValueError(f'{path}: unsupported extension {ext!r} '
                     f'(expected {", ".join(WEIGHT_EXTENSIONS)})')
  if ext in ('.pth', '.pt'):
    try:
      import torch  # pylint: disable=g-import-not-at-top  (optional, heavy)
    except ImportError as e:
      raise ImportError(f'reading {path} needs PyTorch (`pip install torch`); or convert it '
                        'to .safetensors / .npz on a machine that has it') from e
    what = 'weights-only PyTorch state dict'
    read = lambda: torch.load(path, map_location='cpu', weights_only=True)
  elif ext == '.safetensors':
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top  (optional)
    what = 'safetensors file'
    read = lambda: load_file(path)
  else:
    what = 'NumPy .npz archive of arrays'

    def read():
      with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
  try:
    loaded = read()
  except Exception as e:  # pylint: disable=broad-except  (each reader has its own errors)
    # torch's own message advises weights_only=False, i.e. running code from the file: not
    # repeated here.
    raise ValueError(f'{path}: not a readable {what} ({type(e).__name__}); the file is '
                     'corrupt or holds something other than a mapping of names to tensors'
                     ) from None
  for wrapper in ('state_dict', 'model'):
    if isinstance(loaded, Mapping) and set(loaded) == {wrapper} or (
        isinstance(loaded, Mapping) and wrapper in loaded and isinstance(loaded[wrapper], Mapping)):
      loaded = loaded[wrapper]
      break
  if not isinstance(loaded, Mapping) or not all(
      hasattr(v, 'shape') for v in loaded.values()):
    raise ValueError(f'{path}: expected a mapping of parameter names to arrays')
  return {k: _as_numpy(v) for k, v in loaded.items()}
