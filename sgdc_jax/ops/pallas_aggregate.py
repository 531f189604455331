"""Fused softmax + pixel-adaptive aggregation as one Pallas kernel (Triton on GPU).

    p[b, y, x, j, :] = softmax(logits[b, y, x, j, :])             (over the k*k taps)
    out[b, y, x, c]  = sum_{dy, dx} p[b, y, x, head(c), dy*k + dx] * x_pad[b, y+dy, x+dx, c]

with `x_pad` zero-padded by r = k // 2 (docs/design.md section 3, step 4): padded taps take
softmax mass and contribute zero, exactly as `softmax` + `aggregate_unfold`.

Design (why each choice):
- Backend: the Triton lowering of `pl.pallas_call` (`CompilerParams` from
  `jax.experimental.pallas.triton`). The taps read shifted neighbours at arbitrary offsets,
  i.e. gathers over pixels that stay contiguous over channels; Triton expresses them as
  masked pointer loads on any H, W, and runs on Ampere and Hopper. Mosaic GPU (the default
  of `pallas_call` in this JAX) wants TMA-aligned tiles and warpgroup layouts, a poor fit for
  a halo stencil on arbitrary shapes. TPU has no variant here: `impl='auto'` uses `shift`.
- Grid `(spatial tiles, heads, B)`; a program owns a TH x TW pixel tile and one head's
  channels (padded to a power of two and masked: Triton blocks are powers of two). Each tap
  reads the shifted (TH, TW, C/heads) window with a masked load.
  A `fori_loop` over taps (an `scf.for` whose loads Triton can software-pipeline,
  `num_stages`) keeps the code size and the interpret-mode trace independent of k.
  Triton has no addressable shared memory, so the halo tile, (TH + k - 1) x (TW + k - 1)
  pixels, is held on chip by the L1 cache: the k*k windows overlap and hit it.
- Forward: logits tile -> max, exp-sum -> per-pixel log-sum-exp (saved, FlashAttention
  style); p_t = exp(logit_t - lse) per tap; fp32 accumulation. Residuals: x, logits, lse.
- Backward (one kernel, no atomics, every output written by the program that owns it):
  dp_t = sum_c g * x_t, D = sum_t p_t dp_t, dlogit_t = p_t (dp_t - D); and
  dx[q] = sum_t p_t[q - s_t] g[q - s_t] gathered from the neighbours q - s_t, with p
  recomputed from the saved log-sum-exp.
- Several devices: each kernel is wrapped in `custom_partitioning` that keeps a batch-sharded
  input batch-sharded (the kernel works per image), so a data-parallel jit runs it on local
  shards instead of gathering the batch (or failing: a Pallas kernel cannot index a sharded
  array).
- Out-of-image neighbours: indices are clamped into the image and the value masked to zero,
  so no load is ever out of bounds, on the GPU or in interpret mode (whose dynamic slices
  would otherwise shift a window that starts before the image).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
from jax.experimental import pallas as pl
from jax.experimental.custom_partitioning import custom_partitioning
from jax.experimental.pallas import triton as pltriton
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from sgdc_jax.ops.shapes import check_aggregate_args

# (TH, TW) pixels per program: at C/heads = 64 a (64, 64) fp32 accumulator, 32 registers a
# thread with 4 warps. Tile and Triton launch parameters are first guesses, not yet tuned on
# a GPU (benchmarks/bench_sgdc.py measures them).
TILE = (8, 8)
NUM_WARPS = 4
NUM_STAGES = 2


def _is_power_of_two(n) -> bool:
  return isinstance(n, int) and n >= 1 and not n & (n - 1)


@dataclasses.dataclass(frozen=True)
class Launch:
  """Static launch parameters: (TH, TW) pixels per program and Triton's warps and stages."""
  tile: tuple[int, int] = TILE
  num_warps: int = NUM_WARPS
  num_stages: int = NUM_STAGES

  def __post_init__(self):
    if len(self.tile) != 2 or not all(_is_power_of_two(t) for t in self.tile):
      raise ValueError(f'tile must be two powers of two (Triton block shapes), got '
                       f'{self.tile}')
    if not _is_power_of_two(self.num_warps) or self.num_warps > 32:
      raise ValueError(f'num_warps must be a power of two up to 32, got {self.num_warps}')
    if not isinstance(self.num_stages, int) or self.num_stages < 1:
      raise ValueError(f'num_stages must be a positive int, got {self.num_stages}')


