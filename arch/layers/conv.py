"""Convolutional building blocks shared by the CNN families.

Shapes: x_BHWC (batch, height, width, channels). Padding defaults to the symmetric
`(k - 1) // 2 * dilation` that PyTorch reference models use (XLA's 'SAME' pads stride-2
convolutions asymmetrically), so layouts, output sizes and ported weights line up.
Params carry logical axes: kernels (None, None, 'conv_in', 'conv_out'), per-channel
vectors ('conv_out',).
"""

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = str | jnp.dtype


def kernel_init(init=nn.initializers.kaiming_normal()):
  """He-normal (fan_in) kernel init with the conv kernel's logical axes."""
  return nn.with_logical_partitioning(init, (None, None, 'conv_in', 'conv_out'))


def channel_init(init):
  return nn.with_logical_partitioning(init, ('conv_out',))


def torch_padding(kernel_size: Sequence[int], dilation: int = 1):
  return [((k - 1) // 2 * dilation, (k - 1) // 2 * dilation) for k in kernel_size]


def check_spatial(x_BHWC, minimum: int, what: str):
  """Raises a clear error unless `x_BHWC` is a (batch, H, W, C) map of at least
  minimum x minimum (what the next layer, named by `what`, needs)."""
  if x_BHWC.ndim != 4:
    raise ValueError(f'{what}: takes (batch, H, W, C) images; got shape {x_BHWC.shape}')
  h, w = x_BHWC.shape[1:3]
  if h < minimum or w < minimum:
    raise ValueError(f'{what}: the feature map is {h}x{w}, smaller than {minimum}x{minimum}; '
                     f'use a larger input size')


def batch_norm(train: bool, *, axis_name: Optional[str] = None, momentum: float = 0.9,
               epsilon: float = 1e-5, scale_init: Callable = nn.initializers.ones,
               dtype: Dtype = 'float32', param_dtype: Dtype = 'float32', name=None):
  """nn.BatchNorm with PyTorch's defaults (momentum 0.1 = flax 0.9, eps 1e-5), logical axes.

  `axis_name`: the pmap axis to average statistics over (the loop sets it under pmap;
  under jit the batch is one global array and statistics are global already).
  Running statistics live in the 'batch_stats' collection; eval (`train=False`) uses them.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                      axis_name=axis_name, dtype=dtype, param_dtype=param_dtype,
                      scale_init=channel_init(scale_init),
                      bias_init=channel_init(nn.initializers.zeros), name=name)


class ConvBN(nn.Module):
  """Conv -> BatchNorm -> activation (each of the last two optional)."""
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  groups: int = 1
  dilation: int = 1
  padding: Optional[Sequence] = None   # None: symmetric PyTorch padding
  use_bias: bool = False               # a bias before BatchNorm is redundant
  norm: bool = True
  act: Optional[Callable] = nn.relu
  bn_scale_init: Callable = nn.initializers.ones  # zeros: residual branch starts at identity
  bn_epsilon: float = 1e-5
  bn_momentum: float = 0.9
  axis_name: Optional[str] = None
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool):
    k = tuple(self.kernel_size)
    pad = self.padding if self.padding is not None else torch_padding(k, self.dilation)
    x = nn.Conv(self.features, k, strides=tuple(self.strides), padding=pad,
                feature_group_count=self.groups, kernel_dilation=self.dilation,
                use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                kernel_init=kernel_init(),
                bias_init=channel_init(nn.initializers.zeros), name='conv')(x_BHWC)
    if self.norm:
      x = batch_norm(train, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                     scale_init=self.bn_scale_init, axis_name=self.axis_name, dtype=self.dtype,
                     param_dtype=self.param_dtype, name='norm')(x)
    if self.act is not None:
      x = self.act(x)
    return x


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation (Hu et al. 2018): channel gates from globally pooled features."""
  squeeze_features: int
  act: Callable = nn.silu
  gate: Callable = nn.sigmoid
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, x_BHWC):
    c = x_BHWC.shape[-1]
    conv = lambda n, name: nn.Conv(n, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                                   kernel_init=kernel_init(),
                                   bias_init=channel_init(nn.initializers.zeros), name=name)
    s = x_BHWC.mean(axis=(1, 2), keepdims=True)
    s = self.gate(conv(c, 'expand')(self.act(conv(self.squeeze_features, 'reduce')(s))))
    return x_BHWC * s


class DropPath(nn.Module):
  """Stochastic depth (Huang et al. 2016): drops a residual branch per example in training,
  scaling survivors by 1 / (1 - rate). Uses the 'dropout' rng."""
  rate: float

  @nn.compact
  def __call__(self, x, *, train: bool):
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def classifier_head(num_classes: int, dtype: Dtype, param_dtype: Dtype, name: str = 'head',
                    kernel_init_fn=nn.initializers.lecun_normal()):
  """The final Dense layer of a classifier, with logical axes."""
  return nn.Dense(num_classes, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(kernel_init_fn, ('embed', 'classes')),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('classes',)))


def hidden_dense(features: int, axes, name: str, dtype, param_dtype):
  """A hidden Dense layer of a classifier with logical axes `axes` (in, out)."""
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))
