"""The shared attention layers: MHA/GQA/MQA against a reference, masks, RoPE, KV cache."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.layers import attention as attn
from arch.layers import embed
from arch.sequence import gpt

KEY = jax.random.key(0, impl='rbg')


def reference_attention(q, k, v, mask=None, bias=None, scale=None):
  """Plain numpy softmax attention with key/value heads repeated for GQA."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  n, kh = q.shape[2], k.shape[2]
  k, v = np.repeat(k, n // kh, axis=2), np.repeat(v, n // kh, axis=2)
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  logits = np.einsum('btnh,bsnh->bnts', q, k) * scale
  if bias is not None:
    logits = logits + np.asarray(bias)
  if mask is not None:
    logits = np.where(np.asarray(mask), logits, -1e30)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum('bnts,bsnh->btnh', w, v)


@pytest.mark.parametrize('kv_heads', [4, 2, 1])  # MHA, GQA, MQA
def test_dot_product_attention_matches_reference(kv_heads):
  ks = jax.random.split(jax.random.key(1), 4)
  q = jax.random.normal(ks[0], (2, 5, 4, 8))
  k = jax.random.normal(ks[1], (2, 7, kv_heads, 8))
  v = jax.random.normal(ks[2], (2, 7, kv_heads, 8))
  mask = jax.random.bernoulli(ks[3], 0.7, (2, 1, 5, 7)).at[..., 0].set(True)
  bias = jax.random.normal(ks[3], (1, 4, 5, 7))
  want = reference_attention(q, k, v, mask, bias)
  got = attn.dot_product_attention(q, k, v, mask=mask, bias=bias)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # The explicit-softmax (dropout) path, with a dropout rate too small to drop anything.
  got = attn.dot_product_attention(q, k, v, mask=mask, bias=bias, dropout_rate=1e-12,
                                   dropout_rng=jax.random.key(2))
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_gqa_layer_equals_mha_with_shared_kv_heads():
  """A GQA layer is an MHA layer whose key/value heads are repeated per group."""
  x = jax.random.normal(jax.random.key(3), (2, 6, 32))
  gqa = attn.Attention(num_heads=4, num_kv_heads=2)
  v = nn.meta.unbox(gqa.init(KEY, x))
  p = v['params']
  mha_params = dict(p)
  for name in ('key', 'value'):
    mha_params[name] = {'kernel': jnp.repeat(p[name]['kernel'], 2, axis=1),
                        'bias': jnp.repeat(p[name]['bias'], 2, axis=0)}
  mha = attn.Attention(num_heads=4)
  np.testing.assert_allclose(gqa.apply(v, x, causal=True),
                             mha.apply({'params': mha_params}, x, causal=True), atol=1e-5)
  assert p['key']['kernel'].shape == (32, 2, 8)  # K heads of width 8, not N


def test_rope_depends_only_on_relative_position():
  ks = jax.random.split(jax.random.key(4), 2)
  q = jax.random.normal(ks[0], (1, 1, 1, 16))
  k = jax.random.normal(ks[1], (1, 1, 1, 16))
  def score(m, n):
    rq = attn.apply_rope(q, jnp.array([[m]]))
    rk = attn.apply_rope(k, jnp.array([[n]]))
    return float(jnp.sum(rq * rk))
  assert score(7, 3) == pytest.approx(score(107, 103), abs=1e-4)
  assert score(7, 3) == pytest.approx(score(4, 0), abs=1e-4)
  assert score(7, 3) != pytest.approx(score(3, 7), abs=1e-3)
  # A rotation: norms kept, position 0 the identity; linear scaling divides positions.
  r = attn.apply_rope(q, jnp.array([[5]]))
  assert float(jnp.linalg.norm(r)) == pytest.approx(float(jnp.linalg.norm(q)), rel=1e-5)
  np.testing.assert_allclose(attn.apply_rope(q, jnp.array([[0]])), q, atol=1e-6)
  np.testing.assert_allclose(attn.apply_rope(q, jnp.array([[10]]), scale=2.0),
                             attn.apply_rope(q, jnp.array([[5]])), atol=1e-6)


def test_key_padding_does_not_change_real_positions():
  """Keys masked as padding: whatever they hold, real queries' outputs are the same."""
  layer = attn.Attention(num_heads=2)
  x = jax.random.normal(jax.random.key(5), (1, 6, 16))
  valid = jnp.array([[True] * 4 + [False] * 2])
  v = layer.init(KEY, x)
  mask = attn.padding_mask(valid, valid)
  y1 = layer.apply(v, x, mask=mask)
  y2 = layer.apply(v, x.at[:, 4:].set(100.0), mask=mask)
  np.testing.assert_allclose(y1[:, :4], y2[:, :4], atol=1e-5)


def test_t5_buckets_by_hand():
  rel = jnp.array([[[-200, -20, -3, 0, 3, 20, 200]]])
  # Bidirectional, 32 buckets: 16 per sign; exact below 8, log-spaced to 128.
  got = attn.relative_position_bucket(rel, True, 32, 128)[0, 0].tolist()
  import math
  def big(d, exact=8, n=16):
    return min(exact + int(math.log(d / exact) / math.log(128 / exact) * (n - exact)), n - 1)
  assert got == [big(200), big(20), 3, 0, 16 + 3, 16 + big(20), 16 + big(200)]
  got = attn.relative_position_bucket(rel, False, 32, 128)[0, 0].tolist()
  def big1(d):
    return min(16 + int(math.log(d / 16) / math.log(128 / 16) * 16), 31)
  assert got == [big1(200), big1(20), 3, 0, 0, 0, 0]


def test_sinusoids():
  t = embed.sinusoids(50, 8)
  for pos, i in [(0, 0), (7, 1), (49, 3)]:
    rate = 10000 ** (-2 * i / 8)
    assert t[pos, 2 * i] == pytest.approx(np.sin(pos * rate), abs=1e-6)
    assert t[pos, 2 * i + 1] == pytest.approx(np.cos(pos * rate), abs=1e-6)


@pytest.mark.parametrize('positions,kv_heads', [('learned', None), ('rope', 2), ('rope', 1)])
def test_gpt_kv_cache_equals_full_forward(positions, kv_heads):
  m = gpt.Model(vocab_size=50, num_layers=2, num_heads=4, embed_dim=32, max_length=32,
                positions=positions, num_kv_heads=kv_heads)
  toks = jax.random.randint(jax.random.key(6), (2, 11), 0, 50)
  v = m.init(KEY, toks)
  full = m.apply(v, toks)
  cache = m.init(KEY, jnp.zeros((2, 16), jnp.int32), decode=True)['cache']
  outs = []
  for a, b in [(0, 4), (4, 5), (5, 6), (6, 9), (9, 10), (10, 11)]:  # prompt, tokens, chunk
    out, mut = m.apply({**v, 'cache': cache}, toks[:, a:b], decode=True, mutable=['cache'])
    outs.append(out)
    cache = mut['cache']
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=1e-5)


def test_gpt_is_causal_through_gradients():
  """d logits[t] / d (position embedding of t') is zero exactly when t' > t; and changing
  a future token changes no earlier logit."""
  m = gpt.Model(vocab_size=30, num_layers=2, num_heads=2, embed_dim=16, max_length=8)
  toks = jax.random.randint(jax.random.key(7), (1, 8), 0, 30)
  params = nn.meta.unbox(m.init(KEY, toks))['params']

  def out_t(wpe, t):
    p = {**params, 'wpe': {'embedding': wpe}}
    return m.apply({'params': p}, toks)[0, t].sum()

  for t in (0, 3, 7):
    g = jax.grad(out_t)(params['wpe']['embedding'], t)
    norms = jnp.abs(g).sum(-1)
    assert float(norms[t + 1:].sum()) == 0.0
    assert float(norms[:t + 1].min()) > 0.0
  full = m.apply({'params': params}, toks)
  changed = m.apply({'params': params}, toks.at[0, 5].set((toks[0, 5] + 1) % 30))
  np.testing.assert_array_equal(full[:, :5], changed[:, :5])
  assert not np.allclose(full[:, 5:], changed[:, 5:])
