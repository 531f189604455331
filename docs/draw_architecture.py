"""Draws docs/architecture.png: a block diagram of SGDCNet, its SGE and one SGDC block.

  python docs/draw_architecture.py [--out docs/architecture.png] [--dpi 100]

Pure matplotlib (no JAX). The figure is 16 x 9.6 inches, i.e. 1600 px wide at the default
100 dpi, with fonts sized to stay readable when a README scales it to ~900 px.
"""
from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # pylint: disable=g-import-not-at-top,wrong-import-position

# Fill / edge colours per component.
COLORS = {
    'io': ('#f2f2f2', '#555555'),
    'encoder': ('#dbe9f7', '#2f6db3'),
    'decoder': ('#dcf0dc', '#2e8b3e'),
    'sge': ('#fde8d0', '#d2691e'),
    'sgdc': ('#ebe1f5', '#6a3d9a'),
    'head': ('#e8e8e8', '#444444'),
    'loss': ('#fbdada', '#c0392b'),
}
WIDTH, HEIGHT = 160.0, 96.0  # drawing units: 0.1 inch


class Box:
  """A rounded box; exposes its edge midpoints for arrows."""

  def __init__(self, ax, x, y, w, h, text, kind, fontsize=12, weight='normal', dashed=False,
               text_va='center'):
    face, edge = COLORS[kind]
    self.x, self.y, self.w, self.h = x, y, w, h
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0.25,rounding_size=1.2',
                                fc=face, ec=edge, lw=1.8, ls='--' if dashed else '-', zorder=2))
    ty = y + h / 2 if text_va == 'center' else y + h - 1.2
    ax.text(x + w / 2, ty, text, ha='center', va=text_va, fontsize=fontsize, weight=weight,
            zorder=3, linespacing=1.25)

  @property
  def left(self):
    return (self.x - 0.25, self.y + self.h / 2)

  @property
  def right(self):
    return (self.x + self.w + 0.25, self.y + self.h / 2)

  @property
  def top(self):
    return (self.x + self.w / 2, self.y + self.h + 0.25)

  @property
  def bottom(self):
    return (self.x + self.w / 2, self.y - 0.25)

  def at(self, side, frac):
    """Point on `side` ('top'/'bottom'/'left'/'right') at fraction `frac` along it."""
    if side in ('top', 'bottom'):
      y = self.y + self.h + 0.25 if side == 'top' else self.y - 0.25
      return (self.x + frac * self.w, y)
    x = self.x - 0.25 if side == 'left' else self.x + self.w + 0.25
    return (x, self.y + frac * self.h)


def arrow(ax, p, q, color='#333333', style='-|>', lw=1.8, rad=0.0, ls='-', label=None,
          label_xy=None, fontsize=10.5):
  ax.add_patch(FancyArrowPatch(p, q, arrowstyle=style, mutation_scale=16, lw=lw, color=color,
                               ls=ls, connectionstyle=f'arc3,rad={rad}', zorder=1,
                               shrinkA=0, shrinkB=0))
  if label:
    lx, ly = label_xy if label_xy else ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2 + 1.2)
    ax.text(lx, ly, label, ha='center', va='bottom', fontsize=fontsize, color=color, zorder=3,
            style='italic')


def elbow(ax, points, color='#333333', lw=1.8, ls='-'):
  """A poly-line through `points` with an arrow head on the last segment."""
  for p, q in zip(points[:-2], points[1:-1]):
    ax.plot([p[0], q[0]], [p[1], q[1]], color=color, lw=lw, ls=ls, zorder=1,
            solid_capstyle='round')
  arrow(ax, points[-2], points[-1], color=color, lw=lw, ls=ls)


def panel(ax, x, y, w, h, title, kind):
  face, edge = COLORS[kind]
  ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0.3,rounding_size=2',
                              fc=face, ec=edge, lw=1.2, alpha=0.35, zorder=0))
  ax.text(x + 1.2, y + h - 1.0, title, ha='left', va='top', fontsize=13.5, weight='bold',
          color=edge, zorder=3)


