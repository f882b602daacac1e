"""EfficientNet B0-B7 (Tan & Le 2019, "EfficientNet: Rethinking model scaling for
convolutional neural networks"), in torchvision's layout.

Stem: 3x3/2 conv + BN + SiLU. Seven stages of MBConv blocks (Sandler et al. 2018's
inverted residual with squeeze-excitation): a 1x1 expand conv + BN + SiLU (absent when the
expand ratio is 1), a kxk depthwise conv + BN + SiLU (stride on the stage's first block),
squeeze-excitation whose bottleneck is a quarter of the BLOCK INPUT's channels (SiLU,
sigmoid gate), a 1x1 project conv + BN (linear), and, when the block keeps its shape, the
identity shortcut with stochastic depth on the branch. Head: 1x1 conv to 4x the last
stage's channels + BN + SiLU, global average pool, dropout, Dense.

Compound scaling: the B0 table (`B0_STAGES`, the paper's Table 1) is scaled by a width
multiplier (every channel count rounded with `make_divisible(c * width, 8)`) and a depth
multiplier (`ceil(layers * depth)` blocks per stage). The stochastic-depth rate grows
linearly over the blocks, `stochastic_depth * i / total_blocks` for block i = 0, 1, ...
B0-B4 use PyTorch's BatchNorm defaults (eps 1e-5, momentum 0.1); B5-B7 use eps 1e-3,
momentum 0.01 like torchvision (whose weights were ported from the TF originals).
Parameter counts equal torchvision's (efficientnet_b0: 5,288,548), and with torchvision's
weights copied in, the logits agree to 1e-6 (checked for B0 and B5 outside this repo).
Initialisation is the shared one (He-normal fan-in convs, LeCun-normal head); torchvision
draws fan-out convs and a U(+-1/sqrt(classes)) head, which makes 10-class logits large.

Parameter names: `stem`, `stage{s}_block{b}/{expand,depthwise,se,project}` (s = 1..7,
b from 0), `head_conv`, `head`. Every conv is padded, so any input H, W >= 1 runs; the
published resolutions are `RESOLUTIONS`.
"""

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.conv import ConvBN, DropPath, SqueezeExcite, check_spatial, classifier_head

Dtype = str | jnp.dtype

