"""CaiT and T2T-ViT: reference parameter counts, and properties that catch a wrong block:
class attention writes only the class token, talking heads mix heads, the soft split is
PyTorch's Unfold, the Performer layer's random features estimate softmax attention."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.layers.attention import Attention
from arch.vision import cait, t2t
from conftest import load_config as _config, read_metrics

# timm 1.0's cait_*_224 and the official T2T-ViT code: sum of trainable p.numel().
REFERENCE = {('cait', 'XXS24'): 11_956_264, ('cait', 'S24'): 46_916_200,
             ('t2t', '14'): 21_465_806, ('t2t', 't14'): 21_465_422}


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _init(model, x, seed=0):
  # An 'rbg' key: XLA-CPU compiles threefry initializers several times slower.
  return nn.meta.unbox(jax.jit(lambda x: model.init(jax.random.key(seed, impl='rbg'), x))(x))


@pytest.mark.parametrize('family,variant', sorted(REFERENCE))
def test_imagenet_config_has_the_reference_parameter_count(family, variant):
  from train import summary
  config = _config(f'{family}_imagenet.py:variant={variant}')
  assert tuple(config.task_kwargs.input_size) == (224, 224) and config.data.name == 'imagenet2012'
  variables = summary.param_shapes(config)
  n = _count(variables['params'])
  assert n == REFERENCE[family, variant]
  if family == 't2t':
    # The paper's table: 21.5M. The official sum(p.numel()) also counts its frozen tensors:
    # the (196 + 1) x 384 sinusoid table and, for the Performer, 2 x 32 x 64 random features.
    frozen = 197 * 384 + (_count(variables['constants']) if variant == '14' else 0)
    assert n + frozen == {'14': 21_545_550, 't14': 21_541_070}[variant]
    assert round(n / 1e6, 1) == round((n + frozen) / 1e6, 1) == 21.5
  else:
    assert set(variables) == {'params'}


# ------------------------------------------------------------------------------- CaiT


def test_talking_heads_mix_heads_and_identity_mixing_is_multi_head_attention():
  th = cait.TalkingHeadsAttention(num_heads=4)
  x = jax.random.normal(jax.random.key(0), (2, 7, 32))
  params = _init(th, x)['params']
  apply = jax.jit(lambda p, x: th.apply({'params': p}, x))
  eye = {'kernel': jnp.eye(4), 'bias': jnp.zeros(4)}
  plain = dict(params, mix_logits=eye, mix_weights=eye)
  mha = {k: v for k, v in params.items() if not k.startswith('mix_')}
  np.testing.assert_allclose(apply(plain, x), Attention(num_heads=4).apply({'params': mha}, x),
                             rtol=1e-5, atol=1e-5)

  # Mixed: the formula, in numpy (logits mixed, softmax over keys, weights mixed) ...
  rng = np.random.default_rng(0)
  mixed = dict(params, **{k: {'kernel': rng.normal(size=(4, 4)).astype(np.float32),
                              'bias': rng.normal(size=4).astype(np.float32)}
                          for k in ('mix_logits', 'mix_weights')})
  q, k, v = (np.einsum('btd,dne->btne', x, params[n]['kernel']) + params[n]['bias']
             for n in ('query', 'key', 'value'))
  logits = np.einsum('btne,bsne->btsn', q / np.sqrt(8), k) @ mixed['mix_logits']['kernel'] \
      + mixed['mix_logits']['bias']
  w = np.exp(logits - logits.max(2, keepdims=True))
  w = (w / w.sum(2, keepdims=True)) @ mixed['mix_weights']['kernel'] + mixed['mix_weights']['bias']
  out = np.einsum('btne,ned->btd', np.einsum('btsn,bsne->btne', w, v), params['out']['kernel'])
  np.testing.assert_allclose(apply(mixed, x), out + params['out']['bias'], rtol=1e-4, atol=1e-4)

  # ... and head 0's output reads every head's query, where plain attention reads only its own.
  @jax.jit
  def head0_grad(p):
    """|d(head 0's output) / d(query kernel)| summed per query head."""
    p = dict(p, out={'kernel': jnp.eye(32).reshape(4, 8, 32), 'bias': jnp.zeros(32)})
    head0 = lambda q: th.apply({'params': dict(p, query=dict(p['query'], kernel=q))},
                               x)[..., :8].sum()
    return jnp.abs(jax.grad(head0)(p['query']['kernel'])).sum(axis=(0, 2))
  assert (head0_grad(plain)[1:] == 0).all() and head0_grad(plain)[0] > 0
  assert (head0_grad(mixed) > 0).all()


def test_cait_class_stage_reads_patch_tokens_and_writes_only_the_class_token():
  model = cait.Model(**dict(cait.TINY, image_size=16, embed_dim=32, mlp_dim=64, depth=1,
                            num_heads=4, layer_scale_init=0.5), num_classes=5)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1))
  params = _init(model, x)['params']
  # (the zero-initialised head would hide the class path from the gradients below)
  params = dict(params, head=dict(params['head'], kernel=jnp.ones_like(params['head']['kernel'])))
  last = f'layers_{model.depth - 1}'

  def forward(p):
    """Logits, and the last self-attention block's output: the patch tokens."""
    logits, state = model.apply({'params': p}, x, capture_intermediates=True)
    return logits, state['intermediates'][last]['__call__'][0]

  @jax.jit
  def forward_and_grads(p):
    """forward(p), and the gradients of the patch tokens' sum and of the logits' sum."""
    out, pullback = jax.vjp(forward, p)
    ones, zeros = (jax.tree.map(f, out) for f in (jnp.ones_like, jnp.zeros_like))
    return out, pullback((zeros[0], ones[1]))[0], pullback((ones[0], zeros[1]))[0]

  (logits, x_BPD), g_patches, g_logits = forward_and_grads(params)
  # Recompose the class stage from those patch tokens: every class block reads the same
  # patch tokens (nothing writes them), and only the class token carries on.
  block = cait.ClassAttentionBlock(4, 64, layer_scale_init=0.5)
  run = jax.jit(lambda p, cls, x: block.apply({'params': p}, cls, x))
  cls = jnp.broadcast_to(params['cls_token'], (2, 1, 32))
  for i in range(model.class_depth):
    cls = run(params[f'class_layers_{i}'], cls, x_BPD)
  rep = nn.LayerNorm(1e-6).apply({'params': params['norm']}, cls[:, 0])
  np.testing.assert_allclose(rep @ params['head']['kernel'] + params['head']['bias'], logits,
                             rtol=1e-5, atol=1e-5)
  # Class attention pools: the order of the patch tokens does not matter.
  perm = jax.random.permutation(jax.random.key(3), x_BPD.shape[1])
  np.testing.assert_allclose(run(params['class_layers_0'], cls, x_BPD[:, perm]),
                             run(params['class_layers_0'], cls, x_BPD), rtol=1e-5, atol=1e-5)

  # Gradients: the patch path up to the class stage ignores the class token and the class
  # blocks; the logits depend on both.
  assert not np.any(g_patches['cls_token']) and not any(np.any(v) for v in jax.tree.leaves(
      {k: v for k, v in g_patches.items() if k.startswith('class_layers')}))
  assert np.any(g_patches['patch_embed']['proj']['kernel'])
  assert np.any(g_logits['cls_token'])
  assert np.any(g_logits['class_layers_0']['class_attn']['key']['kernel'])


