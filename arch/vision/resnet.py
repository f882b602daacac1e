"""ResNet (He, Zhang, Ren, Sun 2015, "Deep residual learning for image recognition"), in
torchvision's layout.

Stem: 7x7/2 conv (64) + BN + ReLU + 3x3/2 max pool (padded by 1). Four stages of
residual blocks at base widths 64, 128, 256, 512; stages 2-4 halve the resolution in
their first block. BasicBlock (ResNet-18/34): two 3x3 convs. Bottleneck (50/101/152):
1x1 reduce, 3x3, 1x1 expand (x4), with the stride on the 3x3 conv ("ResNet v1.5", as
torchvision; the paper strides the first 1x1). The shortcut is the identity, or a 1x1
conv + BN projection when the shape changes (the paper's option B). Global average
pool, Dense head. Parameter counts equal torchvision's (resnet50: 25,557,032).

`zero_init_residual` starts every block's last BN scale at zero, so each block is
relu(shortcut(x)) at init (Goyal et al. 2017). `small_input` swaps the stem for a 3x3/1
conv + BN + ReLU without max pool (the paper's CIFAR networks), for 32x32-class images.

Parameter names follow torchvision's (`layer2_0/conv1`, `layer2_0/downsample`) so
ported weights map one to one. Takes any input H, W >= 1 (every conv is padded).

Spatial parallelism: the input, the stem's output and every block's output carry
`split_height` (arch/layers/spatial.py), so `mesh.sequence = P` splits the rows of each
map P ways and XLA exchanges the convolutions' halo rows; BatchNorm's statistics stay
those of the whole global batch and image (all-reduced), and the losses equal one
device's (tests/test_scaleout.py: data 2 x sequence 4). Every constrained map's height
must divide by P (the tiny net at 32x32: 32 and 16 rows).
"""

from typing import ClassVar, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.conv import ConvBN, check_spatial, classifier_head
from arch.layers.spatial import split_height

Dtype = str | jnp.dtype


def _last_bn_init(zero_init_residual: bool):
  return nn.initializers.zeros if zero_init_residual else nn.initializers.ones


class BasicBlock(nn.Module):
  """Two 3x3 conv+BN layers (stride on the first) plus the shortcut, then ReLU."""
  features: int                      # output channels (expansion 1)
  strides: int = 1
  zero_init_residual: bool = False
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool):
    s = (self.strides, self.strides)
    kw = dict(axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
    y = ConvBN(self.features, (3, 3), strides=s, name='conv1', **kw)(x_BHWC, train=train)
    y = ConvBN(self.features, (3, 3), act=None, name='conv2', **kw,
               bn_scale_init=_last_bn_init(self.zero_init_residual))(y, train=train)
    shortcut = x_BHWC
    if self.strides != 1 or x_BHWC.shape[-1] != self.features:
      shortcut = ConvBN(self.features, (1, 1), strides=s, act=None, name='downsample',
                        **kw)(x_BHWC, train=train)
    return nn.relu(y + shortcut)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided: v1.5), 1x1 expand to 4x `features`, plus shortcut, ReLU."""
  features: int                      # the bottleneck width; output is 4x this
  strides: int = 1
  zero_init_residual: bool = False
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool):
    s = (self.strides, self.strides)
    out = self.features * self.expansion
    kw = dict(axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
    y = ConvBN(self.features, (1, 1), name='conv1', **kw)(x_BHWC, train=train)
    y = ConvBN(self.features, (3, 3), strides=s, name='conv2', **kw)(y, train=train)
    y = ConvBN(out, (1, 1), act=None, name='conv3', **kw,
               bn_scale_init=_last_bn_init(self.zero_init_residual))(y, train=train)
    shortcut = x_BHWC
    if self.strides != 1 or x_BHWC.shape[-1] != out:
      shortcut = ConvBN(out, (1, 1), strides=s, act=None, name='downsample',
                        **kw)(x_BHWC, train=train)
    return nn.relu(y + shortcut)


BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck}


class Model(nn.Module):
  """ResNet classifier over (B, H, W, C) images; returns (B, num_classes) logits."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)     # blocks per stage (ResNet-50 by default)
  block: str = 'bottleneck'                     # 'basic' | 'bottleneck'
  widths: Sequence[int] = (64, 128, 256, 512)   # per-stage base width (bottleneck: x4 out)
  stem_features: int = 64
  small_input: bool = False      # 3x3/1 stem conv, no max pool (CIFAR-style, small images)
  zero_init_residual: bool = False
  num_classes: int = 1000         # 0: no head; returns the pooled features (B, C)
  axis_name: Optional[str] = None  # pmap axis for BatchNorm statistics
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    if self.block not in BLOCKS:
      raise ValueError(f'block must be one of {sorted(BLOCKS)}, got {self.block!r}')
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(f'stage_sizes {tuple(self.stage_sizes)} and widths '
                       f'{tuple(self.widths)} must have the same length')
    check_spatial(x_BHWC, 1, 'ResNet input')
    kw = dict(axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
    x = split_height(jnp.asarray(x_BHWC, self.dtype))
    if self.small_input:
      x = ConvBN(self.stem_features, (3, 3), name='stem', **kw)(x, train=train)
    else:
      x = ConvBN(self.stem_features, (7, 7), strides=(2, 2), name='stem', **kw)(x, train=train)
      # PyTorch pads a max pool with -inf; so does flax's max_pool.
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    x = split_height(x)
    block_cls = BLOCKS[self.block]
    for i, (n_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(n_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = split_height(block_cls(width, strides=strides,
                                   zero_init_residual=self.zero_init_residual,
                                   name=f'layer{i + 1}_{j}', **kw)(x, train=train))
    x = x.mean(axis=(1, 2))
    if not self.num_classes:  # the representation, for self-supervised objectives and probes
      return x
    return classifier_head(self.num_classes, self.dtype, self.param_dtype)(x)


# Named sizes (torchvision's resnet18 ... resnet152). TINY is for tests and digits.
VARIANTS = {
    '18': dict(stage_sizes=(2, 2, 2, 2), block='basic'),
    '34': dict(stage_sizes=(3, 4, 6, 3), block='basic'),
    '50': dict(stage_sizes=(3, 4, 6, 3), block='bottleneck'),
    '101': dict(stage_sizes=(3, 4, 23, 3), block='bottleneck'),
    '152': dict(stage_sizes=(3, 8, 36, 3), block='bottleneck'),
}
TINY = dict(stage_sizes=(1, 1, 1, 1), block='basic', widths=(16, 32, 64, 128),
            stem_features=16, small_input=True)
