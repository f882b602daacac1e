"""Pooling with PyTorch's semantics, so reference layouts and ported weights line up.

Shapes: x_BHWC (batch, height, width, channels).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arch.layers.conv import check_spatial


def _adaptive_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) averaging weights over PyTorch's adaptive-pool bins
  [floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))."""
  m = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x_BHWC, output_size):
  """PyTorch's AdaptiveAvgPool2d for any input size: bins may overlap (13 -> 6) or repeat
  input pixels (3 -> 6). Exact reshape-mean when the size divides; otherwise a separable
  averaging matrix per axis at full precision."""
  out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
  x = x_BHWC
  for axis, n_out in ((1, out_h), (2, out_w)):
    n_in = x.shape[axis]
    if n_in == n_out:
      continue
    if n_in % n_out == 0:
      shape = x.shape[:axis] + (n_out, n_in // n_out) + x.shape[axis + 1:]
      x = x.reshape(shape).mean(axis=axis + 1)
    else:
      m = jnp.asarray(_adaptive_matrix(n_in, n_out), x.dtype)
      spec = 'bhwc,oh->bowc' if axis == 1 else 'bhwc,ow->bhoc'
      x = jnp.einsum(spec, x, m, precision=jax.lax.Precision.HIGHEST)
  return x


def flatten_chw(x_BHWC):
  """Flattens in PyTorch's (C, H, W) order, so ported classifier weights line up."""
  return jnp.transpose(x_BHWC, (0, 3, 1, 2)).reshape(x_BHWC.shape[0], -1)


def max_pool_ceil(x_BHWC, kernel: int, stride: int, padding: int = 0, what: str = 'max pool'):
  """PyTorch's MaxPool2d(kernel, stride, padding, ceil_mode=True): the output size rounds
  up, so a last window may hang over the bottom/right edge, but it must start inside the
  input or its left padding. Padding counts as -inf."""
  k, s, p = kernel, stride, padding
  check_spatial(x_BHWC, max(1, k - 2 * p - s + 1), what)
  pads, sizes = [], []
  for n in x_BHWC.shape[1:3]:
    out = -(-(n + 2 * p - k) // s) + 1
    if (out - 1) * s >= n + p:
      out -= 1
    pads.append((p, max(0, (out - 1) * s + k - n - p)))
    sizes.append(out)
  y = nn.max_pool(x_BHWC, (k, k), strides=(s, s), padding=pads)
  return y[:, :sizes[0], :sizes[1]]


def center_crop(x_BHW, h: int, w: int):
  """The central h x w window of axes 1 and 2 (U-Net's skip and target cropping)."""
  dh, dw = (x_BHW.shape[1] - h) // 2, (x_BHW.shape[2] - w) // 2
  return x_BHW[:, dh:dh + h, dw:dw + w]