def test_cait_variants_shapes_and_representation():
  for name, kw in cait.VARIANTS.items():
    out = jax.eval_shape(lambda x: cait.Model(**kw).init_with_output(jax.random.key(0), x)[0],
                         jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32))
    assert out.shape == (2, 1000) and out.dtype == jnp.float32, name
  model = cait.Model(**cait.TINY, num_classes=0)
  rep = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0],
                       jax.ShapeDtypeStruct((3, 32, 32, 1), jnp.float32))
  assert rep.shape == (3, 64)
  with pytest.raises(ValueError, match='position table holds 64'):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                   jax.ShapeDtypeStruct((1, 16, 16, 1), jnp.float32))


# ----------------------------------------------------------------------------- T2T-ViT


def _unfold(x_HWC, k, s, p):
  """PyTorch's nn.Unfold by its definition, in numpy: (H', W', C*k*k), channel-major."""
  h, w, c = x_HWC.shape
  xp = np.pad(x_HWC, ((p, p), (p, p), (0, 0)))
  oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
  out = np.zeros((oh, ow, c * k * k), np.float32)
  for i in range(oh):
    for j in range(ow):
      out[i, j] = xp[i * s:i * s + k, j * s:j * s + k].transpose(2, 0, 1).reshape(-1)
  return out


