"""`synthetic_lesions`: procedurally generated dermoscopy-like images with exact masks.

Each example is drawn from `np.random.default_rng([seed, index])`, so it depends only on
`(seed, index)`: any process can generate any example in any order, which makes the source a
Grain random-access source that needs no preparation. Every image holds

- a skin-toned background with low- and mid-frequency texture, sensor noise, vignetting and,
  sometimes, the dark circular frame of a dermoscope;
- one irregular pigmented lesion, a star-shaped region `rho < r(theta)` whose radius carries
  random harmonics, rendered with an opacity that is sharp along some boundary segments and
  fuzzy along others, with darker pigment clumps inside;
- sometimes small satellite lesions and thin radial streaks (small and thin structures);
- sometimes hairs: thin dark curves drawn over everything that do not change the mask.

The mask is exactly the set where the lesion opacity reaches 1/2 (main lesion, satellites
and streaks), so it is defined by the same function that paints the image. Lesion area
fractions lie in [0.08, 0.5] (measured 0.10-0.46 over 300 examples, mean 0.27: the target
area is drawn from U(0.10, 0.45), the frame cuts some large lesions, satellites and streaks
add a little); lesion luma is below the skin's by 20-150 grey levels (median ~88).
"""
from __future__ import annotations

import numpy as np

# Skin tones (linear RGB in [0, 1]) from light to tanned; backgrounds interpolate between two.
_SKIN = np.array([[0.95, 0.80, 0.72], [0.90, 0.70, 0.60], [0.84, 0.64, 0.52],
                  [0.78, 0.57, 0.45], [0.93, 0.74, 0.72]], np.float32)
# Pigment from light brown to near-black brown.
_PIGMENT_LIGHT = np.array([0.62, 0.42, 0.30], np.float32)
_PIGMENT_DARK = np.array([0.24, 0.14, 0.10], np.float32)
_BLUE_GREY = np.array([0.42, 0.46, 0.56], np.float32)
_TABLE = 1024  # angular resolution of the lesion radius / softness lookup tables


def _smooth_field(rng, y, x, cells: int) -> np.ndarray:
  """Zero-mean smooth random field (H, W) with std about 1, from a `cells`-grid of normals.

  Separable Gaussian-kernel interpolation (two small matrix products), so the cost is a
  BLAS call rather than per-pixel Python.
  """
  def weights(coords):
    centres = np.linspace(coords[0], coords[-1], cells, dtype=np.float32)
    spacing = float(centres[1] - centres[0])
    # Exponent clipped so that no weight is a (very slow) float32 denormal.
    w = np.exp(np.maximum(-0.5 * ((coords[:, None] - centres[None, :]) / spacing) ** 2, -30.0))
    # Normalise rows to unit L2 norm: unit-variance noise stays unit-variance.
    return (w / np.sqrt((w * w).sum(axis=1, keepdims=True))).astype(np.float32)
  grid = rng.standard_normal((cells, cells), dtype=np.float32)
  return _small_matmul(_small_matmul(weights(y), grid), weights(x).T)