class _Geometry:
  """Static sizes and the index vectors of one program's tile (built inside a kernel)."""

  def __init__(self, x_ref, kernel_size, heads, tile):
    self.height, self.width, channels = x_ref.shape[1:]
    self.k, self.r, self.taps = kernel_size, kernel_size // 2, kernel_size * kernel_size
    self.group = channels // heads
    self.th, self.tw = tile
    self.cp = pl.next_power_of_2(self.group)  # channel block (masked beyond `group`)
    self.tp = pl.next_power_of_2(self.taps)   # tap block (masked beyond k*k)
    n_tw = pl.cdiv(self.width, self.tw)
    tile_id, self.head, self.batch = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    # lax.div / lax.rem (C semantics, equal to floor ones on these non-negative ints): jnp's
    # floor-mod lowers to sign fix-ups that the Triton lowering rejects.
    self.y0 = jax.lax.div(tile_id, n_tw) * self.th
    self.x0 = jax.lax.rem(tile_id, n_tw) * self.tw
    self.ys = self.y0 + jnp.arange(self.th)[:, None]  # (TH, 1)
    self.xs = self.x0 + jnp.arange(self.tw)[None, :]  # (1, TW)
    self.inside = (self.ys < self.height) & (self.xs < self.width)  # (TH, TW)
    chans = jnp.arange(self.cp)
    self.cmask = chans < self.group
    self.chan = self.head * self.group + jnp.minimum(chans, self.group - 1)
    self.tcol = jnp.arange(self.tp)

  def tile(self, size):
    """Index of this program's own (TH, TW) tile: slices, never starting before the image."""
    return (self.batch, pl.ds(self.y0, self.th), pl.ds(self.x0, self.tw), size)

  def channel_block(self):
    return self.tile(pl.ds(self.head * self.group, self.cp))

  def tap_block(self):
    return self.tile(pl.ds(self.head * self.taps, self.tp))

  def shifted(self, oy, ox):
    """(valid (TH, TW), clamped rows (TH, TW), clamped cols (TH, TW)) of pixels + (oy, ox)."""
    ys, xs = self.ys + oy, self.xs + ox
    valid = (ys >= 0) & (ys < self.height) & (xs >= 0) & (xs < self.width)
    shape = (self.th, self.tw)
    ys = jnp.broadcast_to(jnp.clip(ys, 0, self.height - 1), shape)
    xs = jnp.broadcast_to(jnp.clip(xs, 0, self.width - 1), shape)
    return valid, ys, xs

  def load_window(self, ref, oy, ox):
    """(TH, TW, CP) float32 of this head's channels at pixels + (oy, ox); zero outside."""
    valid, ys, xs = self.shifted(oy, ox)
    shape = (self.th, self.tw, self.cp)
    idx = (self.batch, jnp.broadcast_to(ys[..., None], shape),
           jnp.broadcast_to(xs[..., None], shape), jnp.broadcast_to(self.chan, shape))
    mask = valid[..., None] & self.cmask
    return pltriton.load(ref.at[idx], mask=mask, other=0).astype(jnp.float32)

  def load_column(self, ref, oy, ox, column):
    """(TH, TW) float32 of `ref[b, y + oy, x + ox, column]`; zero outside the image."""
    valid, ys, xs = self.shifted(oy, ox)
    cols = jnp.full((self.th, self.tw), column, jnp.int32)
    return pltriton.load(ref.at[self.batch, ys, xs, cols], mask=valid,
                         other=0).astype(jnp.float32)

  def load_logits(self, logit_ref):
    """(TH, TW, TP) logits of the tile's pixels, padded taps at -inf."""
    logits = pltriton.load(logit_ref.at[self.tap_block()],
                           mask=self.inside[..., None] & (self.tcol < self.taps), other=0)
    return jnp.where(self.tcol < self.taps, logits.astype(jnp.float32), -jnp.inf)

  def offset(self, t):
    """(dy - r, dx - r) of tap t (a traced loop index)."""
    return jax.lax.div(t, self.k) - self.r, jax.lax.rem(t, self.k) - self.r


