"""AlexNet, VGG, GoogLeNet: torchvision's parameter counts, shapes, input-size limits, and
properties that catch a wrong block (adaptive-pool bins, VGG's conv/BN layout, inception
branch widths and order). Each digits config's first 20 training steps are checked bitwise
by tests/test_loss_goldens.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.layers import pool
from arch.layers.conv import ConvBN
from arch.vision import alexnet, googlenet, vgg
from train import config_lib, summary

from conftest import REPO

# torchvision 0.29's counts (models built with weights=None, summed over parameters()).
TORCHVISION_COUNTS = {
    'alexnet_imagenet.py': 61_100_840,
    'vgg_imagenet.py:variant=11': 132_863_336, 'vgg_imagenet.py:variant=11_bn': 132_868_840,
    'vgg_imagenet.py:variant=13': 133_047_848, 'vgg_imagenet.py:variant=13_bn': 133_053_736,
    'vgg_imagenet.py:variant=16': 138_357_544, 'vgg_imagenet.py:variant=16_bn': 138_365_992,
    'vgg_imagenet.py:variant=19': 143_667_240, 'vgg_imagenet.py:variant=19_bn': 143_678_248,
    'googlenet_imagenet.py': 6_624_904, 'googlenet_imagenet.py:aux': 13_004_888,
}


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_init(model, shape, **kw):
  return nn.meta.unbox(jax.eval_shape(lambda x: model.init(jax.random.key(0), x, **kw),
                                      jax.ShapeDtypeStruct(shape, jnp.float32)))


def _host_init(model, shape, **kw):
  """Variables of `model` drawn with numpy on the host: jit-compiling a network's random
  init costs far more on a CPU than the forward pass these tests need."""
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'var':
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    std = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 0.2
    return ((name == 'scale') + std * rng.normal(size=leaf.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, _abstract_init(model, shape, **kw))


@pytest.mark.parametrize('spec', sorted(TORCHVISION_COUNTS))
def test_imagenet_configs_have_torchvision_counts(spec):
  config = config_lib.load(f'{REPO}/configs/{spec}')
  assert _count(summary.param_shapes(config)['params']) == TORCHVISION_COUNTS[spec]


# ------------------------------------------------------------------------- shapes, limits

@pytest.mark.parametrize('module,sizes,too_small,match', [
    (alexnet, [(32, 32), (45, 38)], 14, 'AlexNet pool3'),
    (vgg, [(32, 32), (48, 40)], 31, 'VGG pool5'),
    (googlenet, [(32, 32), (57, 45)], 8, 'GoogLeNet maxpool3'),
])
def test_tiny_shapes_and_too_small_input(module, sizes, too_small, match):
  model = module.Model(**module.TINY, num_classes=7)
  for h, w in sizes:
    x = jnp.zeros((3, h, w, 1))
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], x)
    assert out.shape == (3, 7)
  with pytest.raises(ValueError, match=match):
    _abstract_init(model, (1, too_small, too_small, 1))


@pytest.mark.parametrize('model,smallest', [
    (alexnet.Model(), 63), (vgg.Model(**vgg.VARIANTS['11']), 32), (googlenet.Model(), 15)])
def test_published_models_accept_the_input_sizes_torchvision_does(model, smallest):
  """The smallest square input torchvision's model runs on (checked with torch 2.14)."""
  _abstract_init(model, (1, smallest, smallest, 3))
  with pytest.raises(ValueError, match='smaller than'):
    _abstract_init(model, (1, smallest - 1, smallest - 1, 3))


@pytest.mark.parametrize('module', [alexnet, vgg, googlenet])
def test_bf16_compute_fp32_params_and_logical_axes(module):
  model = module.Model(**module.TINY, dtype='bfloat16')
  x = jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32)
  logits, variables = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x), x)
  assert logits.dtype == jnp.bfloat16
  leaves = jax.tree.leaves(variables['params'],
                           is_leaf=lambda l: isinstance(l, nn.LogicallyPartitioned))
  assert all(isinstance(l, nn.LogicallyPartitioned) for l in leaves)
  assert {l.value.dtype for l in leaves} == {jnp.dtype('float32')}


