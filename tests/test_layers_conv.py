"""Shared CNN blocks: BatchNorm train/eval behaviour, PyTorch padding, SE, stochastic depth."""

import jax
import jax.numpy as jnp
import numpy as np

from arch.layers import conv


def test_batchnorm_normalises_with_batch_stats_in_training_and_running_stats_in_eval():
  m = conv.ConvBN(4, kernel_size=(1, 1), act=None)
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (16, 5, 5, 2))
  v = m.init(jax.random.key(1), x, train=False)
  y, upd = m.apply(v, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, rtol=1e-3)
  z = jax.lax.conv_general_dilated(x, v['params']['conv']['kernel'].value if hasattr(
      v['params']['conv']['kernel'], 'value') else v['params']['conv']['kernel'], (1, 1), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  stats = upd['batch_stats']['norm']
  # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch (mean from 0, var from 1)
  np.testing.assert_allclose(stats['mean'], 0.1 * z.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats['var'], 0.9 + 0.1 * z.var(axis=(0, 1, 2)), rtol=1e-3)
  # eval: the stored statistics, not the batch's
  v2 = {**v, 'batch_stats': upd['batch_stats']}
  y_eval = m.apply(v2, x, train=False)
  want = (z - stats['mean']) / jnp.sqrt(stats['var'] + 1e-5)
  np.testing.assert_allclose(y_eval, want, rtol=1e-4, atol=1e-4)
  assert np.abs(y_eval.mean()) > 0.5  # not re-normalised per batch


def test_stride2_padding_is_symmetric_like_pytorch():
  m = conv.ConvBN(3, kernel_size=(3, 3), strides=(2, 2), norm=False, act=None)
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 2))
  v = m.init(jax.random.key(1), x, train=False)
  y = m.apply(v, x, train=False)
  k = jax.tree.leaves(v['params'])[0]
  want = jax.lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert y.shape == (1, 4, 4, 3)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_squeeze_excite_gates_channels():
  se = conv.SqueezeExcite(2)
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 6))
  v = se.init(jax.random.key(1), x)
  zero = jax.tree.map(jnp.zeros_like, v)
  np.testing.assert_allclose(se.apply(zero, x), 0.5 * x, rtol=1e-6)  # sigmoid(0) = 1/2
  y = se.apply(v, x)
  ratio = y / x
  # one gate per (example, channel), constant over space, in (0, 1)
  np.testing.assert_allclose(ratio, ratio[:, :1, :1, :] * jnp.ones_like(ratio), rtol=1e-5)
  assert float(ratio.min()) > 0 and float(ratio.max()) < 1


def test_drop_path_drops_whole_examples_and_preserves_the_mean():
  dp = conv.DropPath(0.25)
  x = jnp.ones((4000, 3, 3, 2))
  assert (dp.apply({}, x, train=False) == x).all()
  y = dp.apply({}, x, train=True, rngs={'dropout': jax.random.key(0)})
  per_example = y.reshape(4000, -1)
  kept = per_example[:, 0] > 0
  # all-or-nothing per example, survivors scaled by 1 / (1 - rate)
  assert ((per_example == per_example[:, :1]).all())
  np.testing.assert_allclose(per_example[kept, 0], 1 / 0.75, rtol=1e-6)
  assert abs(kept.mean() - 0.75) < 0.03
