"""VGG (Simonyan & Zisserman 2014, "Very deep convolutional networks for large-scale image
recognition"), configurations A, B, D, E (VGG-11/13/16/19) in torchvision's layout.

Five stages of 3x3 convolutions (stride 1, pad 1, with bias, ReLU) of 64, 128, 256, 512,
512 channels, each stage ending in a 2x2 stride-2 max pool; the stages hold
(1, 1, 2, 2, 2) convs in A, (2, 2, 2, 2, 2) in B, (2, 2, 3, 3, 3) in D, (2, 2, 4, 4, 4)
in E. Then an adaptive average pool to 7x7 and the classifier Dense 4096 -> ReLU ->
Dropout -> Dense 4096 -> ReLU -> Dropout -> Dense classes. `norm=True` is torchvision's
`_bn` variant (not in the paper): BatchNorm between every conv and its ReLU (the conv
keeps its bias, as in torchvision). Inputs of at least 32x32.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.conv import ConvBN, check_spatial, classifier_head, hidden_dense
from arch.layers.pool import adaptive_avg_pool, flatten_chw

Dtype = str | jnp.dtype


class Model(nn.Module):
  """VGG: (B, H, W, C) images -> (B, num_classes) logits."""
  num_classes: int = 1000
  stages: Sequence[int] = (2, 2, 3, 3, 3)              # convs per stage; VGG-16 (config D)
  widths: Sequence[int] = (64, 128, 256, 512, 512)     # channels per stage
  norm: bool = False          # BatchNorm after every conv (torchvision's vggN_bn)
  hidden: int = 4096          # width of the two hidden Dense layers
  pool_size: int = 7          # the adaptive average pool's output (7x7)
  dropout: float = 0.5        # after each of the two hidden Dense layers
  axis_name: Optional[str] = None  # pmap axis for BatchNorm statistics
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    check_spatial(x_BHWC, 1, 'VGG input')
    if len(self.stages) != len(self.widths):
      raise ValueError(f'stages {self.stages} and widths {self.widths} differ in length')
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = jnp.asarray(x_BHWC, self.dtype)
    for s, (n, width) in enumerate(zip(self.stages, self.widths)):
      for i in range(n):
        x = ConvBN(width, (3, 3), use_bias=True, norm=self.norm, axis_name=self.axis_name,
                   name=f'conv{s + 1}_{i + 1}', **dt)(x, train=train)
      check_spatial(x, 2, f'VGG pool{s + 1} (2x2 max pool)')
      x = nn.max_pool(x, (2, 2), strides=(2, 2))  # 224 -> 112 -> 56 -> 28 -> 14 -> 7
    self.sow('intermediates', 'features', x)
    x = adaptive_avg_pool(x, self.pool_size)  # 7x7 for any input
    self.sow('intermediates', 'pooled', x)
    x = flatten_chw(x)
    x = nn.relu(hidden_dense(self.hidden, ('embed', 'mlp'), 'fc1', **dt)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(hidden_dense(self.hidden, ('mlp', 'embed'), 'fc2', **dt)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return classifier_head(self.num_classes, self.dtype, self.param_dtype)(x)


# Named sizes: the paper's configurations (Table 1) by depth, with and without BatchNorm,
# matching torchvision's vgg11 .. vgg19_bn parameter counts; SMALL is the digits
# experiment's network (an eighth of the widths, config A with BatchNorm); TINY for tests.
STAGES = {'11': (1, 1, 2, 2, 2), '13': (2, 2, 2, 2, 2), '16': (2, 2, 3, 3, 3),
          '19': (2, 2, 4, 4, 4)}
VARIANTS = {**{d: dict(stages=st) for d, st in STAGES.items()},
            **{f'{d}_bn': dict(stages=st, norm=True) for d, st in STAGES.items()}}
SMALL = dict(stages=STAGES['11'], widths=(8, 16, 32, 64, 64), norm=True, hidden=256)
TINY = dict(stages=(1, 1, 1, 1, 1), widths=(4, 4, 8, 8, 8), norm=True, hidden=16, pool_size=2)
