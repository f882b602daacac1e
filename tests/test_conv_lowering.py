"""The convolution's lowering chosen by shape (arch/layers/conv.py): im2col + one matmul
where XLA:CPU's convolution is slow (2x2 maps, strided 3x3), equal to lax.conv to float
tolerance in the forward pass and in both gradients, and picked only where it should be."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.layers import conv

NHWC = ('NHWC', 'HWIO', 'NHWC')


def lax_conv(x, w, strides, padding):
  return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


@pytest.mark.parametrize('size,kernel,strides,padding', [
    (2, 3, (1, 1), ((1, 1), (1, 1))),  # ResNet's last stage at 64x64 inputs
    (4, 3, (2, 2), ((1, 1), (1, 1))),  # into that stage
    (7, 3, (2, 2), ((1, 1), (1, 1))),  # odd map: the last window ends before the padding
    (6, 3, (1, 2), ((0, 2), (1, 0))),  # asymmetric strides and padding
    (5, 2, (1, 1), 'VALID'),           # even kernel, no padding
])
def test_im2col_equals_lax_conv_forward_and_gradients(size, kernel, strides, padding):
  kx, kw, kc = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (3, size, size + 1, 16))
  w = 0.1 * jax.random.normal(kw, (kernel, kernel, 16, 24))
  ours = lambda x, w: conv.im2col_conv(
      x, w, strides, ((0, 0), (0, 0)) if padding == 'VALID' else padding)
  want = lax_conv(x, w, strides, padding)
  got = ours(x, w)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # A random cotangent: every output position weighs differently in both gradients.
  c = jax.random.normal(kc, want.shape)
  grads = lambda f: jax.grad(lambda x, w: (f(x, w) * c).sum(), argnums=(0, 1))(x, w)
  for g, g_want in zip(grads(ours), grads(lambda x, w: lax_conv(x, w, strides, padding))):
    np.testing.assert_allclose(g, g_want, rtol=1e-5, atol=1e-5)


def uses_conv_primitive(x_shape, k_shape, strides, padding=((1, 1), (1, 1)), **kw):
  f = lambda x, w: conv.conv_general_dilated(x, w, strides, padding,
                                             dimension_numbers=NHWC, **kw)
  jaxpr = jax.make_jaxpr(f)(jnp.zeros(x_shape), jnp.zeros(k_shape))
  return 'conv_general_dilated' in str(jaxpr)


def test_the_lowering_is_chosen_by_shape():
  # im2col: a 2x2 (or smaller) output map, or a strided conv with 16+ input channels
  assert not uses_conv_primitive((2, 2, 2, 64), (3, 3, 64, 64), (1, 1))
  assert not uses_conv_primitive((2, 1, 1, 64), (3, 3, 64, 64), (1, 1))
  assert not uses_conv_primitive((2, 4, 4, 64), (3, 3, 64, 128), (2, 2))
  assert not uses_conv_primitive((2, 56, 56, 64), (3, 3, 64, 128), (2, 2))
  # lax.conv: stride-1 convs on larger maps, the RGB stem, 1x1, groups, dilation
  assert uses_conv_primitive((2, 8, 8, 64), (3, 3, 64, 64), (1, 1))
  assert uses_conv_primitive((2, 64, 64, 3), (7, 7, 3, 64), (2, 2), ((3, 3), (3, 3)))
  assert uses_conv_primitive((2, 4, 4, 64), (1, 1, 64, 128), (2, 2), ((0, 0), (0, 0)))
  assert uses_conv_primitive((2, 2, 2, 64), (3, 3, 16, 64), (1, 1), feature_group_count=4)
  assert uses_conv_primitive((2, 2, 2, 64), (3, 3, 64, 64), (1, 1), rhs_dilation=(2, 2))
  assert uses_conv_primitive((2, 2, 2, 64), (3, 3, 64, 64), (1, 1), lhs_dilation=(2, 2))
  assert uses_conv_primitive((2, 2, 2, 64), (3, 3, 64, 64), (1, 1), padding='SAME')


def test_convbn_lowers_by_shape_with_the_same_params_and_outputs(monkeypatch):
  m = conv.ConvBN(32, strides=(2, 2))
  x = jax.random.normal(jax.random.key(0), (4, 4, 4, 16))
  v = m.init(jax.random.key(1), x, train=False)
  assert v['params']['conv']['kernel'].value.shape == (3, 3, 16, 32)  # nn.Conv's layout
  def run(x):
    return m.apply(v, x, train=True, mutable=['batch_stats'])[0]
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(run)(x))
  got = run(x)
  monkeypatch.setattr(conv, 'use_im2col', lambda *a: False)
  run_lax = lambda x: m.apply(v, x, train=True, mutable=['batch_stats'])[0]  # a fresh trace
  assert 'conv_general_dilated' in str(jax.make_jaxpr(run_lax)(x))
  np.testing.assert_allclose(got, run_lax(x), rtol=1e-4, atol=1e-4)
