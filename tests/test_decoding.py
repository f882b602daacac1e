"""Decoding: greedy, sampling filters, and beam search against exhaustive search."""

import itertools

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
