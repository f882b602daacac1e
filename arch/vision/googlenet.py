"""GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going deeper with convolutions"), in
torchvision's layout.

Stem: conv 64@7x7/2 -> max pool 3/2 -> conv 64@1x1 -> conv 192@3x3 -> max pool 3/2; then
inception blocks 3a, 3b, max pool 3/2, 4a..4e, max pool 2/2, 5a, 5b; global average
pool, Dropout 0.2, Dense classes. Every conv is torchvision's BasicConv2d: conv without
bias -> BatchNorm (eps 1e-3) -> ReLU (the paper predates BatchNorm and has LRN in the
stem; torchvision has no LRN). Max pools use PyTorch's ceil mode. An inception block
concatenates, in this order, a 1x1 branch, a 1x1 -> 3x3 branch, a 1x1 -> "5x5" branch and
a 3x3/1 max pool -> 1x1 projection. torchvision's "5x5" branch is a 3x3 conv (a known
quirk of its port; `branch3_kernel=5` gives the paper's 5x5). 6,624,904 parameters at
1,000 classes.

Auxiliary classifiers (`aux_logits=True`, off by default) sit on 4a and 4d: adaptive
average pool to 4x4 -> BasicConv2d 128@1x1 -> Dense 1024 -> ReLU -> Dropout 0.7 ->
Dense classes; with them the model has 13,004,888 parameters, as torchvision's. They run
only in training, and the model still returns only the main logits: the auxiliary logits
are sown into the 'aux_logits' collection (`aux1_logits`, `aux2_logits`), which an
objective reads by making that collection mutable in `apply` (the paper weights their
losses by 0.3).
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.conv import ConvBN, check_spatial, classifier_head, hidden_dense
from arch.layers.pool import adaptive_avg_pool, flatten_chw, max_pool_ceil

Dtype = str | jnp.dtype

# Inception blocks in order, with torchvision's widths: (1x1, 3x3 reduce, 3x3,
# "5x5" reduce, "5x5", pool proj). A block outputs 1x1 + 3x3 + 5x5 + pool proj channels.
BLOCK_NAMES = ('3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a', '5b')
BLOCKS = ((64, 96, 128, 16, 32, 32),
          (128, 128, 192, 32, 96, 64),
          (192, 96, 208, 16, 48, 64),
          (160, 112, 224, 24, 64, 64),
          (128, 128, 256, 24, 64, 64),
          (112, 144, 288, 32, 64, 64),
          (256, 160, 320, 32, 128, 128),
          (256, 160, 320, 32, 128, 128),
          (384, 192, 384, 48, 128, 128))
_POOL_AFTER = {'3b': (3, 2), '4e': (2, 2)}  # max pools between the stages: (kernel, stride)
_AUX_AFTER = {'4a': 'aux1', '4d': 'aux2'}


class Inception(nn.Module):
  """One inception block: four branches on the same input, concatenated on channels."""
  ch1x1: int
  ch3x3_reduce: int
  ch3x3: int
  ch5x5_reduce: int
  ch5x5: int
  pool_proj: int
  branch3_kernel: int = 3     # torchvision's "5x5" branch is 3x3; 5 for the paper's
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool):
    def conv(n, k, name):
      return ConvBN(n, (k, k), bn_epsilon=1e-3, axis_name=self.axis_name, name=name,
                    dtype=self.dtype, param_dtype=self.param_dtype)
    b1 = conv(self.ch1x1, 1, 'branch1')(x_BHWC, train=train)
    b2 = conv(self.ch3x3_reduce, 1, 'branch2_reduce')(x_BHWC, train=train)
    b2 = conv(self.ch3x3, 3, 'branch2')(b2, train=train)
    b3 = conv(self.ch5x5_reduce, 1, 'branch3_reduce')(x_BHWC, train=train)
    b3 = conv(self.ch5x5, self.branch3_kernel, 'branch3')(b3, train=train)
    b4 = max_pool_ceil(x_BHWC, 3, 1, 1, 'inception pool branch')
    b4 = conv(self.pool_proj, 1, 'branch4_proj')(b4, train=train)
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
  """Auxiliary classifier: 4x4 average pool, 1x1 conv, two Dense layers."""
  num_classes: int
  conv_features: int = 128
  hidden: int = 1024
  dropout: float = 0.7
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool):
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = adaptive_avg_pool(x_BHWC, 4)  # 14x14 -> 4x4 at 224 (overlapping bins)
    x = ConvBN(self.conv_features, (1, 1), bn_epsilon=1e-3, axis_name=self.axis_name,
               name='conv', **dt)(x, train=train)
    x = nn.relu(hidden_dense(self.hidden, ('embed', 'mlp'), 'fc1', **dt)(flatten_chw(x)))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return classifier_head(self.num_classes, self.dtype, self.param_dtype, name='fc2')(x)


class Model(nn.Module):
  """GoogLeNet: (B, H, W, C) images -> (B, num_classes) logits."""
  num_classes: int = 1000
  stem: Sequence[int] = (64, 64, 192)          # conv1 7x7/2, conv2 1x1, conv3 3x3
  blocks: Sequence[Sequence[int]] = BLOCKS     # widths of 3a..5b (see BLOCKS)
  branch3_kernel: int = 3     # torchvision's "5x5" branch is 3x3; 5 for the paper's
  dropout: float = 0.2        # before the classifier
  aux_logits: bool = False    # auxiliary classifiers on 4a and 4d (training only)
  aux_conv: int = 128
  aux_hidden: int = 1024
  aux_dropout: float = 0.7
  axis_name: Optional[str] = None  # pmap axis for BatchNorm statistics
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    check_spatial(x_BHWC, 1, 'GoogLeNet input')
    if len(self.blocks) != len(BLOCK_NAMES):
      raise ValueError(f'GoogLeNet has {len(BLOCK_NAMES)} inception blocks; '
                       f'got {len(self.blocks)} widths')
    dt = dict(axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
    basic = lambda n, k, s, name: ConvBN(n, (k, k), strides=(s, s), bn_epsilon=1e-3,
                                         name=name, **dt)
    x = jnp.asarray(x_BHWC, self.dtype)
    x = basic(self.stem[0], 7, 2, 'conv1')(x, train=train)             # 112x112 at 224
    x = max_pool_ceil(x, 3, 2, what='GoogLeNet maxpool1')               # 56
    x = basic(self.stem[1], 1, 1, 'conv2')(x, train=train)
    x = basic(self.stem[2], 3, 1, 'conv3')(x, train=train)
    x = max_pool_ceil(x, 3, 2, what='GoogLeNet maxpool2')               # 28
    pools = 2
    for name, widths in zip(BLOCK_NAMES, self.blocks):
      x = Inception(*widths, branch3_kernel=self.branch3_kernel, name=f'inception{name}',
                    **dt)(x, train=train)                               # 28, 14, 7
      if self.aux_logits and name in _AUX_AFTER and (train or self.is_initializing()):
        aux = InceptionAux(self.num_classes, self.aux_conv, self.aux_hidden, self.aux_dropout,
                           name=_AUX_AFTER[name], **dt)(x, train=train)
        if not self.is_initializing():
          self.sow('aux_logits', f'{_AUX_AFTER[name]}_logits', aux)
      if name in _POOL_AFTER:
        pools += 1
        k, s = _POOL_AFTER[name]
        x = max_pool_ceil(x, k, s, what=f'GoogLeNet maxpool{pools}')
    x = x.mean(axis=(1, 2))  # adaptive average pool to 1x1
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return classifier_head(self.num_classes, self.dtype, self.param_dtype, name='fc')(x)


# Named sizes. GOOGLENET is torchvision's `googlenet` (6,624,904 parameters; 13,004,888
# with aux_logits=True); SMALL is the digits experiment's network (a quarter of every
# width); TINY (an eighth, at least 2) is for tests.
def _scaled(divisor: int, minimum: int) -> dict:
  scale = lambda c: max(minimum, c // divisor)
  return dict(stem=tuple(map(scale, (64, 64, 192))),
              blocks=tuple(tuple(map(scale, b)) for b in BLOCKS),
              aux_conv=scale(128), aux_hidden=scale(1024))


GOOGLENET = dict()
SMALL = _scaled(4, 4)
TINY = _scaled(8, 2)
