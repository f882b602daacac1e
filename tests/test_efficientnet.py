"""EfficientNet B0-B7: torchvision's parameter counts, compound scaling, MBConv wiring
(squeeze-excitation, stochastic depth). The digits config's first 20 training steps are
checked bitwise by tests/test_loss_goldens.py."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.layers.conv import ConvBN
from arch.vision import efficientnet as effnet
from conftest import REPO
from train import config_lib


# torchvision 0.29 efficientnet_b0..b7 (weights=None): parameter counts, stem width, stage
# output widths, blocks per stage, head width.
TORCHVISION = {
    'b0': (5_288_548, 32, (16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1), 1280),
    'b1': (7_794_184, 32, (16, 24, 40, 80, 112, 192, 320), (2, 3, 3, 4, 4, 5, 2), 1280),
    'b2': (9_109_994, 32, (16, 24, 48, 88, 120, 208, 352), (2, 3, 3, 4, 4, 5, 2), 1408),
    'b3': (12_233_232, 40, (24, 32, 48, 96, 136, 232, 384), (2, 3, 3, 5, 5, 6, 2), 1536),
    'b4': (19_341_616, 48, (24, 32, 56, 112, 160, 272, 448), (2, 4, 4, 6, 6, 8, 2), 1792),
    'b5': (30_389_784, 48, (24, 40, 64, 128, 176, 304, 512), (3, 5, 5, 7, 7, 9, 3), 2048),
    'b6': (43_040_704, 56, (32, 40, 72, 144, 200, 344, 576), (3, 6, 6, 8, 8, 11, 3), 2304),
    'b7': (66_347_960, 64, (32, 48, 80, 160, 224, 384, 640), (4, 7, 7, 10, 10, 13, 4), 2560),
}


def n_params(variables):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(variables['params'])))


@pytest.mark.parametrize('variant', sorted(effnet.VARIANTS))
def test_parameter_count_is_torchvisions(variant):
  model = effnet.Model(**effnet.VARIANTS[variant])
  # Parameter shapes do not depend on the input size; 32x32 keeps the trace cheap.
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert n_params(variables) == TORCHVISION[variant][0]


@pytest.mark.parametrize('variant', sorted(effnet.VARIANTS))
def test_compound_scaling_reproduces_torchvisions_stages(variant):
  _, stem, widths, depths, head = TORCHVISION[variant]
  kw = effnet.VARIANTS[variant]
  settings = effnet.block_settings(effnet.B0_STAGES, kw['width_mult'], kw['depth_mult'], 0.2)
  assert settings[0][0]['in_channels'] == stem
  assert tuple(s[-1]['out_channels'] for s in settings) == widths
  assert tuple(len(s) for s in settings) == depths
  assert 4 * widths[-1] == head
  for stage, (expand, kernel, stride, *_), prev in zip(settings, effnet.B0_STAGES,
                                                       (stem,) + widths):
    rest = len(stage) - 1
    assert [b['in_channels'] for b in stage] == [prev] + [stage[0]['out_channels']] * rest
    assert [b['stride'] for b in stage] == [stride] + [1] * rest
    assert all(b['kernel'] == kernel for b in stage)
    assert all(b['expanded'] == effnet.make_divisible(b['in_channels'] * expand) for b in stage)


def test_rounding_rules_on_known_values():
  # make_divisible: nearest multiple of 8, at least 8, never 10% below the value.
  assert [effnet.make_divisible(v) for v in (32 * 1.1, 40 * 1.1, 80 * 1.1, 112 * 1.4, 12, 4,
                                             10, 35.2, 36)] == [32, 48, 88, 160, 16, 8, 16, 32, 40]
  # ceil, not round: 1 * 1.1 -> 2, 3 * 1.4 -> 5, 4 * 3.1 -> 13 (float 12.4), 3 * 1.0 -> 3.
  assert [effnet.scale_depth(n, d) for n, d in ((1, 1.1), (3, 1.4), (4, 3.1), (3, 1.0),
                                                (2, 2.2))] == [2, 5, 13, 3, 5]


def test_built_network_matches_block_settings():
  """The variables the model creates follow `block_settings`, including the SE bottleneck
  of a quarter of the BLOCK INPUT (not of the expanded width) and no expand conv at ratio 1."""
  kw = effnet.VARIANTS['b2']
  params = nn.meta.unbox(jax.eval_shape(effnet.Model(**kw).init, jax.random.key(0),
                                        jnp.zeros((1, 32, 32, 3)))['params'])
  settings = effnet.block_settings(effnet.B0_STAGES, kw['width_mult'], kw['depth_mult'], 0.2)
  for s, stage in enumerate(settings):
    for b, cfg in enumerate(stage):
      p = params[f'stage{s + 1}_block{b}']
      assert ('expand' in p) == (cfg['expanded'] != cfg['in_channels'])
      k, e = cfg['kernel'], cfg['expanded']
      assert p['depthwise']['conv']['kernel'].shape == (k, k, 1, e)
      assert p['se']['reduce']['kernel'].shape == (1, 1, e, max(1, cfg['in_channels'] // 4))
      assert p['project']['conv']['kernel'].shape == (1, 1, e, cfg['out_channels'])
  assert 'stage8_block0' not in params


def test_drop_path_rates_increase_linearly():
  """The blocks the model builds get torchvision's schedule 0.2 * i / 16 (B0, i = 0..15)."""
  rates = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, effnet.MBConv) and context.method_name == '__call__':
      rates.append(context.module.drop_rate)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(effnet.Model(**effnet.VARIANTS['b0']).init, jax.random.key(0),
                   jnp.zeros((1, 32, 32, 3)))
  np.testing.assert_allclose(rates, 0.2 * np.arange(16) / 16)


