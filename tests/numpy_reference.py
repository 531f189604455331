"""Independent NumPy implementations of SGE and SGDC, written from docs/design.md sections 2-4.

They take weights in the reference PyTorch layout (names and OIHW shapes) and NHWC
activations, and use float64 loops: slow and plain on purpose.
"""
import numpy as np
from scipy.special import erf


def conv2d(x, w, b=None, groups=1):
  """x (B,H,W,Cin), w (O, Cin/groups, k, k) OIHW, zero padding k//2, stride 1."""
  bsz, h, wd, cin = x.shape
  out_ch, in_per_group, k, _ = w.shape
  r = k // 2
  xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
  out = np.zeros((bsz, h, wd, out_ch))
  out_per_group = out_ch // groups
  for grp in range(groups):
    xs = slice(grp * in_per_group, (grp + 1) * in_per_group)
    os_ = slice(grp * out_per_group, (grp + 1) * out_per_group)
    for dy in range(k):
      for dx in range(k):
        out[..., os_] += np.einsum('bhwi,oi->bhwo', xp[:, dy:dy + h, dx:dx + wd, xs],
                                   w[os_, :, dy, dx])
  if b is not None:
    out += b
  return out


def batchnorm(x, sd, prefix, eps=1e-5):
  mean, var = sd[f'{prefix}.running_mean'], sd[f'{prefix}.running_var']
  return (x - mean) / np.sqrt(var + eps) * sd[f'{prefix}.weight'] + sd[f'{prefix}.bias']


def relu(x):
  return np.maximum(x, 0)


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def resize_bilinear(x, out_h, out_w):
  """PyTorch F.interpolate(bilinear, align_corners=False) semantics, per axis."""
  def axis_weights(n_in, n_out):
    mat = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
      src = max((i + 0.5) * scale - 0.5, 0.0)
      i0 = min(int(np.floor(src)), n_in - 1)
      i1 = min(i0 + 1, n_in - 1)
      lam = src - i0
      mat[i, i0] += 1 - lam
      mat[i, i1] += lam
    return mat
  rows, cols = axis_weights(x.shape[1], out_h), axis_weights(x.shape[2], out_w)
  return np.einsum('ih,bhwc,jw->bijc', rows, x, cols)


def adaptive_avg_pool(x, size):
  bsz, h, w, c = x.shape
  out = np.zeros((bsz, size, size, c))
  for i in range(size):
    for j in range(size):
      y0, y1 = (i * h) // size, -(-((i + 1) * h) // size)
      x0, x1 = (j * w) // size, -(-((j + 1) * w) // size)
      out[:, i, j] = x[:, y0:y1, x0:x1].mean(axis=(1, 2))
  return out


KX = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], float)
KY = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)


def sobel_gate(t):
  """The reference's full (C x C) Sobel convolution, done literally per output channel."""
  c = t.shape[-1]
  full_x = np.broadcast_to(KX, (c, c, 3, 3))
  full_y = np.broadcast_to(KY, (c, c, 3, 3))
  gx, gy = conv2d(t, full_x), conv2d(t, full_y)
  return sigmoid(np.sqrt(gx ** 2 + gy ** 2)) * t


def conv_bn_relu(x, sd, prefix, relu_out=True):
  y = batchnorm(conv2d(x, sd[f'{prefix}.conv.weight']), sd, f'{prefix}.bn')
  return relu(y) if relu_out else y


def refiner(t, sd, prefix):
  y = relu(batchnorm(conv2d(t, sd[f'{prefix}.refine.0.weight']), sd, f'{prefix}.refine.1'))
  y = relu(batchnorm(conv2d(y, sd[f'{prefix}.refine.3.weight']), sd, f'{prefix}.refine.4'))
  y = batchnorm(conv2d(y, sd[f'{prefix}.refine.6.weight']), sd, f'{prefix}.refine.7')
  return relu(t + y)


def sge(sd, deep, shallow):
  """Returns (edge_logits, guidance), eval-mode BatchNorm."""
  d = conv_bn_relu(deep, sd, 's4_proj')
  s = conv_bn_relu(shallow, sd, 's1_proj')
  d = refiner(sobel_gate(d), sd, 'refine4')
  s = refiner(sobel_gate(s), sd, 'refine1')
  d = resize_bilinear(d, s.shape[1], s.shape[2])
  f = conv_bn_relu(np.concatenate([d, s], -1), sd, 'fuse')
  return conv2d(f, sd['out_edge_map.weight']), conv2d(f, sd['out_guidance.weight'])


