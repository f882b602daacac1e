"""U-Net (Ronneberger, Fischer, Brox 2015, "U-Net: Convolutional networks for biomedical
image segmentation").

A contracting path of [3x3 conv, ReLU] x2 + 2x2 max pool levels doubling the channels
(64 -> 1024 at depth 4), an expanding path of 2x2 up-convolutions halving them,
concatenated with the centre-cropped skip features and followed by [3x3 conv, ReLU] x2,
and a 1x1 conv to the classes: 23 convolutional layers at depth 4. The paper's
convolutions are unpadded (`padding='VALID'`: a 572x572 tile gives a 388x388 map);
`padding='SAME'` keeps sizes (input divisible by 2**depth). `norm=True` adds BatchNorm
after every 3x3 conv (a common later variant; the paper has none). Dropout (`dropout`)
sits at the end of the contracting path, as in the paper.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.conv import batch_norm, channel_init, kernel_init
from arch.layers.pool import center_crop

Dtype = str | jnp.dtype


def output_size(size: int, depth: int, padding: str) -> int:
  """Spatial size of the output map for an input of `size`; ValueError if it cannot work."""
  if padding == 'SAME':
    if size % 2 ** depth:
      raise ValueError(f'U-Net with SAME padding and depth {depth} needs input sizes divisible '
                       f'by {2 ** depth}; got {size}')
    return size
  x = size
  for level in range(depth):
    x -= 4
    if x < 2 or x % 2:
      raise ValueError(f'U-Net (unpadded convs, depth {depth}) cannot take input size {size}: '
                       f'the map before pool {level + 1} is {x}, which must be even and >= 2 '
                       f'(valid sizes include 572, the paper\'s tile)')
    x //= 2
  x -= 4
  for _ in range(depth):
    x = 2 * x - 4
  if x < 1:
    raise ValueError(f'U-Net input size {size} leaves no output pixels')
  return x


class DoubleConv(nn.Module):
  """[3x3 conv (-> BN) -> ReLU] x 2."""
  features: int
  padding: str = 'VALID'
  norm: bool = False
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x, *, train: bool):
    for i in range(2):
      x = nn.Conv(self.features, (3, 3), padding=self.padding, use_bias=not self.norm,
                  dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=kernel_init(),
                  bias_init=channel_init(nn.initializers.zeros), name=f'conv{i}')(x)
      if self.norm:
        x = batch_norm(train, axis_name=self.axis_name, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f'norm{i}')(x)
      x = nn.relu(x)
    return x


class Model(nn.Module):
  """U-Net: (B, H, W, C) images -> (B, H', W', num_classes) per-pixel logits."""
  num_classes: int = 2
  features: int = 64        # channels of the first level; doubled at each level down
  depth: int = 4            # number of 2x2 poolings
  padding: str = 'VALID'    # the paper's unpadded convs, or 'SAME'
  norm: bool = False
  dropout: float = 0.0      # at the end of the contracting path
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    if self.padding not in ('VALID', 'SAME'):
      raise ValueError(f"padding must be 'VALID' or 'SAME', got {self.padding!r}")
    for size in x_BHWC.shape[1:3]:
      output_size(size, self.depth, self.padding)
    kw = dict(padding=self.padding, norm=self.norm, axis_name=self.axis_name,
              dtype=self.dtype, param_dtype=self.param_dtype)
    x = jnp.asarray(x_BHWC, self.dtype)
    skips = []
    for level in range(self.depth):
      x = DoubleConv(self.features * 2 ** level, name=f'down{level}', **kw)(x, train=train)
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = DoubleConv(self.features * 2 ** self.depth, name='bottom', **kw)(x, train=train)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    for level in reversed(range(self.depth)):
      width = self.features * 2 ** level
      x = nn.ConvTranspose(width, (2, 2), strides=(2, 2), dtype=self.dtype,
                           param_dtype=self.param_dtype, kernel_init=kernel_init(),
                           bias_init=channel_init(nn.initializers.zeros), name=f'upconv{level}')(x)
      skip = center_crop(skips[level], x.shape[1], x.shape[2])
      x = jnp.concatenate([skip, x], axis=-1)
      x = DoubleConv(width, name=f'up{level}', **kw)(x, train=train)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                   kernel_init=kernel_init(), bias_init=channel_init(nn.initializers.zeros),
                   name='classifier')(x)


# Named sizes: the paper's network (572x572 tiles, 2 classes) and a tiny one for tests.
PAPER = dict(features=64, depth=4, padding='VALID', num_classes=2)
TINY = dict(features=4, depth=2, padding='SAME')