# (expand_ratio, kernel, stride, in_channels, out_channels, layers) of EfficientNet-B0.
B0_STAGES = ((1, 3, 1, 32, 16, 1),
             (6, 3, 2, 16, 24, 2),
             (6, 5, 2, 24, 40, 2),
             (6, 3, 2, 40, 80, 3),
             (6, 5, 1, 80, 112, 3),
             (6, 5, 2, 112, 192, 4),
             (6, 3, 1, 192, 320, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
  """Nearest multiple of `divisor` (at least `divisor`), never more than 10% below `value`."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:
    rounded += divisor
  return rounded


def scale_depth(layers: int, depth_mult: float) -> int:
  return int(math.ceil(layers * depth_mult))


def block_settings(stages: Sequence[Sequence[int]], width_mult: float, depth_mult: float,
                   stochastic_depth: float) -> list[list[dict]]:
  """Per stage, per block: in/out/expanded channels, kernel, stride, drop-path rate."""
  total = sum(scale_depth(s[5], depth_mult) for s in stages)
  out, index = [], 0
  for expand, kernel, stride, cin, cout, layers in stages:
    cin, cout = make_divisible(cin * width_mult), make_divisible(cout * width_mult)
    blocks = []
    for b in range(scale_depth(layers, depth_mult)):
      block_in = cin if b == 0 else cout
      blocks.append(dict(in_channels=block_in, out_channels=cout,
                         expanded=make_divisible(block_in * expand), kernel=kernel,
                         stride=stride if b == 0 else 1,
                         drop_rate=stochastic_depth * index / total))
      index += 1
    out.append(blocks)
  return out


class MBConv(nn.Module):
  """Mobile inverted bottleneck with squeeze-excitation; residual + DropPath when shapes match."""
  out_channels: int
  expanded: int                      # channels after the 1x1 expand conv
  kernel: int = 3
  stride: int = 1
  drop_rate: float = 0.0             # stochastic depth on the residual branch
  bn_epsilon: float = 1e-5
  bn_momentum: float = 0.9           # flax convention: PyTorch's momentum 0.1
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool):
    cin = x_BHWC.shape[-1]
    kw = dict(bn_epsilon=self.bn_epsilon, bn_momentum=self.bn_momentum,
              axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
    y = x_BHWC
    if self.expanded != cin:
      y = ConvBN(self.expanded, (1, 1), act=nn.silu, name='expand', **kw)(y, train=train)
    y = ConvBN(self.expanded, (self.kernel, self.kernel), strides=(self.stride, self.stride),
               groups=self.expanded, act=nn.silu, name='depthwise', **kw)(y, train=train)
    y = SqueezeExcite(max(1, cin // 4), act=nn.silu, gate=nn.sigmoid, dtype=self.dtype,
                      param_dtype=self.param_dtype, name='se')(y)
    y = ConvBN(self.out_channels, (1, 1), act=None, name='project', **kw)(y, train=train)
    if self.stride == 1 and cin == self.out_channels:
      y = DropPath(self.drop_rate, name='drop_path')(y, train=train) + x_BHWC
    return y


class Model(nn.Module):
  """EfficientNet: stem, compound-scaled MBConv stages, 1x1 head conv, pool, dropout, Dense."""
  width_mult: float = 1.0
  depth_mult: float = 1.0
  dropout: float = 0.2               # before the classifier
  stochastic_depth: float = 0.2      # drop-path rate reached (asymptotically) by the last block
  num_classes: int = 1000            # 0: no classifier; returns the pooled features (B, C)
  stages: Sequence[Sequence[int]] = B0_STAGES
  head_ratio: int = 4                # head conv width = head_ratio * last stage's channels
                                     # (0: no head conv, as ALIGN's image tower)
  bn_epsilon: float = 1e-5
  bn_momentum: float = 0.9           # flax convention (1 - PyTorch's momentum)
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    check_spatial(x_BHWC, 1, 'EfficientNet input')
    kw = dict(bn_epsilon=self.bn_epsilon, bn_momentum=self.bn_momentum,
              axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
    settings = block_settings(self.stages, self.width_mult, self.depth_mult,
                              self.stochastic_depth)
    x = jnp.asarray(x_BHWC, self.dtype)
    x = ConvBN(settings[0][0]['in_channels'], (3, 3), strides=(2, 2), act=nn.silu,
               name='stem', **kw)(x, train=train)
    for s, blocks in enumerate(settings):
      for b, cfg in enumerate(blocks):
        x = MBConv(cfg['out_channels'], cfg['expanded'], kernel=cfg['kernel'],
                   stride=cfg['stride'], drop_rate=cfg['drop_rate'],
                   name=f'stage{s + 1}_block{b}', **kw)(x, train=train)
    if self.head_ratio:
      x = ConvBN(self.head_ratio * x.shape[-1], (1, 1), act=nn.silu, name='head_conv',
                 **kw)(x, train=train)
    x = x.mean(axis=(1, 2))
    if not self.num_classes:
      return x
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return classifier_head(self.num_classes, self.dtype, self.param_dtype)(x)


# Named sizes: (width, depth) multipliers and dropout of torchvision's efficientnet_b0..b7,
# and the paper's input resolution for each. TINY is for tests.
_TF_BN = dict(bn_epsilon=1e-3, bn_momentum=0.99)  # B5-B7: torchvision's eps 1e-3, momentum 0.01
VARIANTS = {
    'b0': dict(width_mult=1.0, depth_mult=1.0, dropout=0.2),
    'b1': dict(width_mult=1.0, depth_mult=1.1, dropout=0.2),
    'b2': dict(width_mult=1.1, depth_mult=1.2, dropout=0.3),
    'b3': dict(width_mult=1.2, depth_mult=1.4, dropout=0.3),
    'b4': dict(width_mult=1.4, depth_mult=1.8, dropout=0.4),
    'b5': dict(width_mult=1.6, depth_mult=2.2, dropout=0.4, **_TF_BN),
    'b6': dict(width_mult=1.8, depth_mult=2.6, dropout=0.5, **_TF_BN),
    'b7': dict(width_mult=2.0, depth_mult=3.1, dropout=0.5, **_TF_BN),
}
RESOLUTIONS = {'b0': 224, 'b1': 240, 'b2': 260, 'b3': 300, 'b4': 380, 'b5': 456, 'b6': 528,
               'b7': 600}
TINY = dict(width_mult=0.25, depth_mult=0.25, dropout=0.1)  # 7 blocks, one per stage