def layernorm(x, weight, bias, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * weight + bias


def aggregate(xn, probs, k):
  """out[b,y,x,c] = sum_t probs[b,y,x,head(c),t] * xn_pad[b,y+dy,x+dx,c]."""
  bsz, h, w, c = xn.shape
  heads = probs.shape[3]
  r = k // 2
  xp = np.pad(xn, ((0, 0), (r, r), (r, r), (0, 0)))
  out = np.zeros_like(xn, dtype=float)
  head_of_channel = np.arange(c) // (c // heads)
  for dy in range(k):
    for dx in range(k):
      p = probs[..., dy * k + dx][..., head_of_channel]  # (B, H, W, C)
      out += p * xp[:, dy:dy + h, dx:dx + w]
  return out


def softmax(z, axis=-1):
  z = z - z.max(axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis, keepdims=True)


def sgdc(sd, x, guidance, heads, k, kernel_source='structure', pool_size=7):
  """The SGDC block (drop_path 0)."""
  bsz, h, w, c = x.shape
  if kernel_source == 'structure':
    g = conv2d(resize_bilinear(guidance, h, w), sd['proj_guidance.weight'], sd['proj_guidance.bias'])
  elif kernel_source == 'pooled':
    g = conv2d(resize_bilinear(adaptive_avg_pool(x, pool_size), h, w),
               sd['proj_guidance.weight'], sd['proj_guidance.bias'])
  else:
    g = 0.0
  wmap = conv2d(x + g, sd['attn.weight'], sd['attn.bias'])
  a1, a2, kern = wmap[..., :c], wmap[..., c:2 * c], wmap[..., 2 * c:]
  x1 = conv2d(x * sigmoid(a1), sd['dwconv.weight'], sd['dwconv.bias'], groups=c)
  xn = layernorm(x, sd['norm1.weight'], sd['norm1.bias'])
  probs = softmax(kern.reshape(bsz, h, w, heads, k * k))
  x2 = aggregate(xn, probs, k) * sigmoid(a2)
  x = x + sd['ls1'] * (x1 + x2)
  y = layernorm(x, sd['norm2.weight'], sd['norm2.bias'])
  y = conv2d(y, sd['mlp.0.weight'], sd['mlp.0.bias'])
  y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
  y = conv2d(y, sd['mlp.2.weight'], sd['mlp.2.bias'])
  return x + sd['ls2'] * y


# ----------------------------------------------------------------- random reference weights
def _bn(rng, sd, prefix, n):
  sd[f'{prefix}.weight'] = rng.uniform(0.5, 1.5, n)
  sd[f'{prefix}.bias'] = rng.normal(0, 0.2, n)
  sd[f'{prefix}.running_mean'] = rng.normal(0, 0.2, n)
  sd[f'{prefix}.running_var'] = rng.uniform(0.5, 2.0, n)
  sd[f'{prefix}.num_batches_tracked'] = np.array(7)


def _w(rng, *shape):
  fan_in = np.prod(shape[1:])
  return rng.normal(0, 1 / np.sqrt(fan_in), shape)


def sgdc_state_dict(rng, dim, guide, heads, k, mlp_ratio=4.0):
  """Reference-named SGDC weights; layer scales well above 1e-6 so both branches matter."""
  hidden = int(dim * mlp_ratio)
  a = 2 * dim + heads * k * k
  sd = {
      'ls1': rng.uniform(0.5, 1.0, dim), 'ls2': rng.uniform(0.5, 1.0, dim),
      'proj_guidance.weight': _w(rng, dim, guide, 1, 1), 'proj_guidance.bias': rng.normal(0, .1, dim),
      'attn.weight': _w(rng, a, dim, 1, 1) * 2, 'attn.bias': rng.normal(0, .1, a),
      'norm1.weight': rng.uniform(0.5, 1.5, dim), 'norm1.bias': rng.normal(0, .1, dim),
      'norm2.weight': rng.uniform(0.5, 1.5, dim), 'norm2.bias': rng.normal(0, .1, dim),
      'dwconv.weight': _w(rng, dim, 1, 3, 3), 'dwconv.bias': rng.normal(0, .1, dim),
      'mlp.0.weight': _w(rng, hidden, dim, 1, 1), 'mlp.0.bias': rng.normal(0, .1, hidden),
      'mlp.2.weight': _w(rng, dim, hidden, 1, 1), 'mlp.2.bias': rng.normal(0, .1, dim),
  }
  return {k_: np.asarray(v, np.float32) for k_, v in sd.items()}


def sge_state_dict(rng, deep_in, shallow_in, bottleneck, mid, guide, ratio=4):
  red = bottleneck // ratio
  sd = {}
  for name, cin in (('s4_proj', deep_in), ('s1_proj', shallow_in)):
    sd[f'{name}.conv.weight'] = _w(rng, bottleneck, cin, 1, 1)
    _bn(rng, sd, f'{name}.bn', bottleneck)
  for name in ('refine4', 'refine1'):
    p = f'{name}.refine'
    sd[f'{p}.0.weight'] = _w(rng, red, bottleneck, 1, 1)
    _bn(rng, sd, f'{p}.1', red)
    sd[f'{p}.3.weight'] = _w(rng, red, red, 3, 3)
    _bn(rng, sd, f'{p}.4', red)
    sd[f'{p}.6.weight'] = _w(rng, bottleneck, red, 1, 1)
    _bn(rng, sd, f'{p}.7', bottleneck)
  sd['fuse.conv.weight'] = _w(rng, mid, 2 * bottleneck, 3, 3)
  _bn(rng, sd, 'fuse.bn', mid)
  sd['out_edge_map.weight'] = _w(rng, 1, mid, 1, 1)
  sd['out_guidance.weight'] = _w(rng, guide, mid, 1, 1)
  sob = np.zeros((bottleneck, bottleneck, 3, 3))
  sd['sobel_x.weight'], sd['sobel_y.weight'] = sob + KX, sob + KY
  return {k_: np.asarray(v, np.float32) if v.dtype.kind == 'f' else v for k_, v in sd.items()}
