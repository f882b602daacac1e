"""ResNet and DenseNet: torchvision's sizes, shapes, and properties that catch a wrong block."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.vision import densenet, resnet
from conftest import load_config as _config, read_metrics

# torchvision's parameter counts (weights=None models, sum of p.numel()).
TORCHVISION = {
    ('resnet', '18'): 11_689_512, ('resnet', '34'): 21_797_672, ('resnet', '50'): 25_557_032,
    ('resnet', '101'): 44_549_160, ('resnet', '152'): 60_192_808,
    ('densenet', '121'): 7_978_856, ('densenet', '161'): 28_681_000,
    ('densenet', '169'): 14_149_480, ('densenet', '201'): 20_013_928,
}


def _key(seed):
  """An 'rbg' PRNG key for model.init: with this JAX's default partitionable threefry,
  XLA-CPU compiles each parameter's initializer several times slower (measured 3x on
  these models), and that dominated these tests."""
  return jax.random.key(seed, impl='rbg')


def _shapes(model, size):
  """eval_shape of init with every module's output captured: no allocation."""
  x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, capture_intermediates=True), x)


def _out(inter, path):
  node = inter
  for key in path.split('/'):
    node = node[key]
  return node['__call__'][0]


@pytest.mark.parametrize('family,variant', sorted(TORCHVISION))
def test_imagenet_config_has_torchvisions_parameter_count(family, variant):
  from train import summary
  config = _config(f'{family}_imagenet.py:variant={variant}')
  assert tuple(config.task_kwargs.input_size) == (224, 224) and config.data.name == 'imagenet2012'
  params = summary.param_shapes(config)['params']
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == TORCHVISION[family, variant]


def _down(h, k, s, p):
  return (h + 2 * p - k) // s + 1


@pytest.mark.parametrize('variant,size', [('18', (97, 130)), ('50', (224, 224)),
                                          ('50', (65, 33))])
def test_resnet_stage_strides_and_widths(variant, size):
  """Stem /4, stages at /4 /8 /16 /32 with widths x expansion; Bottleneck strides its 3x3."""
  model = resnet.Model(**resnet.VARIANTS[variant])
  inter = _shapes(model, size)['intermediates']
  expansion = resnet.BLOCKS[model.block].expansion
  h, w = (_down(_down(d, 7, 2, 3), 3, 2, 1) for d in size)   # torchvision's stem arithmetic
  for i, (n, width) in enumerate(zip(model.stage_sizes, model.widths)):
    if i:
      h, w = _down(h, 3, 2, 1), _down(w, 3, 2, 1)
    for j in range(n):
      assert _out(inter, f'layer{i + 1}_{j}').shape == (2, h, w, width * expansion)
  if model.block == 'bottleneck':  # v1.5: conv1 keeps the resolution, conv2 halves it
    h_in = _out(inter, f'layer1_{model.stage_sizes[0] - 1}').shape[1]
    assert _out(inter, 'layer2_0/conv1').shape[1] == h_in
    assert _out(inter, 'layer2_0/conv2').shape[1] == _down(h_in, 3, 2, 1)


def _torch_max_pool(x):
  """3x3/2 max pool padded by 1 with -inf (PyTorch's), in numpy."""
  x = np.asarray(x)
  n, h, w, c = x.shape
  oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  return np.max([p[:, dy:dy + 2 * oh - 1:2, dx:dx + 2 * ow - 1:2]
                 for dy in range(3) for dx in range(3)], axis=0)