@pytest.mark.parametrize('k,s,p,size', [(7, 4, 2, (19, 13)), (3, 2, 1, (8, 9))])
def test_soft_split_is_unfold_and_a_token_sees_only_its_window(k, s, p, size):
  x = jax.random.normal(jax.random.key(0), (2, *size, 3))
  y = t2t.soft_split(x, k, s, p)
  np.testing.assert_array_equal(y[1], _unfold(np.asarray(x[1]), k, s, p))
  oh, ow = y.shape[1:3]
  pullback = jax.jit(lambda ct: jax.vjp(lambda x: t2t.soft_split(x, k, s, p), x)[1](ct)[0])
  for i, j in ((0, 0), (oh // 2, ow - 1), (oh - 1, ow // 2)):
    g = pullback(jnp.zeros_like(y).at[0, i, j].set(1.0))  # d(sum of token (i, j)) / dx
    window = np.zeros(size, bool)
    window[max(i * s - p, 0):i * s - p + k, max(j * s - p, 0):j * s - p + k] = True
    np.testing.assert_array_equal(np.asarray(g[0]) != 0, window[..., None].repeat(3, -1))
    assert not np.any(g[1])


@pytest.mark.parametrize('size', [(224, 224), (65, 33)])
def test_t2t_token_count_and_width_follow_the_unfold_formula(size):
  model = t2t.Model(**t2t.VARIANTS['14'])
  variables = nn.meta.unbox(jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, capture_intermediates=True),
      jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)))
  inter = variables['intermediates']
  params, t2t_inter = variables['params']['tokens_to_token'], inter['tokens_to_token']
  h, w, c = *size, 3
  for i, (k, s, p) in enumerate(t2t.SOFT_SPLITS):
    h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    width = c * k * k
    if i < len(t2t.SOFT_SPLITS) - 1:  # re-structurized: width F -> E on the same tokens
      assert params[f'layers_{i}']['attn_norm']['scale'].shape == (width,)
      assert t2t_inter[f'layers_{i}']['__call__'][0].shape == (2, h * w, model.token_dim)
      c = model.token_dim
    else:
      assert params['project']['kernel'].shape == (width, model.embed_dim)
      assert t2t_inter['project']['__call__'][0].shape == (2, h * w, model.embed_dim)
  assert (h, w) == ((14, 14) if size == (224, 224) else (4, 2))
  assert inter['__call__'][0].shape == (2, 1000)


def test_performer_random_features_estimate_softmax_attention():
  q, k, v = (0.3 * jax.random.normal(key, (2, 6, 8)) for key in jax.random.split(
      jax.random.key(0), 3))
  exact = jax.nn.softmax(jnp.einsum('bte,bse->bts', q, k), axis=-1) @ v
  w = jax.random.normal(jax.random.key(1), (100_000, 8))  # rows N(0, I): unbiased
  error = lambda m: np.abs(jax.jit(t2t.performer_attention)(q, k, v, w[:m]) - exact).max()
  assert error(100_000) < 0.02 and error(16) > 3 * error(100_000)

  # In the model the features are fixed orthogonal rows of norm sqrt(m), outside 'params'.
  layer = t2t.TokenLayer(16)
  x = jax.random.normal(jax.random.key(2), (2, 10, 12))
  init = jax.jit(lambda key: nn.meta.unbox(layer.init(key, x)))
  a, b = (init(jax.random.key(seed, impl='rbg')) for seed in (0, 1))
  assert set(a) == {'params', 'constants'} and 'random_features' not in a['params']
  f = a['constants']['random_features']
  np.testing.assert_allclose(f @ f.T, 8 * np.eye(8), atol=1e-4)
  assert not np.allclose(f, b['constants']['random_features'])
  g = jax.jit(jax.grad(lambda p: layer.apply({'params': p, 'constants': a['constants']},
                                             x).sum()))(a['params'])
  assert all(np.any(leaf) for leaf in jax.tree.leaves(g['key']))  # the attention is used


def test_t2t_representation_and_transformer_tokens():
  for kw, dim in ((dict(t2t.TINY), 64), (dict(t2t.VARIANTS['t14']), 384)):
    model = t2t.Model(**kw, num_classes=0)
    rep = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0],
                         jax.ShapeDtypeStruct((3, 64, 48, 1), jnp.float32))
    assert rep.shape == (3, dim) and rep.dtype == jnp.float32


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize('family,dtype', [('cait', 'bfloat16')])  # float32: the loss records
def test_digits_config_trains_through_the_loop(tmp_path, data_dir, family, dtype):
  from train import loop
  config = _config(f'{family}_digits.py:tiny', total_steps=2, eval_every=2, log_every=1,
                   ckpt_every=2, batch_size=8, compute_dtype=dtype, data__data_dir=data_dir)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert set(result) == {'loss', 'accuracy'} and 0 <= result['accuracy'] <= 1
  train = read_metrics(tmp_path)
  assert sorted(train) == [1, 2] and all(np.isfinite(r['loss']) for r in train.values())
  assert os.listdir(tmp_path / 'checkpoints') == ['2']