@pytest.mark.parametrize('size', [32, 45])
def test_tiny_forward_shapes(size):
  model = effnet.Model(**effnet.TINY, num_classes=7)
  x = jax.ShapeDtypeStruct((2, size, size + 8, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert set(variables) == {'params', 'batch_stats'}
  y, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)},
                               mutable=['batch_stats']), variables, x)
  assert y.shape == (2, 7) and set(state) == {'batch_stats'}
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 7)


def test_rejects_bad_inputs():
  model = effnet.Model(**effnet.TINY)
  init = lambda shape: jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
  with pytest.raises(ValueError, match='EfficientNet input: the feature map is 0x8'):
    init((1, 0, 8, 3))
  with pytest.raises(ValueError, match=r'\(batch, H, W, C\)'):
    init((8, 8, 3))
  # every conv is padded, so the smallest image runs
  assert init((1, 1, 1, 3))['params']['head']['kernel'].value.shape == (320, 1000)


def _random_variables(module, x, seed=0):
  """`module`'s variables filled from numpy (compiling flax's initialisers is slow on CPU),
  with non-trivial BatchNorm running statistics so that a skipped BatchNorm would show."""
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False)))
  rng = np.random.default_rng(seed)
  fill = lambda low, high: lambda s: jnp.asarray(rng.uniform(low, high, s.shape), s.dtype)
  return {'params': jax.tree.map(fill(-0.8, 0.8), shapes['params']),
          'batch_stats': jax.tree.map(fill(0.5, 1.5), shapes['batch_stats'])}