# ------------------------------------------------------------------ adaptive average pool

def _adaptive_pool_loop(x, out_h, out_w):
  """PyTorch's AdaptiveAvgPool2d, written as the definition: a mean over each bin."""
  b, h, w, c = x.shape
  y = np.zeros((b, out_h, out_w, c), np.float64)
  for i in range(out_h):
    h0, h1 = int(np.floor(i * h / out_h)), int(np.ceil((i + 1) * h / out_h))
    for j in range(out_w):
      w0, w1 = int(np.floor(j * w / out_w)), int(np.ceil((j + 1) * w / out_w))
      y[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
  return y


@pytest.mark.parametrize('in_hw,out_hw', [((13, 13), (6, 6)), ((14, 14), (4, 4)),
                                          ((12, 10), (6, 5)), ((3, 5), (6, 7)), ((1, 1), (7, 7)),
                                          ((7, 9), (7, 7))])
def test_adaptive_avg_pool_matches_bins(in_hw, out_hw):
  x = np.random.default_rng(0).normal(size=(2, *in_hw, 3)).astype(np.float32)
  y = pool.adaptive_avg_pool(jnp.asarray(x), out_hw)
  np.testing.assert_allclose(y, _adaptive_pool_loop(x, *out_hw), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('model,size,features_hw,pooled_hw', [
    (alexnet.Model(**{**alexnet.TINY, 'pool_size': 6}), 112, 13, 6),   # overlapping 13 -> 6
    (vgg.Model(**{**vgg.TINY, 'pool_size': 7}), 320, 10, 7),           # overlapping 10 -> 7
    (vgg.Model(**{**vgg.TINY, 'pool_size': 7}), 64, 2, 7),             # repeats 2 -> 7
])
def test_models_pool_their_features_over_the_right_bins(model, size, features_hw, pooled_hw):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 1))
  variables = _host_init(model, x.shape)
  _, inter = jax.jit(lambda v, x: model.apply(v, x, mutable=['intermediates']))(variables, x)
  feats = np.asarray(inter['intermediates']['features'][0])
  pooled = np.asarray(inter['intermediates']['pooled'][0])
  assert feats.shape[1:3] == (features_hw, features_hw)
  assert pooled.shape[1:3] == (pooled_hw, pooled_hw)
  np.testing.assert_allclose(pooled, _adaptive_pool_loop(feats, pooled_hw, pooled_hw),
                             rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ VGG

# The paper's Table 1: conv widths of configurations A, B, D, E, in order.
VGG_TABLE = {'11': [64, 128, 256, 256, 512, 512, 512, 512],
             '13': [64, 64, 128, 128, 256, 256, 512, 512, 512, 512],
             '16': [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
             '19': [64, 64, 128, 128] + [256] * 4 + [512] * 8}


@pytest.mark.parametrize('variant', sorted(vgg.VARIANTS))
def test_vgg_conv_layers_and_one_batchnorm_per_conv(variant):
  depth, _, bn = variant.partition('_')
  variables = _abstract_init(vgg.Model(**vgg.VARIANTS[variant]), (1, 224, 224, 3))
  blocks = [k for k in variables['params'] if k.startswith('conv')]
  widths = [variables['params'][k]['conv']['kernel'].shape[-1] for k in blocks]
  assert widths == VGG_TABLE[depth]
  assert len(blocks) == {'11': 8, '13': 10, '16': 13, '19': 16}[depth]
  assert [k for k in variables['params'] if not k.startswith('conv')] == ['fc1', 'fc2', 'head']
  for k in blocks:
    assert set(variables['params'][k]) == ({'conv', 'norm'} if bn else {'conv'})
  assert set(variables.get('batch_stats', {})) == (set(blocks) if bn else set())


def test_vgg_bn_normalizes_each_conv_output_before_its_relu():
  """In training, each block is relu(BN(conv(x))) with BN over the batch, exactly once."""
  model = vgg.Model(**{**vgg.TINY, 'stages': vgg.STAGES['11']})
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 1))
  variables = _host_init(model, x.shape)
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, train=True, rngs={'dropout': jax.random.key(2)}, capture_intermediates=True,
      mutable=['batch_stats', 'intermediates']))(variables, x)
  inter = state['intermediates']
  blocks = [k for k in inter if k.startswith('conv')]
  assert len(blocks) == 8
  for k in blocks:
    assert set(inter[k]) == {'conv', 'norm', '__call__'}
    conv_out, = inter[k]['conv']['__call__']
    norm_out, = inter[k]['norm']['__call__']
    block_out, = inter[k]['__call__']
    mean, var = conv_out.mean(axis=(0, 1, 2)), conv_out.var(axis=(0, 1, 2))
    bn = variables['params'][k]['norm']
    want = (conv_out - mean) / jnp.sqrt(var + 1e-5) * bn['scale'] + bn['bias']
    np.testing.assert_allclose(norm_out, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(block_out, jax.nn.relu(norm_out), atol=1e-6)


# ------------------------------------------------------------------------------ GoogLeNet

# torchvision's inception table: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj), and
# each block's output channels (the next block's in_channels in torchvision).
INCEPTION_TABLE = {
    '3a': ((64, 96, 128, 16, 32, 32), 256), '3b': ((128, 128, 192, 32, 96, 64), 480),
    '4a': ((192, 96, 208, 16, 48, 64), 512), '4b': ((160, 112, 224, 24, 64, 64), 512),
    '4c': ((128, 128, 256, 24, 64, 64), 512), '4d': ((112, 144, 288, 32, 64, 64), 528),
    '4e': ((256, 160, 320, 32, 128, 128), 832), '5a': ((256, 160, 320, 32, 128, 128), 832),
    '5b': ((384, 192, 384, 48, 128, 128), 1024)}


def test_googlenet_blocks_have_torchvision_widths():
  model = googlenet.Model()
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = _abstract_init(model, x.shape)
  _, inter = jax.eval_shape(
      lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=['intermediates']),
      variables, x)
  branches = ('branch1', 'branch2_reduce', 'branch2', 'branch3_reduce', 'branch3',
              'branch4_proj')
  for name, (widths, out_channels) in INCEPTION_TABLE.items():
    block = variables['params'][f'inception{name}']
    assert tuple(block[b]['conv']['kernel'].shape[-1] for b in branches) == widths
    assert block['branch3']['conv']['kernel'].shape[:2] == (3, 3)  # torchvision's "5x5"
    out, = inter['intermediates'][f'inception{name}']['__call__']
    assert out.shape[-1] == out_channels == widths[0] + widths[2] + widths[4] + widths[5]
    assert out.shape[1] == {'3': 28, '4': 14, '5': 7}[name[0]]