def _small_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """`a @ b` in row blocks small enough that BLAS stays single-threaded.

  Multi-threaded BLAS on these tiny products spin-waits: on a busy 2-core host that cost
  ~10x the work itself (measured with OpenBLAS). Blocks of < 2**17 multiply-adds avoid it.
  """
  out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
  rows = max(1, (1 << 17) // max(1, b.shape[0] * b.shape[1]))
  for start in range(0, a.shape[0], rows):
    np.matmul(a[start:start + rows], b, out=out[start:start + rows])
  return out


def _angle_table(rng, harmonics, amplitude: float, decay: float) -> np.ndarray:
  """Random periodic function on `_TABLE` angles: sum_k a_k cos(k t + phi_k)."""
  t = np.linspace(0.0, 2 * np.pi, _TABLE, endpoint=False, dtype=np.float32)
  ks = np.asarray(harmonics, np.float32)
  amps = rng.normal(0.0, 1.0, ks.shape).astype(np.float32) * amplitude / ks ** decay
  phases = rng.uniform(0, 2 * np.pi, ks.shape).astype(np.float32)
  return (np.cos(ks[:, None] * t[None, :] + phases[:, None]) * amps[:, None]).sum(axis=0)


def _lookup(table: np.ndarray, theta: np.ndarray) -> np.ndarray:
  """Table value at angles `theta` in [-pi, pi]."""
  idx = ((theta + np.pi) * (_TABLE / (2 * np.pi))).astype(np.int32)
  return table[np.minimum(idx, _TABLE - 1)]


def _ramp(z: np.ndarray) -> np.ndarray:
  """Smoothstep opacity: 0 for z <= -1, 1/2 at z = 0 (the mask boundary), 1 for z >= 1."""
  a = np.clip(0.5 + 0.5 * z, 0.0, 1.0)
  return a * a * (3.0 - 2.0 * a)


def _window(centre: float, radius: float, coords: np.ndarray) -> slice:
  """Index range of the sorted `coords` within `radius` of `centre`."""
  lo, hi = np.searchsorted(coords, [centre - radius, centre + radius])
  return slice(int(lo), int(hi))


def generate(seed: int, index: int, height: int, width: int) -> dict:
  """Generates example `index` of the stream `seed`.

  Args:
    seed: stream seed (int >= 0).
    index: example index (int >= 0).
    height, width: image size in pixels (each >= 16).

  Returns:
    {'image': uint8 (height, width, 3), 'mask': uint8 (height, width) in {0, 1},
     'id': str 'synthetic_<seed>_<index>'}.
  """
  rng = np.random.default_rng([int(seed), int(index)])
  scale = float(min(height, width))  # normalised units: 1.0 == the shorter side
  pixel = 1.0 / scale
  y = ((np.arange(height, dtype=np.float32) + 0.5) - height / 2) / scale
  x = ((np.arange(width, dtype=np.float32) + 0.5) - width / 2) / scale
  yy, xx = y[:, None], x[None, :]

  # --- skin background: tone x (texture, vignetting) + redness ---------------------------
  a, b = rng.choice(len(_SKIN), 2, replace=False)
  tone = (_SKIN[a] + (_SKIN[b] - _SKIN[a]) * rng.uniform()) * rng.uniform(0.92, 1.04)
  radius2 = yy * yy + xx * xx
  corner2 = (height * height + width * width) / (4 * scale * scale)
  shade = 1.0 + 0.04 * _smooth_field(rng, y, x, 5) + 0.02 * _smooth_field(rng, y, x, 18)
  q = radius2 * np.float32(1.0 / corner2)  # 0 at the centre, 1 in the corners
  shade -= q * (np.float32(rng.uniform(0.08, 0.30)) + q * np.float32(rng.uniform(-0.05, 0.1)))
  redness = 0.025 * _smooth_field(rng, y, x, 8)

  # --- main lesion: star-shaped radius with harmonics, angle-dependent softness ---------
  target_area = rng.uniform(0.10, 0.45) * (height * width) / (scale * scale)
  r_table = _angle_table(rng, range(2, 8), 0.16, 0.9) + _angle_table(rng, range(8, 20), 0.05, 0.5)
  r_table = np.maximum(1.0 + r_table, 0.45)
  r0 = float(np.sqrt(target_area / (np.pi * float(np.mean(r_table ** 2)))))
  r_table = (r0 * r_table).astype(np.float32)
  # Fuzzy (up to ~6% of the side) on some segments, sharp (~0.4 px) on others.
  fuzzy = 1.0 / (1.0 + np.exp(-4.0 * _angle_table(rng, range(1, 4), 1.0, 0.0)))
  inv_soft_table = (1.0 / (0.4 * pixel + fuzzy * rng.uniform(0.015, 0.06))).astype(np.float32)
  centre = rng.normal(0.0, 0.06, 2)
  angle = rng.uniform(0, np.pi)
  stretch = rng.uniform(0.8, 1.25)
  c, s = float(np.cos(angle)), float(np.sin(angle))
  dy, dx = yy - np.float32(centre[0]), xx - np.float32(centre[1])
  u = dx * np.float32(c / stretch) + dy * np.float32(s / stretch)
  v = dy * np.float32(c * stretch) - dx * np.float32(s * stretch)
  rho = np.sqrt(u * u + v * v)
  theta = np.arctan2(v, u)
  tidx = np.minimum(((theta + np.pi) * (_TABLE / (2 * np.pi))).astype(np.int32), _TABLE - 1)
  signed = r_table[tidx] - rho  # > 0 inside
  mask = signed > 0
  alpha = _ramp(signed * inv_soft_table[tidx])

  # --- thin radial streaks (pseudopods): part of the lesion ------------------------------
  if rng.uniform() < 0.4:
    for _ in range(rng.integers(1, 4)):
      t0 = rng.uniform(-np.pi, np.pi)
      r_edge = float(_lookup(r_table, np.array([t0], np.float32))[0])
      reach = r_edge + rng.uniform(0.05, 0.14)
      half = rng.uniform(1.0, 2.0) * pixel
      # Only the window around the ray segment from 0.8 * r_edge to `reach` can change.
      ends_u = np.array([0.8 * r_edge, reach]) * np.cos(t0) * stretch
      ends_v = np.array([0.8 * r_edge, reach]) * np.sin(t0) / stretch
      ey, ex = centre[0] + ends_u * s + ends_v * c, centre[1] + ends_u * c - ends_v * s
      margin = 3 * pixel
      rows = _window((ey.min() + ey.max()) / 2, (ey.max() - ey.min()) / 2 + margin, y)
      cols = _window((ex.min() + ex.max()) / 2, (ex.max() - ex.min()) / 2 + margin, x)
      th, rh = theta[rows, cols], rho[rows, cols]
      gap = np.abs((th - np.float32(t0 - np.pi)) % np.float32(2 * np.pi) - np.float32(np.pi)) * rh
      streak = np.clip((half - gap) * scale + 0.5, 0.0, 1.0) * (rh < reach)
      alpha[rows, cols] = np.maximum(alpha[rows, cols], streak)
      mask[rows, cols] |= streak >= 0.5

  # --- satellite lesions: small, sharp-ish blobs near the main lesion -------------------
  for _ in range(rng.choice(4, p=[0.45, 0.25, 0.2, 0.1])):
    t0 = rng.uniform(-np.pi, np.pi)
    dist = float(_lookup(r_table, np.array([t0], np.float32))[0]) * rng.uniform(1.15, 1.6)
    pu, pv = dist * np.cos(t0) * stretch, dist * np.sin(t0) / stretch
    py, px = centre[0] + pu * s + pv * c, centre[1] + pu * c - pv * s  # back to the image frame
    sat_r = rng.uniform(0.012, 0.035)
    rows, cols = _window(py, 1.3 * sat_r + 2 * pixel, y), _window(px, 1.3 * sat_r + 2 * pixel, x)
    sy, sx = y[rows, None] - np.float32(py), x[None, cols] - np.float32(px)
    lobes = 1.0 + 0.15 * np.cos(3 * np.arctan2(sy, sx) + np.float32(rng.uniform(0, 6.3)))
    d = np.float32(sat_r) * lobes - np.sqrt(sy * sy + sx * sx)
    alpha[rows, cols] = np.maximum(alpha[rows, cols], _ramp(d * (scale / 0.8)))
    mask[rows, cols] |= d > 0

  # --- pigment: darker centre and clumps, optional blue-grey veil; blend over skin ------
  pigment = _PIGMENT_DARK + (_PIGMENT_LIGHT - _PIGMENT_DARK) * rng.uniform()
  depth = np.clip(signed * np.float32(1.0 / r0), 0.0, 1.0)
  darken = 1.0 - rng.uniform(0.1, 0.35) * depth
  darken -= 0.12 * np.clip(_smooth_field(rng, y, x, 24), 0.0, None) * (depth > 0)
  veil = None
  if rng.uniform() < 0.3:
    veil = 0.6 * np.clip(_smooth_field(rng, y, x, 6) - 0.3, 0.0, 1.0) * darken

  # --- dermoscope frame and sensor noise: one luminance factor --------------------------
  gain = 1.0 + rng.uniform(-0.02, 0.02, (height, width)).astype(np.float32)
  if rng.uniform() < 0.2:
    frame_r = np.sqrt(corner2) * rng.uniform(0.8, 0.95)
    gain *= 1.0 - 0.9 * np.clip((np.sqrt(radius2) - frame_r) * (1 / 0.03), 0.0, 1.0)

  # --- hairs: thin dark curves over everything; the mask is unchanged -------------------
  hit, cover = None, None
  n_hairs = 0 if rng.uniform() < 0.4 else int(rng.integers(1, 9))
  if n_hairs:
    cover = np.zeros((height, width), np.float32)
    for _ in range(n_hairs):
      phi = rng.uniform(0, np.pi)
      cp, sp = np.float32(np.cos(phi)), np.float32(np.sin(phi))
      hu = xx * cp + yy * sp
      hu2 = hu * hu
      offset, bend, twist = rng.uniform(-0.6, 0.6), rng.normal(0, 0.6), rng.normal(0, 0.6)
      curve = np.float32(offset) + hu2 * np.float32(bend) + hu2 * hu * np.float32(twist)
      gap = np.abs(yy * cp - xx * sp - curve)
      start = rng.uniform(-1.0, 0.2)
      half = rng.uniform(0.4, 1.2) * pixel
      opacity = rng.uniform(0.75, 0.95)
      stop = start + rng.uniform(0.3, 1.5)
      near = np.nonzero((gap < half + pixel) & (hu > start) & (hu < stop))
      hair = opacity * np.clip((half - gap[near]) * scale + 0.5, 0.0, 1.0)
      cover[near] = np.maximum(cover[near], hair)
    hit = np.nonzero(cover)
    cover = cover[hit]
  hair_colour = rng.uniform(0.06, 0.22) * np.array([1.0, 0.85, 0.75], np.float32)

  # --- compose channel by channel (contiguous 2-D operations are the fast ones) ---------
  image = np.empty((height, width, 3), np.uint8)
  for ch, red_weight in enumerate((1.0, -0.5, 0.0)):
    skin = shade * np.float32(tone[ch])
    if red_weight:
      skin += redness * np.float32(red_weight)
    lesion = darken * pigment[ch]
    if veil is not None:
      lesion += veil * (_BLUE_GREY[ch] - pigment[ch])
    plane = (skin + alpha * (lesion - skin)) * gain
    if hit is not None:
      plane[hit] += cover * (hair_colour[ch] - plane[hit])
    image[..., ch] = np.clip(plane * 255.0 + 0.5, 0, 255)
  return {'image': image, 'mask': mask.astype(np.uint8), 'id': f'synthetic_{seed}_{index}'}


class SyntheticLesions:
  """Grain random-access source of `num_examples` synthetic dermoscopy examples.

  `source[i]` -> {'image': uint8 (H, W, 3), 'mask': uint8 (H, W) in {0, 1}, 'id': str},
  a pure function of `(seed, i)`. Picklable (it only holds three numbers), so Grain worker
  processes can regenerate any example.

  Args:
    num_examples: number of examples (>= 1).
    image_size: `(H, W)`, each >= 16.
    seed: stream seed (int >= 0); different seeds give independent streams.

  Raises:
    ValueError: on a non-positive size or a negative seed.
  """

  def __init__(self, num_examples: int, image_size=(240, 320), seed: int = 0):
    if int(num_examples) != num_examples or num_examples < 1:
      raise ValueError('SyntheticLesions: num_examples must be a positive integer, '
                       f'got {num_examples!r}')
    size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 16:
      raise ValueError('SyntheticLesions: image_size must be (H, W) with H, W >= 16, '
                       f'got {image_size!r}')
    if int(seed) != seed or seed < 0:
      raise ValueError(f'SyntheticLesions: seed must be a non-negative integer, got {seed!r}')
    self.num_examples = int(num_examples)
    self.image_size = size
    self.seed = int(seed)

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index) -> dict:
    index = int(index)
    if index < 0:
      index += self.num_examples
    if not 0 <= index < self.num_examples:
      raise IndexError(f'SyntheticLesions index {index} out of range [0, {self.num_examples})')
    return generate(self.seed, index, *self.image_size)

  def __repr__(self) -> str:
    return (f'SyntheticLesions(num_examples={self.num_examples}, '
            f'image_size={self.image_size}, seed={self.seed})')