def _forward_kernel(x_ref, logit_ref, out_ref, lse_ref, *, kernel_size, heads, tile):
  geo = _Geometry(x_ref, kernel_size, heads, tile)
  logits = geo.load_logits(logit_ref)
  top = jnp.max(logits, axis=-1)
  lse = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))  # (TH, TW)

  def tap(t, acc):
    p_t = jnp.exp(geo.load_column(logit_ref, 0, 0, geo.head * geo.taps + t) - lse)
    return acc + p_t[..., None] * geo.load_window(x_ref, *geo.offset(t))

  acc = jax.lax.fori_loop(0, geo.taps, tap, jnp.zeros((geo.th, geo.tw, geo.cp), jnp.float32))
  pltriton.store(out_ref.at[geo.channel_block()], acc.astype(out_ref.dtype),
                 mask=geo.inside[..., None] & geo.cmask)
  pltriton.store(lse_ref.at[geo.tile(geo.head)], lse, mask=geo.inside)


def _backward_kernel(x_ref, logit_ref, lse_ref, g_ref, dx_ref, dlogit_ref, *, kernel_size,
                     heads, tile):
  geo = _Geometry(x_ref, kernel_size, heads, tile)
  lse = geo.load_column(lse_ref, 0, 0, geo.head)
  probs = jnp.exp(geo.load_logits(logit_ref) - lse[..., None])  # (TH, TW, TP), 0 beyond k*k
  g = pltriton.load(g_ref.at[geo.channel_block()], mask=geo.inside[..., None] & geo.cmask,
                    other=0).astype(jnp.float32)

  def tap(t, carry):
    dp, dx = carry
    oy, ox = geo.offset(t)
    dp_t = jnp.sum(g * geo.load_window(x_ref, oy, ox), axis=-1)
    dp = jnp.where(geo.tcol == t, dp_t[..., None], dp)
    # Pixel q receives from the pixel q - (oy, ox) whose tap t lands on q.
    p_src = jnp.exp(geo.load_column(logit_ref, -oy, -ox, geo.head * geo.taps + t)
                    - geo.load_column(lse_ref, -oy, -ox, geo.head))
    return dp, dx + p_src[..., None] * geo.load_window(g_ref, -oy, -ox)

  dp, dx = jax.lax.fori_loop(0, geo.taps, tap,
                             (jnp.zeros((geo.th, geo.tw, geo.tp), jnp.float32),
                              jnp.zeros((geo.th, geo.tw, geo.cp), jnp.float32)))
  dlogits = probs * (dp - jnp.sum(probs * dp, axis=-1, keepdims=True))
  pltriton.store(dlogit_ref.at[geo.tap_block()], dlogits.astype(dlogit_ref.dtype),
                 mask=geo.inside[..., None] & (geo.tcol < geo.taps))
  pltriton.store(dx_ref.at[geo.channel_block()], dx.astype(dx_ref.dtype),
                 mask=geo.inside[..., None] & geo.cmask)


def _launch(kernel, out_dtypes, kernel_size, heads, launch, interpret, *args):
  """Runs `kernel` on `args`, (B, H, W, .) arrays, x first.

  `out_dtypes(*args)` gives the (channels, dtype) of each (B, H, W, channels) output.
  """
  tile = launch.tile
  b, h, w, _ = args[0].shape
  out_shape = tuple(jax.ShapeDtypeStruct((b, h, w, n), d) for n, d in out_dtypes(*args))
  grid = (pl.cdiv(h, tile[0]) * pl.cdiv(w, tile[1]), heads, b)
  body = functools.partial(kernel, kernel_size=kernel_size, heads=heads, tile=tile)
  return pl.pallas_call(body, out_shape=out_shape, grid=grid, interpret=interpret,
                        compiler_params=pltriton.CompilerParams(
                            num_warps=launch.num_warps, num_stages=launch.num_stages),
                        name=kernel.__name__.strip('_'))(*args)


def _batch_sharding(mesh, arg_shapes):
  """Shards everything like the batch axis of the first argument, the rest replicated."""
  spec = arg_shapes[0].sharding.spec
  return NamedSharding(mesh, PartitionSpec(spec[0] if len(spec) else None))