@pytest.mark.parametrize('block', ['basic', 'bottleneck'])
def test_resnet_zero_init_residual_blocks_are_relu_of_shortcut(block):
  """With zero_init_residual every block returns relu(shortcut(x)) at init: relu(x) for an
  identity shortcut, relu(BN(strided 1x1 conv x)) for a projection, both recomputed here
  from the block's input (the first one's is the stem's output through PyTorch's padded
  max pool). With those BN scales set to one, each block is relu(branch + shortcut)."""
  model = resnet.Model(**dict(resnet.TINY, block=block, stage_sizes=(2, 1), widths=(8, 16),
                              stem_features=8, small_input=False),
                       zero_init_residual=True, num_classes=3)
  x = jax.random.normal(jax.random.key(0), (2, 32, 30, 3))
  variables = nn.meta.unbox(jax.jit(lambda x: model.init(_key(1), x))(x))
  params, stats = variables['params'], variables['batch_stats']
  last = 'conv2' if block == 'basic' else 'conv3'
  names = [f'layer{i + 1}_{j}' for i, n in enumerate(model.stage_sizes) for j in range(n)]
  for name in names:
    np.testing.assert_array_equal(params[name][last]['norm']['scale'], 0.0)
  ones = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.ones_like(v)
      if f"'{last}']['norm']['scale']" in jax.tree_util.keystr(path) else v, variables)
  run = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True,
                                         mutable=['intermediates'])[1]['intermediates'])
  for zero_init, v in ((True, variables), (False, ones)):
    inter = run(v, x)
    h = _torch_max_pool(_out(inter, 'stem'))
    kinds = set()
    for name in names:
      out = np.asarray(_out(inter, name))
      projected = 'downsample' in params[name]
      kinds.add(projected)
      if projected:
        stride = 2 if name.endswith('_0') and not name.startswith('layer1') else 1
        p, bn = params[name]['downsample']['conv'], params[name]['downsample']['norm']
        mean, var = (stats[name]['downsample']['norm'][k] for k in ('mean', 'var'))
        z = np.einsum('bhwc,cd->bhwd', h[:, ::stride, ::stride], p['kernel'][0, 0])
        shortcut = (z - mean) / np.sqrt(var + 1e-5) * bn['scale'] + bn['bias']
      else:
        shortcut = h
      branch = np.asarray(_out(inter, f'{name}/{last}'))  # the residual branch's last BN
      np.testing.assert_allclose(out, np.maximum(branch + shortcut, 0), rtol=1e-5, atol=1e-5,
                                 err_msg=name)
      if zero_init:
        np.testing.assert_array_equal(branch, 0.0, err_msg=name)
      else:
        assert (branch < -1e-3).any() and (branch > 1e-3).any(), name  # no activation on it
      h = out
    assert kinds == {True, False}  # both shortcut kinds were exercised


@pytest.mark.parametrize('variant,size', [('121', (224, 224)), ('161', (61, 99))])
def test_densenet_channels_grow_by_growth_rate_and_transitions_halve(variant, size):
  model = densenet.Model(**densenet.VARIANTS[variant])
  inter = _shapes(model, size)['intermediates']
  h, w = (_down(_down(d, 7, 2, 3), 3, 2, 1) for d in size)
  c = model.num_init_features
  for i, n in enumerate(model.block_config):
    c += n * model.growth_rate
    assert _out(inter, f'denseblock{i + 1}').shape == (2, h, w, c)
    if i < len(model.block_config) - 1:
      c, h, w = c // 2, h // 2, w // 2
      assert _out(inter, f'transition{i + 1}').shape == (2, h, w, c)


