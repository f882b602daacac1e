"""AlexNet (Krizhevsky, Sutskever, Hinton 2012, "ImageNet classification with deep
convolutional neural networks"), in torchvision's single-tower layout (its reference for
the one-GPU variant of the paper, "One weird trick", Krizhevsky 2014).

Features: conv 64@11x11/4 (pad 2) -> max pool 3/2 -> conv 192@5x5 -> max pool 3/2 ->
conv 384@3x3 -> conv 256@3x3 -> conv 256@3x3 -> max pool 3/2, ReLU after every conv;
an adaptive average pool to 6x6; classifier Dropout -> Dense 4096 -> ReLU -> Dropout ->
Dense 4096 -> ReLU -> Dense classes. 61,100,840 parameters at 1,000 classes, any input
of at least 63x63.

`small_input=True` is the usual adaptation to 32x32 images (e.g. CIFAR): the first conv
becomes 3x3, stride 1, pad 1 (everything after it unchanged), so the three max pools
leave 3x3 at a 32x32 input, and inputs from 15x15 work. It is not part of the paper.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.conv import ConvBN, check_spatial, classifier_head, hidden_dense
from arch.layers.pool import adaptive_avg_pool, flatten_chw

Dtype = str | jnp.dtype


def _max_pool(x_BHWC, what: str):
  """3x3 stride-2 max pool without padding (PyTorch's floor mode)."""
  check_spatial(x_BHWC, 3, f'AlexNet {what} (3x3 max pool)')
  return nn.max_pool(x_BHWC, (3, 3), strides=(2, 2))


class Model(nn.Module):
  """AlexNet: (B, H, W, C) images -> (B, num_classes) logits."""
  num_classes: int = 1000
  features: Sequence[int] = (64, 192, 384, 256, 256)  # channels of conv1..conv5
  hidden: int = 4096          # width of the two hidden Dense layers
  pool_size: int = 6          # the adaptive average pool's output (6x6)
  dropout: float = 0.5        # before each of the two hidden Dense layers
  small_input: bool = False   # conv1 3x3 stride 1 pad 1 instead of 11x11/4 pad 2 (32x32 inputs)
  axis_name: Optional[str] = None  # unused (no BatchNorm); accepted like every CNN here
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    check_spatial(x_BHWC, 1, 'AlexNet input')
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    conv = lambda n, k, name, **kw: ConvBN(n, (k, k), use_bias=True, norm=False, name=name,
                                           **kw, **dt)
    c1, c2, c3, c4, c5 = self.features
    x = jnp.asarray(x_BHWC, self.dtype)
    if self.small_input:
      x = conv(c1, 3, 'conv1')(x, train=train)  # 32x32 at a 32x32 input
    else:
      check_spatial(x, 7, 'AlexNet conv1 (11x11, stride 4, pad 2)')
      x = conv(c1, 11, 'conv1', strides=(4, 4),
               padding=((2, 2), (2, 2)))(x, train=train)  # 55x55 at 224
    x = _max_pool(x, 'pool1')  # 27x27 at 224 (small_input: 15x15 at 32)
    x = conv(c2, 5, 'conv2')(x, train=train)
    x = _max_pool(x, 'pool2')  # 13x13 (7x7)
    x = conv(c3, 3, 'conv3')(x, train=train)
    x = conv(c4, 3, 'conv4')(x, train=train)
    x = conv(c5, 3, 'conv5')(x, train=train)
    x = _max_pool(x, 'pool3')  # 6x6 (3x3)
    self.sow('intermediates', 'features', x)
    x = adaptive_avg_pool(x, self.pool_size)  # 6x6 for any input
    self.sow('intermediates', 'pooled', x)
    x = flatten_chw(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(hidden_dense(self.hidden, ('embed', 'mlp'), 'fc1', **dt)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(hidden_dense(self.hidden, ('mlp', 'embed'), 'fc2', **dt)(x))
    return classifier_head(self.num_classes, self.dtype, self.param_dtype)(x)


# Named sizes. ALEXNET is torchvision's `alexnet` (61,100,840 parameters at 1,000 classes);
# SMALL is the digits experiment's network (a quarter of the conv widths, Dense 512, the
# 32x32 stem); TINY is for tests.
ALEXNET = dict()
SMALL = dict(features=(16, 48, 96, 64, 64), hidden=512, small_input=True)
TINY = dict(features=(4, 8, 8, 8, 8), hidden=16, pool_size=2, small_input=True)
VARIANTS = {'alexnet': ALEXNET, 'small': SMALL, 'tiny': TINY}