def _call(kernel, out_dtypes, args, kernel_size, heads, launch, interpret):
  run = functools.partial(_launch, kernel, out_dtypes, kernel_size, heads, launch, interpret)
  if jax.device_count() == 1:
    return run(*args)  # nothing to partition (and keeps the call exportable)
  per_image = custom_partitioning(run)

  def infer(mesh, arg_shapes, result_shape):
    return tuple(_batch_sharding(mesh, arg_shapes) for _ in result_shape)

  def partition(mesh, arg_shapes, result_shape):
    sharding = _batch_sharding(mesh, arg_shapes)
    return (mesh, run, tuple(sharding for _ in result_shape),
            tuple(sharding for _ in arg_shapes))

  # Shardy rule: only the batch factor b may stay sharded; the others are replicated.
  n_out = len(out_dtypes(*args))
  operands = ', '.join(f'b h w c{i}' for i in range(len(args)))
  results = ', '.join(f'b h w r{i}' for i in range(n_out))
  replicated = ('h', 'w', *(f'c{i}' for i in range(len(args))),
                *(f'r{i}' for i in range(n_out)))
  per_image.def_partition(partition, infer_sharding_from_operands=infer,
                          sharding_rule=f'{operands} -> {results}',
                          need_replication_factors=replicated)
  return per_image(*args)


def _forward(x, logits, kernel_size, launch, interpret):
  b, h, w, heads, taps = logits.shape
  flat = logits.reshape(b, h, w, heads * taps)
  out_dtypes = lambda x, l: ((x.shape[3], x.dtype), (heads, jnp.float32))
  out, lse = _call(_forward_kernel, out_dtypes, (x, flat), kernel_size, heads, launch,
                   interpret)
  return out, (x, logits, lse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _fused(x, logits, kernel_size, launch, interpret):
  return _forward(x, logits, kernel_size, launch, interpret)[0]


def _fused_bwd(kernel_size, launch, interpret, residuals, grad_out):
  x, logits, lse = residuals
  b, h, w, heads, taps = logits.shape
  flat = logits.reshape(b, h, w, heads * taps)
  out_dtypes = lambda x, l, *_: ((x.shape[3], x.dtype), (l.shape[3], l.dtype))
  dx, dlogits = _call(_backward_kernel, out_dtypes, (x, flat, lse, grad_out.astype(x.dtype)),
                      kernel_size, heads, launch, interpret)
  return dx, dlogits.reshape(logits.shape)


_fused.defvjp(_forward, _fused_bwd)


def softmax_aggregate_pallas(x: jax.Array, logits: jax.Array, kernel_size: int, *,
                             tile: tuple[int, int] = TILE, num_warps: int = NUM_WARPS,
                             num_stages: int = NUM_STAGES,
                             interpret: bool | None = None) -> jax.Array:
  """Softmax over taps and pixel-adaptive aggregation in one fused kernel (custom VJP).

  Args:
    x: `(B, H, W, C)` features, float32 or bfloat16.
    logits: `(B, H, W, heads, k*k)` kernel logits (tap `t = dy*k + dx`); the softmax over
      the last axis runs inside the kernel in float32.
    kernel_size: k, odd.
    tile: (TH, TW) pixels per program, powers of two.
    num_warps, num_stages: Triton launch parameters (ignored in interpret mode).
    interpret: run the kernel body in Pallas interpret mode (plain XLA ops); None = only on
      a CPU backend, where no compiled Pallas kernel exists.

  Returns:
    `(B, H, W, C)` in `x.dtype`; float32 accumulation.

  Raises:
    ValueError: on inconsistent shapes, an even kernel size, a tile that is not two powers
      of two, or invalid Triton launch parameters.
  """
  check_aggregate_args(x, logits, kernel_size, name='logits')
  launch = Launch(tuple(tile), num_warps, num_stages)
  if interpret is None:
    interpret = jax.default_backend() == 'cpu'
  return _fused_jit(x, logits, kernel_size, launch, bool(interpret))


# Jitted so that eager calls hit the compilation cache (the kernel closure is rebuilt on
# every trace, so an un-jitted pallas_call would be recompiled on every call).
_fused_jit = jax.jit(_fused, static_argnums=(2, 3, 4))