def test_dense_block_appends_new_features_after_the_old_ones_unchanged():
  """Block output = [x, f1(x), f2([x, f1]), ...]: old channels pass through exactly, and
  layer k reads exactly the first C + (k - 1) * growth channels."""
  block = densenet.DenseBlock(num_layers=3, growth_rate=5, bn_size=2)
  x = jax.random.normal(jax.random.key(0), (2, 6, 7, 4))
  variables = jax.jit(lambda x: block.init(_key(1), x, train=False))(x)
  # Non-trivial BN statistics so a mis-wired layer cannot hide behind identity BNs.
  variables = dict(variables, batch_stats=jax.tree.map(
      lambda s: s + jax.random.uniform(jax.random.key(2), s.shape), variables['batch_stats']))
  out, state = jax.jit(lambda v, x: block.apply(v, x, train=False, capture_intermediates=True,
                                                mutable=['intermediates']))(variables, x)
  assert out.shape == (2, 6, 7, 4 + 3 * 5)
  np.testing.assert_array_equal(out[..., :4], x)
  for k in range(3):
    name = f'denselayer{k + 1}'
    new = _out(state['intermediates'], name)
    np.testing.assert_array_equal(out[..., 4 + 5 * k:4 + 5 * (k + 1)], new)
    layer = densenet.DenseLayer(growth_rate=5, bn_size=2)
    sub = {c: v[name] for c, v in variables.items()}
    again = jax.jit(lambda v, x: layer.apply(v, x, train=False))(sub, out[..., :4 + 5 * k])
    np.testing.assert_allclose(again, new, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('module', [resnet, densenet])
@pytest.mark.parametrize('small_input', [True, False])
def test_tiny_forward_shapes_at_two_sizes(module, small_input):
  model = module.Model(**dict(module.TINY, small_input=small_input), num_classes=7)

  def forward(x):
    variables = model.init(jax.random.key(1), x)
    logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    return model.apply(variables, x), logits, variables, updates

  for size in ((32, 32), (45, 38)):
    out, logits, variables, updates = jax.eval_shape(
        forward, jax.ShapeDtypeStruct((3, *size, 1), jnp.float32))
    assert out.shape == logits.shape == (3, 7)
    assert jax.tree.structure(updates['batch_stats']) == \
        jax.tree.structure(variables['batch_stats'])


def test_too_small_inputs_raise_clear_errors():
  init = lambda model, size: jax.eval_shape(
      lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, *size, 3)))[0])
  d121 = densenet.Model(**densenet.VARIANTS['121'])
  init(d121, (29, 29))  # torchvision's densenet121 also takes 29x29 and fails at 28x28
  with pytest.raises(ValueError, match=r'transition3 .*1x1, smaller than 2x2'):
    init(d121, (28, 28))
  with pytest.raises(ValueError, match=r'transition1 .*1x1, smaller than 2x2'):
    init(densenet.Model(**densenet.TINY), (1, 1))
  # Every ResNet conv is padded (as torchvision's): any H, W >= 1 works, 0 does not.
  assert init(resnet.Model(**resnet.VARIANTS['18']), (1, 1)).shape == (1, 1000)
  with pytest.raises(ValueError, match='ResNet input: the feature map is 0x8'):
    init(resnet.Model(**resnet.TINY), (0, 8))


@pytest.mark.parametrize('module,small', [
    (resnet, dict(stage_sizes=(1, 1), widths=(4, 8))),           # stem, conv1/2, downsample
    (densenet, dict(block_config=(1, 1), growth_rate=4))])       # norm1/2, transition, norm5
def test_batch_norm_statistics_follow_axis_name(module, small):
  """Under a named batch axis (pmap's), every BatchNorm averages over all shards: two
  shards of 4 give the same outputs and running statistics as one batch of 8."""
  model = module.Model(**dict(module.TINY, **small), num_classes=5)
  x = jax.random.normal(jax.random.key(0), (8, 16, 16, 1))
  variables = jax.jit(lambda x: model.init(_key(1), x))(x)
  whole, upd = jax.jit(lambda x: model.apply(variables, x, train=True, mutable=['batch_stats']))(x)
  sharded = model.clone(axis_name='data')
  fn = lambda xs: sharded.apply(variables, xs, train=True, mutable=['batch_stats'])
  parts, upd2 = jax.jit(jax.vmap(fn, axis_name='data'))(x.reshape(2, 4, 16, 16, 1))
  np.testing.assert_allclose(parts.reshape(8, 5), whole, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(upd), jax.tree.leaves(upd2)):
    np.testing.assert_allclose(b[0], a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b[1], a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('family,dtype', [('resnet', 'bfloat16')])  # float32: the loss records
def test_digits_config_trains_through_the_loop(tmp_path, data_dir, family, dtype):
  from train import loop
  config = _config(f'{family}_digits.py:tiny', total_steps=2, eval_every=2, log_every=1,
                   ckpt_every=2, batch_size=8, compute_dtype=dtype, data__data_dir=data_dir)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {'loss', 'accuracy'} and 0 <= result['accuracy'] <= 1
  train = read_metrics(tmp_path)
  assert sorted(train) == [1, 2] and all(np.isfinite(r['loss']) for r in train.values())
  assert os.listdir(tmp_path / 'checkpoints') == ['2']