def test_inception_concatenates_the_four_branches_of_one_input_in_order():
  widths = (3, 4, 5, 2, 6, 7)
  block = googlenet.Inception(*widths)
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 8))
  # Random weights and BatchNorm statistics, so a swapped branch cannot match by accident.
  variables = _host_init(block, x.shape, train=False)

  def conv(n, k, name, inp, v):
    sub = {c: v[c][name] for c in v}
    return ConvBN(n, (k, k), bn_epsilon=1e-3).apply(sub, inp, train=False)

  @jax.jit
  def block_and_branches(v, x):
    pool = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1),
                                 ((0, 0), (1, 1), (1, 1), (0, 0)))
    return block.apply(v, x, train=False), [
        conv(3, 1, 'branch1', x, v),
        conv(5, 3, 'branch2', conv(4, 1, 'branch2_reduce', x, v), v),
        conv(6, 3, 'branch3', conv(2, 1, 'branch3_reduce', x, v), v),
        conv(7, 1, 'branch4_proj', pool, v)]
  y, parts = block_and_branches(variables, x)
  assert y.shape == (2, 5, 6, 3 + 5 + 6 + 7)
  np.testing.assert_allclose(y, jnp.concatenate(parts, axis=-1), rtol=1e-5, atol=1e-5)


def _ceil_max_pool_loop(x, k, s):
  """PyTorch's MaxPool2d(k, s, ceil_mode=True) without padding, as the definition."""
  def size(n):
    out = -(-(n - k) // s) + 1
    return out - 1 if (out - 1) * s >= n else out
  b, h, w, c = x.shape
  y = np.zeros((b, size(h), size(w), c), x.dtype)
  for i in range(size(h)):
    for j in range(size(w)):
      y[:, i, j] = x[:, i * s:i * s + k, j * s:j * s + k].max(axis=(1, 2))
  return y


@pytest.mark.parametrize('hw,k,s', [((8, 8), 3, 2), ((7, 10), 3, 2), ((7, 7), 2, 2),
                                    ((2, 3), 3, 2)])
def test_ceil_mode_max_pool(hw, k, s):
  x = np.random.default_rng(0).normal(size=(2, *hw, 3)).astype(np.float32)
  np.testing.assert_array_equal(pool.max_pool_ceil(jnp.asarray(x), k, s),
                                _ceil_max_pool_loop(x, k, s))


def test_googlenet_aux_heads_train_only_and_sown():
  model = googlenet.Model(**googlenet.TINY, num_classes=5, aux_logits=True)
  shape = (2, 64, 64, 3)
  variables = _abstract_init(model, shape)
  assert {'aux1', 'aux2'} <= set(variables['params'])
  assert 'aux_logits' not in variables
  assert 'aux1' not in _abstract_init(googlenet.Model(**googlenet.TINY), shape)['params']
  x = jax.ShapeDtypeStruct(shape, jnp.float32)

  def run(train, mutable):
    return jax.eval_shape(lambda v, x: model.apply(
        v, x, train=train, rngs={'dropout': jax.random.key(2)}, mutable=mutable), variables, x)
  # What the classification task does: only 'batch_stats' mutable, main logits back.
  logits, state = run(True, ['batch_stats'])
  assert logits.shape == (2, 5) and set(state) == {'batch_stats'}
  _, state = run(True, ['batch_stats', 'aux_logits'])
  aux = state['aux_logits']
  assert set(aux) == {'aux1_logits', 'aux2_logits'}
  assert aux['aux1_logits'][0].shape == aux['aux2_logits'][0].shape == (2, 5)
  _, state = run(False, ['aux_logits'])
  assert not state  # no auxiliary heads at evaluation


# ------------------------------------------------------------------------------ training
# (each digits config's first 20 steps are checked bitwise by tests/test_loss_goldens.py)

def test_googlenet_aux_heads_train_through_the_classification_loss():
  """With aux_logits on, the loss is main + 0.3 * (aux1 + aux2) and the aux heads learn."""
  import os
  from train import config_lib, core
  from conftest import REPO
  c = config_lib.load(os.path.join(REPO, 'configs/googlenet_digits.py:tiny'))
  config_lib.override(c, 'task_kwargs.input_size', '(48, 48)')
  with c.unlocked():
    c.model.aux_logits = True
  task = core.load_task(c)
  batch = {'image': jnp.asarray(np.random.default_rng(0).integers(0, 255, (4, 8, 8, 1)), jnp.uint8),
           'label': jnp.arange(4) % 10}
  variables = jax.jit(task.init)(jax.random.key(0, impl='rbg'), batch)
  params = variables.pop('params')
  (loss, (m, _)), grads = jax.jit(jax.value_and_grad(
      lambda p: task.loss({'params': p, **variables}, batch, jax.random.key(1)), has_aux=True))(params)
  assert set(m) >= {'loss_aux1_logits', 'loss_aux2_logits', 'main_loss'}
  np.testing.assert_allclose(
      loss, m['main_loss'] + 0.3 * (m['loss_aux1_logits'] + m['loss_aux2_logits']), rtol=1e-6)
  for head in ('aux1', 'aux2'):
    g = [x for path, x in jax.tree_util.tree_flatten_with_path(grads)[0]
         if any(getattr(k, 'key', None) == head for k in path)]
    assert g and max(float(jnp.abs(x).max()) for x in g) > 0, head
