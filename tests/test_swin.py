"""Swin Transformer: torchvision's sizes, the shifted-window mask, the relative position
bias, patch merging and shapes with padding; the digits config's training is checked by
tests/test_loss_goldens.py."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.vision import swin
from conftest import load_config as _config

# torchvision's swin_t / swin_s / swin_b (weights=None, sum of p.numel()).
TORCHVISION = {'T': 28_288_354, 'S': 49_606_258, 'B': 87_768_224}


@pytest.mark.parametrize('variant', sorted(TORCHVISION))
def test_imagenet_config_has_torchvisions_parameter_count(variant):
  from train import summary
  config = _config(f'swin_imagenet.py:variant={variant}')
  params = summary.param_shapes(config)['params']
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == TORCHVISION[variant]


@functools.cache
def _block_params():
  # An 'rbg' key: XLA-CPU compiles threefry initializers several times slower.
  block = swin.SwinBlock(num_heads=2, window_size=4)
  return jax.jit(block.init)(jax.random.key(1, impl='rbg'), jnp.zeros((1, 4, 4, 8)))


@pytest.mark.parametrize('size,shift', [((6, 10), 0), ((6, 10), 2), ((4, 10), 2)])
def test_block_mixes_tokens_only_within_their_window(size, shift):
  """d(output token)/d(input token) is non-zero exactly when both lie in the same window
  of the (shifted) partition, counted without wrap-around: the paper's shifted windows
  start at -shift, so the edge windows are partial and the roll's wrapped regions stay
  apart. A side no longer than the window is not shifted; 10 pads to 12."""
  m, (h, w) = 4, size
  block = swin.SwinBlock(num_heads=2, window_size=m, shift=shift)
  x = jax.random.normal(jax.random.key(0), (1, h, w, 8))
  params = _block_params()  # the same for every map size and shift
  jac = jax.jit(jax.jacrev(lambda x: block.apply(params, x)[0]))(x)[..., 0, :, :, :]
  reach = np.abs(np.asarray(jac)).sum(axis=(2, 5)).reshape(h * w, h * w)  # (h,w,D,h,w,D)
  s_h, s_w = (shift if m < -(-n // m) * m else 0 for n in (h, w))
  y, x_ = np.divmod(np.arange(h * w), w)
  window = ((y + m - s_h) // m) * 100 + (x_ + m - s_w) // m
  same = window[:, None] == window[None, :]
  assert (reach[same] > 1e-6).all()
  np.testing.assert_array_equal(reach[~same], 0.0)
  assert (~same).any()


def test_relative_position_index_depends_only_on_the_offset():
  """Pairs (query, key) with equal offsets read one table row; different offsets different
  rows; all (2M-1)^2 rows are used."""
  m = 3
  index = swin.relative_position_index(m)
  y, x = np.divmod(np.arange(m * m), m)
  offsets = [(y[i] - y[j], x[i] - x[j]) for i in range(m * m) for j in range(m * m)]
  row_of = {}
  for offset, row in zip(offsets, index.reshape(-1)):
    assert row_of.setdefault(offset, row) == row
  assert len(set(row_of.values())) == len(row_of) == (2 * m - 1) ** 2
  assert sorted(row_of.values()) == list(range((2 * m - 1) ** 2))


def test_attention_bias_is_the_table_row_of_each_offset():
  """The bias the windows get is table[offset row] per head, in (1, N, T, T) layout."""
  m, n = 3, 2
  table = np.arange((2 * m - 1) ** 2 * n, dtype=np.float32).reshape(-1, n)
  bias = np.asarray(swin.relative_position_bias(jnp.asarray(table), m))
  assert bias.shape == (1, n, m * m, m * m)
  y, x = np.divmod(np.arange(m * m), m)
  for i in range(m * m):
    for j in range(m * m):
      row = (y[i] - y[j] + m - 1) * (2 * m - 1) + (x[i] - x[j] + m - 1)
      np.testing.assert_array_equal(bias[0, :, i, j], table[row])


def test_patch_merging_concatenates_2x2_in_torchvisions_order():
  """LN(cat[x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]]) @ W, odd sides
  zero-padded at the bottom and right."""
  merge = swin.PatchMerging()
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
  params = jax.jit(merge.init)(jax.random.key(1, impl='rbg'), x)
  p = nn.meta.unbox(params)['params']
  xp = np.pad(np.asarray(x), ((0, 0), (0, 1), (0, 0), (0, 0)))
  cat = np.concatenate([xp[:, 0::2, 0::2], xp[:, 1::2, 0::2], xp[:, 0::2, 1::2],
                        xp[:, 1::2, 1::2]], axis=-1)
  normed = (cat - cat.mean(-1, keepdims=True)) / np.sqrt(cat.var(-1, keepdims=True) + 1e-5)
  want = (normed * p['norm']['scale'] + p['norm']['bias']) @ p['reduction']['kernel']
  np.testing.assert_allclose(jax.jit(merge.apply)(params, x), want, rtol=1e-5, atol=1e-5)


def _stage_shapes(model, size):
  x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
  out, variables = jax.eval_shape(lambda x: model.init_with_output(
      jax.random.key(0), x, capture_intermediates=True), x)
  inter = variables['intermediates']
  last = lambda i: inter[f'stage{i + 1}_{model.depths[i] - 1}']['__call__'][0].shape
  return out.shape, [last(i) for i in range(len(model.depths))]


@pytest.mark.parametrize('variant,size', [('T', (224, 224)), ('T', (160, 92)),
                                          ('TINY', (20, 28))])
def test_stages_halve_the_map_and_double_the_width(variant, size):
  """/p, then /2 per stage (odd sides round up); 160x92 makes 40x23 (not a multiple of 7:
  padded) down to 5x3 (smaller than the window: padded up to it, never shifted)."""
  kw = swin.TINY if variant == 'TINY' else swin.VARIANTS[variant]
  model = swin.Model(num_classes=5, **kw)
  out, stages = _stage_shapes(model, size)
  assert out == (2, 5)
  h, w = (n // model.patch_size for n in size)
  for i, shape in enumerate(stages):
    assert shape == (2, h, w, model.embed_dim * 2 ** i)
    h, w = -(-h // 2), -(-w // 2)
  pooled = jax.eval_shape(lambda: swin.Model(num_classes=0, **kw).init_with_output(
      jax.random.key(0), jnp.zeros((2, *size, 3)))[0])
  assert pooled.shape == (2, model.embed_dim * 2 ** (len(model.depths) - 1))