def test_zeroed_se_gates_every_channel_by_one_half():
  """With zero SE weights the gate is sigmoid(0) = 0.5 exactly: the block equals
  x + project(0.5 * depthwise(expand(x))), computed here from its own sub-layers."""
  block = effnet.MBConv(8, 16, kernel=3)
  x = jax.random.normal(jax.random.key(0), (4, 6, 6, 8))
  variables = _random_variables(block, x)
  params, stats = dict(variables['params']), variables['batch_stats']
  params['se'] = jax.tree.map(jnp.zeros_like, params['se'])

  def sub(name, module, h):
    return module.apply({'params': params[name], 'batch_stats': stats[name]}, h, train=False)

  h = sub('expand', ConvBN(16, (1, 1), act=nn.silu), x)
  h = sub('depthwise', ConvBN(16, (3, 3), groups=16, act=nn.silu), h)
  want = x + sub('project', ConvBN(8, (1, 1), act=None), 0.5 * h)
  got = block.apply({'params': params, 'batch_stats': stats}, x, train=False)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # and the gate is live: the random SE weights give another output
  other = block.apply(variables, x, train=False)
  assert np.abs(np.asarray(other - got)).max() > 1e-2


def test_stochastic_depth_drops_whole_examples_and_rescales_survivors():
  rate, n = 0.3, 512
  x = jax.random.normal(jax.random.key(0), (n, 3, 3, 8))
  block = effnet.MBConv(8, 16, kernel=3, drop_rate=rate)
  variables = _random_variables(block, x)

  def run(module, seed, train, variables=variables):
    out = module.apply(variables, x, train=train, rngs={'dropout': jax.random.key(seed)},
                       mutable=['batch_stats'])[0]
    return np.asarray(out)

  # Eval: deterministic, whatever the rng.
  np.testing.assert_array_equal(run(block, 2, False), run(block, 3, False))
  # Train: the branch without dropping (batch statistics; no rng dependence)...
  branch = run(effnet.MBConv(8, 16, kernel=3, drop_rate=0.0), 2, True) - np.asarray(x)
  assert np.abs(branch).max(axis=(1, 2, 3)).min() > 1e-3
  # ...is, per example, either dropped entirely or kept and scaled by 1 / (1 - rate), so
  # its expectation over the masks is the undropped branch.
  delta = run(block, 4, True) - np.asarray(x)
  kept = np.all(np.isclose(delta, branch / (1 - rate), rtol=1e-4, atol=1e-5), axis=(1, 2, 3))
  dropped = np.all(delta == 0, axis=(1, 2, 3))
  assert np.all(kept ^ dropped)
  assert abs(dropped.mean() - rate) < 0.07   # binomial(512, 0.3): sd 0.02
  # Another rng draws another mask.
  assert not np.array_equal(run(block, 5, True), run(block, 4, True))
  # A block that changes shape has no shortcut, so nothing to drop.
  strided = effnet.MBConv(8, 16, kernel=3, stride=2, drop_rate=0.9)
  sv = _random_variables(strided, x)
  np.testing.assert_array_equal(run(strided, 5, True, sv), run(strided, 6, True, sv))


def test_bf16_compute_keeps_fp32_params():
  model = effnet.Model(**effnet.TINY, dtype='bfloat16')
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert {v.dtype for v in jax.tree.leaves(nn.meta.unbox(variables))} == {jnp.dtype('float32')}
  assert jax.eval_shape(model.apply, variables, x).dtype == jnp.bfloat16


def test_b5_to_b7_use_torchvisions_batchnorm_constants():
  for v in ('b5', 'b6', 'b7'):
    assert (effnet.VARIANTS[v]['bn_epsilon'], effnet.VARIANTS[v]['bn_momentum']) == (1e-3, 0.99)
  for v in ('b0', 'b1', 'b2', 'b3', 'b4'):
    m = effnet.Model(**effnet.VARIANTS[v])
    assert (m.bn_epsilon, m.bn_momentum) == (1e-5, 0.9)


def test_imagenet_config_resolutions():
  for v, size in zip(sorted(effnet.VARIANTS), (224, 240, 260, 300, 380, 456, 528, 600)):
    c = config_lib.load(os.path.join(REPO, f'configs/efficientnet_imagenet.py:variant={v}'))
    assert tuple(c.task_kwargs.input_size) == (size, size)
    assert c.model.width_mult == effnet.VARIANTS[v]['width_mult']

