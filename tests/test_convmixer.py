"""ConvMixer (arch/vision/convmixer.py): the paper's parameter counts, one block against a
direct computation, the scanned stack against its blocks applied one by one, and the
config training a few steps with exact resume."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.vision import convmixer
from conftest import check_resumes_alike, train_spec


@pytest.mark.parametrize('variant, count', [('1536/20', 51_625_960), ('768/32', 21_110_248),
                                            ('1024/20', 24_383_464)])
def test_published_sizes_have_the_papers_parameter_counts(variant, count):
  # Trockman & Kolter 2022, Table 1: 51.6M, 21.1M, 24.4M at 1,000 classes
  model = convmixer.Model(**convmixer.VARIANTS[variant])
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  assert sum(int(np.prod(a.shape)) for a in
             jax.tree.leaves(nn.meta.unbox(shapes['params']))) == count
  stem = shapes['params']['stem_conv']['kernel']
  p, k = model.patch_size, model.kernel_size
  assert nn.meta.unbox(stem).shape == (p, p, 3, model.dim)
  assert nn.meta.unbox(shapes['params']['blocks']['depthwise']['kernel']).shape == \
      (model.depth, k, k, 1, model.dim)


def _bn(x, scale, bias):
  mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
  return (x - mean) / np.sqrt(var + 1e-5) * scale + bias


def test_a_block_is_depthwise_gelu_bn_residual_then_pointwise_gelu_bn():
  """Against numpy: the k x k depthwise conv with PyTorch 'same' padding (an even kernel
  pads one more row after than before), exact GELU, batch statistics in training."""
  from scipy.special import erf
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  block = convmixer.Mixer(dim=3, kernel_size=4)
  variables = block.init(jax.random.key(0), x, train=True)
  params = jax.tree.map(lambda a: np.asarray(a) + rng.normal(size=a.shape).astype(np.float32),
                        nn.meta.unbox(variables['params']))
  got, updates = block.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                             train=True, mutable=['batch_stats'])
  gelu = lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2)))
  w, b = params['depthwise']['kernel'][:, :, 0, :], params['depthwise']['bias']  # (k, k, C)
  padded = np.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0)))
  dw = np.zeros_like(x) + b
  for i in range(4):
    for j in range(4):
      dw += padded[:, i:i + 5, j:j + 6, :] * w[i, j]
  h = x + _bn(gelu(dw), params['norm1']['scale'], params['norm1']['bias'])
  pw = h @ params['pointwise']['kernel'][0, 0] + params['pointwise']['bias']
  want = _bn(gelu(pw), params['norm2']['scale'], params['norm2']['bias'])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # running mean: 0.9 * 0 + 0.1 * the batch mean
  np.testing.assert_allclose(updates['batch_stats']['norm2']['mean'],
                             0.1 * gelu(pw).mean((0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_the_scanned_stack_is_its_blocks_one_by_one():
  """The model's `blocks` (one scan over stacked params and statistics) equal the Mixers
  applied in order with each layer's slice, in training and in evaluation."""
  model = convmixer.Model(dim=4, depth=3, kernel_size=3, patch_size=2, num_classes=5)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  variables = nn.meta.unbox(model.init(jax.random.key(1), x))
  variables['batch_stats'] = jax.tree.map(  # running statistics that differ per layer
      lambda a: a + jax.random.uniform(jax.random.key(2), a.shape), variables['batch_stats'])
  from arch.layers.conv import batch_norm
  p, bs = variables['params'], variables['batch_stats']
  for train in (True, False):
    logits, updates = model.apply(variables, x, train=train, mutable=['batch_stats'])
    h = nn.Conv(4, (2, 2), strides=(2, 2), padding='VALID').apply(
        {'params': p['stem_conv']}, x)
    h, _ = batch_norm(train).apply({'params': p['stem_norm'], 'batch_stats': bs['stem_norm']},
                                   nn.gelu(h, approximate=False), mutable=['batch_stats'])
    stats = []
    for layer in range(3):
      vs = jax.tree.map(lambda a: a[layer], {'params': p['blocks'], 'batch_stats': bs['blocks']})
      h, new = convmixer.Mixer(dim=4, kernel_size=3).apply(vs, h, train=train,
                                                            mutable=['batch_stats'])
      stats.append(new['batch_stats'])
    want = nn.Dense(5).apply({'params': p['head']}, h.mean((1, 2)))
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    blocks = updates['batch_stats']['blocks']
    for layer in range(3):
      for norm in ('norm1', 'norm2'):
        np.testing.assert_allclose(blocks[norm]['var'][layer], stats[layer][norm]['var'],
                                   rtol=1e-5, atol=1e-6)
    if not train:  # evaluation leaves the statistics as they were
      np.testing.assert_array_equal(blocks['norm1']['mean'],
                                    variables['batch_stats']['blocks']['norm1']['mean'])


def _train(workdir, data_dir, **overrides):
  return train_spec('convmixer_digits.py:tiny', workdir, data_dir, total_steps=4,
                    log_every=1, ckpt_every=2, **{'eval_every': 4, **overrides})


def test_config_trains_and_resumes_exactly(tmp_path, data_dir):
  result = _train(tmp_path / 'straight', data_dir)
  assert 0 <= result['accuracy'] <= 1 and np.isfinite(result['loss'])
  # the step-2 checkpoint resumes to the same metrics and step-4 state, bit for bit
  check_resumes_alike('convmixer_digits.py:tiny',
                      lambda w, **kw: _train(w, data_dir, **kw), tmp_path, ('loss', 'accuracy'))
