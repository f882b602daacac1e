"""DenseNet (Huang, Liu, van der Maaten, Weinberger 2017, "Densely connected convolutional
networks"), the DenseNet-BC form in torchvision's layout.

Stem: 7x7/2 conv + BN + ReLU + 3x3/2 max pool (padded by 1). Dense blocks: each layer
reads the concatenation of all earlier feature maps of its block and adds `growth_rate`
new channels, BN-ReLU-1x1 conv (`bn_size` x growth) - BN-ReLU-3x3 conv (growth); the
block's output is [input, new_1, ..., new_L] along channels. Transitions between blocks:
BN-ReLU-1x1 conv halving the channels, 2x2/2 average pool. Final BN + ReLU, global
average pool, Dense head. Parameter counts equal torchvision's (densenet121: 7,978,856).

`small_input` swaps the stem for one 3x3/1 conv without BN or pooling (the paper's CIFAR
networks; every dense layer starts with its own BN-ReLU). Each transition needs a
feature map of at least 2x2, so the ImageNet stem with three transitions needs
H, W >= 29; smaller inputs raise a ValueError naming the transition.

Parameter names follow torchvision's (`denseblock1/denselayer1/conv1`, `transition1`).
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.conv import ConvBN, batch_norm, check_spatial, classifier_head

Dtype = str | jnp.dtype


class DenseLayer(nn.Module):
  """BN-ReLU-1x1 conv - BN-ReLU-3x3 conv: `growth_rate` new channels (only the new ones)."""
  growth_rate: int
  bn_size: int = 4               # bottleneck width = bn_size * growth_rate
  drop_rate: float = 0.0         # dropout on the new features (torchvision's drop_rate)
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool):
    kw = dict(axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
    conv = lambda n, k, name: ConvBN(n, k, norm=False, act=None, name=name, **kw)
    y = nn.relu(batch_norm(train, name='norm1', **kw)(x_BHWC))
    y = conv(self.bn_size * self.growth_rate, (1, 1), 'conv1')(y, train=train)
    y = nn.relu(batch_norm(train, name='norm2', **kw)(y))
    y = conv(self.growth_rate, (3, 3), 'conv2')(y, train=train)
    return nn.Dropout(self.drop_rate, deterministic=not train)(y)


class DenseBlock(nn.Module):
  """`num_layers` dense layers; returns [input, new_1, ..., new_L] concatenated on channels."""
  num_layers: int
  growth_rate: int
  bn_size: int = 4
  drop_rate: float = 0.0
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool):
    kw = dict(axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
    features = [x_BHWC]
    for i in range(self.num_layers):
      new = DenseLayer(self.growth_rate, self.bn_size, self.drop_rate,
                       name=f'denselayer{i + 1}', **kw)(jnp.concatenate(features, -1),
                                                        train=train)
      features.append(new)
    return jnp.concatenate(features, -1)


class Transition(nn.Module):
  """BN-ReLU-1x1 conv to `features` channels, then 2x2/2 average pooling."""
  features: int
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool):
    check_spatial(x_BHWC, 2, f'DenseNet {self.name or "transition"} (2x2 average pool)')
    kw = dict(axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
    y = nn.relu(batch_norm(train, name='norm', **kw)(x_BHWC))
    y = ConvBN(self.features, (1, 1), norm=False, act=None, name='conv', **kw)(y, train=train)
    return nn.avg_pool(y, (2, 2), strides=(2, 2))


class Model(nn.Module):
  """DenseNet-BC classifier over (B, H, W, C) images; returns (B, num_classes) logits."""
  block_config: Sequence[int] = (6, 12, 24, 16)  # layers per dense block (DenseNet-121)
  growth_rate: int = 32
  num_init_features: int = 64    # stem output channels
  bn_size: int = 4
  drop_rate: float = 0.0
  small_input: bool = False      # 3x3/1 stem conv, no BN or pool (the paper's CIFAR stem)
  num_classes: int = 1000
  axis_name: Optional[str] = None  # pmap axis for BatchNorm statistics
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    check_spatial(x_BHWC, 1, 'DenseNet input')
    kw = dict(axis_name=self.axis_name, dtype=self.dtype, param_dtype=self.param_dtype)
    x = jnp.asarray(x_BHWC, self.dtype)
    if self.small_input:
      x = ConvBN(self.num_init_features, (3, 3), norm=False, act=None, name='stem',
                 **kw)(x, train=train)
    else:
      x = ConvBN(self.num_init_features, (7, 7), strides=(2, 2), name='stem',
                 **kw)(x, train=train)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    channels = self.num_init_features
    for i, n_layers in enumerate(self.block_config):
      x = DenseBlock(n_layers, self.growth_rate, self.bn_size, self.drop_rate,
                     name=f'denseblock{i + 1}', **kw)(x, train=train)
      channels += n_layers * self.growth_rate
      if i != len(self.block_config) - 1:
        channels //= 2
        x = Transition(channels, name=f'transition{i + 1}', **kw)(x, train=train)
    x = nn.relu(batch_norm(train, name='norm5', **kw)(x))
    x = x.mean(axis=(1, 2))
    return classifier_head(self.num_classes, self.dtype, self.param_dtype)(x)


# Named sizes (torchvision's densenet121/161/169/201). TINY is for tests and digits.
VARIANTS = {
    '121': dict(block_config=(6, 12, 24, 16), growth_rate=32, num_init_features=64),
    '161': dict(block_config=(6, 12, 36, 24), growth_rate=48, num_init_features=96),
    '169': dict(block_config=(6, 12, 32, 32), growth_rate=32, num_init_features=64),
    '201': dict(block_config=(6, 12, 48, 32), growth_rate=32, num_init_features=64),
}
TINY = dict(block_config=(2, 2, 2, 2), growth_rate=12, num_init_features=24, small_input=True)
