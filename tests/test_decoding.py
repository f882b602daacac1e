"""Decoding: greedy, sampling filters, and beam search against exhaustive search."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.sequence import decoding

V, EOS = 5, 2


def table_model(seed=0, vocab=V, order=2):
  """A fixed random 'model': next-token logits depend on the last token only. The cache
  is the last token itself, so beams and rows can be gathered like a real cache."""
  logits = jax.random.normal(jax.random.key(seed), (vocab, vocab)) * 2.0

  def step(tokens_B1, cache):
    last = tokens_B1[:, -1]
    return logits[last], {'last': last}

  return logits, step


def seq_logprob(logits, first_logits, seq):
  lp = jax.nn.log_softmax(first_logits)[seq[0]]
  for a, b in zip(seq[:-1], seq[1:]):
    lp += jax.nn.log_softmax(logits[a])[b]
  return float(lp)


def test_beam_of_one_is_greedy():
  logits, step = table_model(1)
  first = logits[jnp.array([0, 3, 4])]
  cache = {'last': jnp.array([0, 3, 4])}
  greedy = decoding.generate(step, cache, first, jax.random.key(0), 6, eos_id=EOS,
                             temperature=0.0)
  beam, _ = decoding.beam_search(step, cache, first, 1, 6, eos_id=EOS)
  np.testing.assert_array_equal(beam, greedy)


def test_wide_beam_finds_the_exhaustive_best():
  """With beams >= V^N, beam search keeps every prefix and every extension, so it must
  return the most probable sequence of length <= N that ends in EOS."""
  n = 3
  logits, step = table_model(2)
  first = logits[jnp.array([1])]
  beam, score = decoding.beam_search(step, {'last': jnp.array([1])}, first, V ** n, n,
                                     eos_id=EOS)
  best, best_lp = None, -np.inf
  for length in range(1, n + 1):
    for seq in itertools.product(range(V), repeat=length):
      if EOS in seq[:-1] or (length < n and seq[-1] != EOS):
        continue
      lp = seq_logprob(logits, first[0], list(seq))
      if seq[-1] == EOS and lp > best_lp:
        best, best_lp = seq, lp
  got = [int(t) for t in beam[0]][:len(best)]
  assert tuple(got) == best
  assert float(score[0]) == pytest.approx(best_lp, abs=1e-4)


def test_filters_restrict_the_support():
  logits = jnp.tile(jnp.array([[3.0, 2.0, 1.0, 0.0, -1.0]]), (4000, 1))
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(4000))
  greedy = decoding.sample_logits(logits, keys, temperature=0.0)
  assert set(np.asarray(greedy).tolist()) == {0}
  assert set(np.asarray(decoding.sample_logits(logits, keys, top_k=1)).tolist()) == {0}
  top2 = np.asarray(decoding.sample_logits(logits, keys, top_k=2))
  assert set(top2.tolist()) == {0, 1}
  p = np.exp([3.0, 2.0]) / np.exp([3.0, 2.0]).sum()
  assert (top2 == 0).mean() == pytest.approx(p[0], abs=0.03)
  # probs ~ .64 .23 .09 ...: top_p 0.7 keeps the first two tokens, 0.5 only the first.
  assert set(np.asarray(decoding.sample_logits(logits, keys, top_p=0.7)).tolist()) == {0, 1}
  assert set(np.asarray(decoding.sample_logits(logits, keys, top_p=0.5)).tolist()) == {0}
  full = np.asarray(decoding.sample_logits(logits, keys))
  assert set(full.tolist()) == set(range(5))


def test_generate_stops_rows_at_eos_and_is_per_row_random():
  logits, step = table_model(3)
  first = logits[jnp.array([0, 1, 3])]
  cache = {'last': jnp.array([0, 1, 3])}
  out = decoding.generate(step, cache, first, jax.random.key(5), 12, eos_id=EOS)
  for row in np.asarray(out):
    if EOS in row.tolist():
      i = row.tolist().index(EOS)
      assert (row[i + 1:] == 0).all()
  # Row r's sample does not depend on the other rows: decode row 1 alone with row id 1.
  alone = decoding.generate(step, {'last': jnp.array([1])}, first[1:2], jax.random.key(5), 12,
                            eos_id=EOS, row_ids_B=jnp.array([1]))
  np.testing.assert_array_equal(alone[0], out[1])


def test_cached_attention_equals_attention_over_the_written_cache():
  """A chunk's attention over the head-major cache (slots < i) plus its own keys, with one
  softmax, masks and biases over the cache slots sliced for the chunk, equals plain
  attention over the cache with the chunk written in at slots i..i+t-1 (GQA: 4 query heads
  on 2 key/value heads)."""
  from arch.layers import attention as att
  b, t, n, k, h, s, i = 2, 3, 4, 2, 8, 10, 5
  keys = jax.random.split(jax.random.key(0), 8)
  q = jax.random.normal(keys[0], (b, t, n, h))
  cache_k, cache_v = (jax.random.normal(keys[j], (b, s, k, h)) for j in (1, 2))
  slots = jnp.arange(s)
  cache_k, cache_v = (jnp.where((slots < i)[None, :, None, None], x, 0.0)
                      for x in (cache_k, cache_v))  # unwritten slots hold zeros
  new_k, new_v = (jax.random.normal(keys[j], (b, t, k, h)) for j in (3, 4))
  user_mask = jax.random.bernoulli(keys[5], 0.8, (b, 1, t, s)).at[..., 0].set(True)
  bias = jax.random.normal(keys[6], (1, n, t, s))
  q_pos = i + jnp.arange(t)
  causal = (slots[None, :] <= q_pos[:, None])[None, None]  # (1, 1, T, S)
  got = att.cached_attention(
      q, cache_k.transpose(0, 2, 3, 1), cache_v.transpose(0, 2, 1, 3), new_k, new_v,
      mask=user_mask & causal & (slots < i), bias=bias,
      chunk_mask=att._chunk_keys(user_mask & causal, i, t), chunk_bias=att._chunk_keys(bias, i, t))
  written_k = jax.lax.dynamic_update_slice(cache_k, new_k, (0, i, 0, 0))
  written_v = jax.lax.dynamic_update_slice(cache_v, new_v, (0, i, 0, 0))
  want = att.dot_product_attention(q, written_k, written_v, bias=bias,
                                   mask=user_mask & causal & (slots < i + t))
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_generation_loop_updates_the_kv_cache_in_place():
  """The whole greedy generation of a GPT is one compiled while loop in which no buffer of
  a layer's cache size is copied or transposed: the cache is read in its stored layout and
  updated in place (a (B, S, K, H) cache was transposed per layer and step, and reading the
  updated cache made XLA copy it)."""
  from arch.sequence import gpt
  s_max = 40
  model = gpt.Model(vocab_size=30, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64,
                    max_length=48)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params']
  cache = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, s_max), jnp.int32),
                                            decode=True))['cache']
  cache_dims = sorted((1, 2, 16, s_max))  # B, K, H, S in any order
  assert {tuple(sorted(x.shape)) for x in jax.tree.leaves(cache) if x.ndim} == {
      tuple(cache_dims)}

  def step(tokens, cache):
    logits, mutated = model.apply({'params': params, 'cache': cache}, tokens, decode=True,
                                  mutable=['cache'])
    return logits[:, -1], mutated['cache']

  def generate(prompt):
    cache0 = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), cache)
    first, cache1 = step(prompt, cache0)
    return decoding.generate(step, cache1, first, jax.random.key(1), 8, eos_id=-1,
                             temperature=0.0)

  hlo = jax.jit(generate).lower(jnp.ones((1, 8), jnp.int32)).compile().as_text()
  bodies = hlo.split('\nENTRY ')[0]  # every computation but the entry one
  moved = []
  for line in bodies.splitlines():
    found = re.match(r'\s*%\S+ = f32\[([\d,]+)\]\S* (copy|transpose)\(', line)
    if found and sorted(int(d) for d in found.group(1).split(',')) == cache_dims:
      moved.append(line.strip()[:120])
  assert 'while(' in hlo
  assert not moved, moved[:4]