def draw(out_path: str, dpi: int = 100) -> str:
  """Draws the diagram into `out_path` (PNG) and returns the path."""
  fig = plt.figure(figsize=(WIDTH / 10, HEIGHT / 10), dpi=dpi)
  ax = fig.add_axes([0, 0, 1, 1])
  ax.set_xlim(0, WIDTH)
  ax.set_ylim(0, HEIGHT)
  ax.axis('off')

  ax.text(WIDTH / 2, HEIGHT - 1.5, 'SGDCNet: structure-guided dynamic convolution for segmentation',
          ha='center', va='top', fontsize=17, weight='bold')

  # ---- main path (top row) -------------------------------------------------------------
  ytop, htop = 72.0, 14.0
  image = Box(ax, 1.5, ytop + 2, 12, htop - 4, 'image\n(B, H, W, 3)', 'io')
  panel(ax, 17, ytop - 3.5, 37, htop + 6.5, 'ResNet encoder', 'encoder')
  stages = []
  for i, (name, stride) in enumerate((('c1', 4), ('c2', 8), ('c3', 16), ('c4', 32))):
    h = htop - 1.5 - 2.2 * i
    stages.append(Box(ax, 19 + 8.7 * i, ytop - 1.5 + (htop - 1.5 - h) / 2, 6.6, h,
                      f'{name}\n/{stride}', 'encoder', fontsize=12))
  arrow(ax, image.right, stages[0].left)
  for a, b in zip(stages[:-1], stages[1:]):
    arrow(ax, a.right, b.left)
  decoder = Box(ax, 59, ytop - 1, 22, htop + 1,
                'FPN decoder\nlateral 1x1, top-down x2\nconv3x3-BN-ReLU\n(B, H/4, W/4, D)',
                'decoder', fontsize=11.5)
  arrow(ax, stages[3].right, decoder.left)
  sgdc = Box(ax, 86, ytop - 1, 20, htop + 1, 'n x SGDC block\n(B, H/4, W/4, D)\n(detail below)',
             'sgdc', fontsize=12, weight='bold')
  arrow(ax, decoder.right, sgdc.left)
  head = Box(ax, 111, ytop - 1, 17, htop + 1, 'head\nconv3x3-BN-ReLU\nconv1x1 -> K', 'head',
             fontsize=11.5)
  arrow(ax, sgdc.right, head.left)
  up = Box(ax, 132.5, ytop + 2, 9, htop - 4, 'bilinear\nup x4', 'head', fontsize=11.5)
  arrow(ax, head.right, up.left)
  mask = Box(ax, 146, ytop + 1, 12.5, htop - 2, 'mask logits\n(B, H, W, K)', 'io', fontsize=11.5)
  arrow(ax, up.right, mask.left)
  seg_loss = Box(ax, 141, ytop - 11.5, 17.5, 6.5, 'seg loss\nBCE/CE + Dice', 'loss', fontsize=11)
  arrow(ax, mask.bottom, seg_loss.top)
  # c1..c3 feed the FPN through lateral 1x1 convolutions (c4 through the arrow above)
  for st in stages[:3]:
    elbow(ax, [st.top, (st.top[0], ytop + htop - 1.0), (56.5, ytop + htop - 1.0),
               (56.5, decoder.at('left', 0.8)[1]), decoder.at('left', 0.8)],
          color=COLORS['decoder'][1], lw=1.4)

  # ---- SGE (middle row) ------------------------------------------------------------------
  ys, hs = 38.0, 25.0
  panel(ax, 1.5, ys - 1, 136, hs + 3.5, 'SGE: Structural Guidance Extractor  SGE(c4, c1)', 'sge')
  row_h = 7.0
  y_deep, y_shal = ys + 12.5, ys + 2.0
  kw = dict(kind='sge', fontsize=11)
  d_proj = Box(ax, 8, y_deep, 17, row_h, 'c4: conv1x1-BN-ReLU\n-> bottleneck', **kw)
  s_proj = Box(ax, 8, y_shal, 17, row_h, 'c1: conv1x1-BN-ReLU\n-> bottleneck', **kw)
  d_sob = Box(ax, 28.5, y_deep, 20.5, row_h, 'Sobel gate\nsigmoid(|Sobel(sum_c t)|) * t',
              kind='sge', fontsize=10.5)
  s_sob = Box(ax, 28.5, y_shal, 20.5, row_h, 'Sobel gate\nsigmoid(|Sobel(sum_c t)|) * t',
              kind='sge', fontsize=10.5)
  d_ref = Box(ax, 52, y_deep, 16, row_h, 'bottleneck\nrefiner (residual)', **kw)
  s_ref = Box(ax, 52, y_shal, 16, row_h, 'bottleneck\nrefiner (residual)', **kw)
  d_up = Box(ax, 72, y_deep, 12, row_h, 'bilinear up\nto c1 size', **kw)
  fuse = Box(ax, 89, y_shal + 2.5, 16, row_h + 5, 'concat\nconv3x3-BN-ReLU\n-> mid', **kw)
  guide = Box(ax, 110, y_deep + 1.5, 24, row_h - 1,
              'guidance head 1x1 -> G\n(B, H/4, W/4, G)', **kw)
  edge = Box(ax, 110, y_shal - 0.5, 24, row_h - 1,
             'edge head 1x1 -> edge logits\n(B, H/4, W/4, 1)', **kw)
  for a, b in ((d_proj, d_sob), (d_sob, d_ref), (d_ref, d_up), (s_proj, s_sob), (s_sob, s_ref)):
    arrow(ax, a.right, b.left)
  elbow(ax, [d_up.right, (fuse.x + 4, d_up.right[1]), (fuse.x + 4, fuse.top[1])])
  arrow(ax, s_ref.right, (fuse.x - 0.25, s_ref.right[1]))
  elbow(ax, [fuse.right, (107.5, fuse.right[1]), (107.5, edge.left[1]), edge.left])
  elbow(ax, [fuse.right, (107.5, fuse.right[1]), (107.5, guide.left[1]), guide.left])
  loss_e = Box(ax, 141, y_shal - 3.0, 17.5, 11, 'edge loss\nBCE + Dice vs\nboundary band\nof the mask',
               'loss', fontsize=11)
  arrow(ax, edge.right, loss_e.left, label='up x4', label_xy=(137.6, edge.right[1] + 0.6),
        fontsize=10)
  # encoder features into SGE (in the gap between the two panels)
  elbow(ax, [stages[3].bottom, (stages[3].bottom[0], 66.4), (4.6, 66.4),
             (4.6, d_proj.left[1]), d_proj.left], color=COLORS['encoder'][1], lw=1.6)
  elbow(ax, [stages[0].bottom, (stages[0].bottom[0], 67.5), (3.0, 67.5),
             (3.0, s_proj.left[1]), s_proj.left], color=COLORS['encoder'][1], lw=1.6)
  # guidance up into the SGDC blocks
  elbow(ax, [guide.top, (guide.top[0], 67.3), (sgdc.at('bottom', 0.7)[0], 67.3),
             sgdc.at('bottom', 0.7)], color=COLORS['sge'][1], lw=2.4)
  ax.text(112.5, 67.8, 'guidance G', color=COLORS['sge'][1], fontsize=12, weight='bold',
          ha='center', va='bottom')

  # ---- SGDC block detail (bottom row) -------------------------------------------------------
  yb = 2.0
  panel(ax, 1.5, yb - 0.5, 157, 34, 'SGDC block  (x: (B, H/4, W/4, D), guidance G)', 'sgdc')
  kw = dict(kind='sgdc', fontsize=11)
  y1, y2, y3 = yb + 22.0, yb + 11.0, yb + 1.0
  gate_c, kern_c = '#6a3d9a', '#d2691e'
  g_in = Box(ax, 4, y1, 13, 6, 'guidance G', 'sge', fontsize=11)
  x_in = Box(ax, 4, y2, 13, 6, 'x', 'decoder', fontsize=13, weight='bold')
  g_proj = Box(ax, 21, y1, 15, 6, 'resize, 1x1\n(G -> D)', **kw)
  add = Box(ax, 40, y1, 7, 6, '+ x', **kw)
  attn = Box(ax, 51, y1, 16, 6, "1x1 'attn'\n-> 2D + heads k^2", **kw)
  kern = Box(ax, 71, y1 + 3.4, 20, 4.4, 'kernel logits (heads k^2)', kind='sgdc', fontsize=10.5)
  gates = Box(ax, 71, y1 - 1.8, 20, 4.4, 'gates a1, a2 (D each)', kind='sgdc', fontsize=10.5)
  soft = Box(ax, 95, y1 + 3.4, 22, 4.4, 'softmax over k^2, per pixel', kind='sgdc',
             fontsize=10.5)
  arrow(ax, g_in.right, g_proj.left)
  arrow(ax, g_proj.right, add.left)
  arrow(ax, add.right, attn.left)
  arrow(ax, attn.at('right', 0.85), kern.left)
  arrow(ax, attn.at('right', 0.15), gates.left)
  arrow(ax, kern.right, soft.left)
  elbow(ax, [x_in.top, (x_in.top[0], y1 - 1.2), (43.5, y1 - 1.2), add.bottom],
        color=COLORS['decoder'][1], lw=1.4)
  # branch 1: gated depthwise conv
  mul1 = Box(ax, 23, y2, 16, 6, 'x * sigmoid(a1)', **kw)
  dw = Box(ax, 43, y2, 16, 6, 'depthwise 3x3\n-> x1', **kw)
  arrow(ax, x_in.right, mul1.left)
  arrow(ax, mul1.right, dw.left)
  elbow(ax, [gates.at('bottom', 0.2), (gates.at('bottom', 0.2)[0], y2 + 7.6), (31, y2 + 7.6),
             mul1.top], color=gate_c, lw=1.4, ls='--')
  ax.text(50, y2 + 7.9, 'a1', color=gate_c, fontsize=11, style='italic', va='bottom')
  # branch 2: pixel-adaptive aggregation
  ln1 = Box(ax, 23, y3, 16, 6, 'LayerNorm(x)', **kw)
  agg = Box(ax, 89.5, y3, 33, 6, 'pixel-adaptive aggregation\nper-pixel k x k kernel, per head',
            **kw)
  mul2 = Box(ax, 126.5, y3, 14.5, 6, '* sigmoid(a2)\n-> x2', **kw)
  elbow(ax, [x_in.bottom, (x_in.bottom[0], y3 + 3), ln1.left])
  arrow(ax, ln1.right, agg.left)
  arrow(ax, agg.right, mul2.left)
  arrow(ax, soft.bottom, agg.top, color=kern_c, lw=1.8)
  ax.text(soft.bottom[0] + 0.8, y2 + 8.2, 'kernels', color=kern_c, fontsize=11, style='italic',
          ha='left')
  elbow(ax, [gates.at('bottom', 0.8), (gates.at('bottom', 0.8)[0], y3 + 7.6),
             (mul2.top[0], y3 + 7.6), mul2.top], color=gate_c, lw=1.4, ls='--')
  ax.text(123.5, y3 + 7.9, 'a2', color=gate_c, fontsize=11, style='italic', va='bottom')
  # residuals, layer scale, MLP
  res1 = Box(ax, 126.5, y2 + 1.0, 14.5, 7.5, 'x + gamma1 *\n(x1 + x2)', **kw)
  mlp = Box(ax, 144.5, y3, 13.5, 15.5, 'x + gamma2 *\nMLP(LN(x))\n\nMLP: 1x1,\nGELU, 1x1', **kw)
  arrow(ax, dw.right, (res1.x - 0.25, dw.right[1]), lw=1.4)
  arrow(ax, (mul2.x + mul2.w - 2, mul2.y + mul2.h + 0.25), (mul2.x + mul2.w - 2, res1.y - 0.25))
  arrow(ax, res1.right, (mlp.x - 0.25, res1.right[1]))
  ax.text(mlp.top[0], mlp.top[1] + 0.4, 'out', ha='center', va='bottom', fontsize=12,
          weight='bold', color=COLORS['sgdc'][1])
  ax.text(121, y1 + 3.0,
          "kernel_source: 'structure' uses G;\n'pooled' replaces G by up(avgpool_S(x));\n"
          "'none' uses x alone.  gamma: layer scale",
          ha='left', va='center', fontsize=10.5, style='italic', color='#333333')

  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  fig.savefig(out_path, dpi=dpi, facecolor='white')
  plt.close(fig)
  return out_path


def main(argv=None):
  """Command line: see the module docstring."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    'architecture.png'))
  parser.add_argument('--dpi', type=int, default=100)
  args = parser.parse_args(argv)
  print(draw(args.out, args.dpi))


if __name__ == '__main__':
  main()
