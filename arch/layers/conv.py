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
from jax import lax

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


# ---------------------------------------------------------------------------------------
# The convolution's lowering, chosen by shape
# ---------------------------------------------------------------------------------------

def use_im2col(x_shape, k_shape, strides, dilation, groups) -> bool:
  """Whether `conv_general_dilated` lowers a 2-D NHWC conv to im2col + one matmul.

  XLA:CPU (jaxlib 0.10.2) runs some convolutions far below its matmul speed. Forward +
  backward at batch 32 (2026-12-07): a 3x3 conv on a 2x2 map, 512 channels, 1,317 ms
  against 12.5 as im2col; a stride-2 3x3 conv 4x4 -> 2x2 (256 -> 512) 169 against 8.7.
  Strided 3x3 convs gain on every map measured (8 to 56 pixels, 0-40%); stride-1 convs
  on larger maps and the RGB stem lose, and stay lax.conv. docs/speed.md has the table.
  """
  kh, kw, c_in = k_shape[0], k_shape[1], k_shape[2]
  if groups != 1 or tuple(dilation) != (1, 1) or kh * kw == 1 or c_in < 16:
    return False
  out_h = (x_shape[1] - 1) // strides[0] + 1  # upper bound; padding is small next to it
  out_w = (x_shape[2] - 1) // strides[1] + 1
  return out_h * out_w <= 4 or max(strides) > 1


def im2col_conv(x_BHWC, kernel_HWIO, strides, padding, precision=None):
  """The convolution as one matmul: the kh x kw shifted (strided) windows of the padded
  input side by side on the channel axis, (B, H', W', kh*kw*C) @ (kh*kw*C, O)."""
  kh, kw, c_in, c_out = kernel_HWIO.shape
  (pt, pb), (pl, pr) = padding
  x = jnp.pad(x_BHWC, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  sh, sw = strides
  out_h = (x.shape[1] - kh) // sh + 1
  out_w = (x.shape[2] - kw) // sw + 1
  cols = [x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  # HWIO flattens (i, j, c) in the order the windows are stacked.
  return jnp.matmul(jnp.concatenate(cols, axis=-1), kernel_HWIO.reshape(kh * kw * c_in, c_out),
                    precision=precision)


NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, **kw):
  """`lax.conv_general_dilated` with im2col + matmul where `use_im2col` picks it (2-D
  NHWC/HWIO, explicit or VALID padding, no input dilation); the same sums in another
  order, so equal to float tolerance (tests/test_conv_lowering.py)."""
  plain = lambda: lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, precision=precision, **kw)
  if lhs.ndim != 4 or kw or (lhs_dilation and tuple(lhs_dilation) != (1, 1)):
    return plain()
  if dimension_numbers is None or lax.conv_dimension_numbers(
      lhs.shape, rhs.shape, dimension_numbers) != NHWC:
    return plain()
  if isinstance(padding, str):
    if padding != 'VALID':
      return plain()
    padding = ((0, 0), (0, 0))
  if not use_im2col(lhs.shape, rhs.shape, window_strides, rhs_dilation or (1, 1),
                    feature_group_count):
    return plain()
  return im2col_conv(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)), precision)


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
                kernel_init=kernel_init(), conv_general_dilated=conv_general_dilated,
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
