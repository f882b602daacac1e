"""RETRO (arch/sequence/retro.py): chunked cross-attention's causal shift, exact k-NN with the
own-document filter against brute force, the database and the near-neighbour split, the
baseline's parameters, and the tiny config through the loop (exact resume, the index and the
train chunks' precomputed neighbours kept in the checkpoint, sampling through train.sample)."""

import jax
import jax.numpy as jnp
import numpy as np

from arch import vocab
from arch.sequence import retro
from train.datasets import pydoc_retro
import lm_checks
from conftest import check_resumes_from_step_2, load_config, train_spec

SPEC = 'retro_pydoc.py:variant=tiny'


def _model_and_params(**kw):
  model = retro.Model(**{**retro.TINY, **kw})
  m, k = model.chunk_length, model.num_neighbours
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(4, 260, (2, model.max_length)), jnp.int32)
  nbrs = jnp.asarray(rng.integers(4, 260, (2, model.max_length // m, k, 2 * m)), jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), tokens, nbrs if model.retrieval else None)
  return model, params, tokens, nbrs


def test_chunked_cross_attention_sees_only_completed_chunks():
  """Changing the neighbours of chunk c changes no logit before position (c+1)M - 1 (the
  last token of chunk c, the first that has read all of chunk c) and does change it."""
  model, params, tokens, nbrs = _model_and_params(num_layers=3, cca_layers=(0, 2), chunk_length=8)
  m = model.chunk_length
  apply = jax.jit(model.apply)
  base = apply(params, tokens, nbrs)
  for c in range(model.max_length // m):
    other = nbrs.at[:, c].set((nbrs[:, c] * 7 + 3) % 256 + 4)
    out = apply(params, tokens, other)
    first = (c + 1) * m - 1
    np.testing.assert_array_equal(out[:, :first], base[:, :first])
    assert np.abs(out[:, first:] - base[:, first:]).max(axis=-1).min() > 0, c


def test_chunked_cross_attention_matches_a_loop_over_positions():
  """Each position p >= M - 1 attends to the encoded neighbours of chunk (p - M + 1) // M;
  earlier positions get zeros."""
  rng = np.random.default_rng(1)
  b, u, m, s, d = 2, 3, 4, 5, 6
  x = rng.normal(size=(b, u * m, d)).astype(np.float32)
  enc = rng.normal(size=(b, u, s, d)).astype(np.float32)

  def attend(q, kv):  # a position-independent stand-in: the query plus the mean of kv
    return q + kv.mean(1, keepdims=True)

  out = np.asarray(retro.chunked_cross_attention(attend, jnp.asarray(x), jnp.asarray(enc), m))
  for p in range(u * m):
    want = 0 if p < m - 1 else x[:, p] + enc[:, (p - m + 1) // m].mean(1)
    np.testing.assert_allclose(out[:, p], want, rtol=1e-6, atol=1e-6)


def test_cca_position_bias_is_relative_and_starts_at_the_aligned_distance():
  """CCA's logit bias for query i of a chunk group and position r of each neighbour is the
  table's entry for r - i; at init only r - i = M (the continuation lined up with the chunk
  being predicted) holds `cca_aligned_init`."""
  m, k, h = 4, 3, 2
  table = np.random.default_rng(3).normal(size=(h, 3 * m - 1)).astype(np.float32)
  bias = np.asarray(retro.relative_bias(jnp.asarray(table), m, k))
  assert bias.shape == (1, h, m, 2 * k * m)
  i, r = np.arange(m)[:, None], np.arange(2 * m)[None, :]
  for j in range(k):
    np.testing.assert_array_equal(bias[0, :, :, j * 2 * m:(j + 1) * 2 * m],
                                  table[:, r - i + m - 1])
  init = np.asarray(retro.aligned_init(m, 5.0)(None, (h, 3 * m - 1), jnp.float32))
  np.testing.assert_array_equal(init, np.where(np.arange(3 * m - 1) - (m - 1) == m, 5.0, 0.0)
                                [None].repeat(h, 0))


def test_baseline_is_the_same_decoder_without_retrieval():
  """retrieval=False has exactly the parameters of the retrieval model outside the encoder
  and the CCA layers, and runs without neighbours."""
  ret, with_ret, _, _ = _model_and_params(cca_aligned_init=5.0)
  model, without, tokens, _ = _model_and_params(retrieval=False)
  m = ret.chunk_length  # the model starts its CCA bias tables with the aligned prior
  want = retro.aligned_init(m, 5.0)(None, (ret.num_heads, 3 * m - 1), jnp.float32)
  np.testing.assert_array_equal(with_ret['params']['cca1_rel'], want)
  flat = lambda p: {jax.tree_util.keystr(k): v.shape
                    for k, v in jax.tree_util.tree_leaves_with_path(p)}
  a, b = flat(with_ret), flat(without)
  extra = {k for k in a if k not in b}
  assert set(b) <= set(a) and all(a[k] == b[k] for k in b)
  assert extra and all(("'enc" in k) or ("'cca" in k) for k in extra), extra
  assert model.apply(without, tokens).shape == (*tokens.shape, 260)


def test_nearest_equals_brute_force_and_drops_own_documents():
  rng = np.random.default_rng(2)
  q, n, e, k = 7, 50, 5, 3
  query = rng.normal(size=(q, e)).astype(np.float32)
  keys = rng.normal(size=(n, e)).astype(np.float32)
  keys[:q] = query + 1e-3  # each query's own entry is its nearest
  key_doc = rng.integers(0, 6, (n, 2)).astype(np.int32)
  query_doc = np.concatenate([key_doc[:q, :1], np.full((q, 1), -1)], 1).astype(np.int32)
  got = np.asarray(retro.nearest(jnp.asarray(query), jnp.asarray(keys), k))
  d = ((query[:, None] - keys[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(got, np.argsort(d, 1)[:, :k])
  assert (got[:, 0] == np.arange(q)).all()
  got = np.asarray(retro.nearest(jnp.asarray(query), jnp.asarray(keys), k,
                                 jnp.asarray(query_doc), jnp.asarray(key_doc)))
  for i in range(q):
    allowed = [j for j in np.argsort(d[i]) if query_doc[i, 0] not in key_doc[j]]
    np.testing.assert_array_equal(got[i], allowed[:k])
    assert not np.isin(key_doc[got[i]], query_doc[i, 0]).any()


def test_database_entries_are_chunk_and_continuation():
  docs = {'a': 'abcdefghij', 'b': 'klmnopq'}
  tokens, doc = retro.token_stream(docs, ['a', 'b'])
  assert len(tokens) == 19 and tokens[10] == vocab.EOS and doc.tolist() == [0] * 11 + [1] * 8
  db = retro.database(tokens, doc, 4)
  assert db['tokens'].shape == (4, 8)
  np.testing.assert_array_equal(db['tokens'][1], tokens[4:12])
  assert db['doc'][1].tolist() == [0, 1] and db['doc'][0].tolist() == [0, 0]
  np.testing.assert_array_equal(db['tokens'][3], list(tokens[12:19]) + [vocab.PAD])


def test_near_neighbour_split_holds_out_documents_with_neighbours_in_train():
  base = 'the quick brown fox jumps over the lazy dog ' * 3
  docs = {'copy': base[:64], 'orig': base + 'xyz', 'other': 'q' * 40 + 'w' * 40,
          'alone': ''.join(chr(65 + (i * 7) % 26) for i in range(90))}
  train, val, stats = pydoc_retro.near_neighbour_split(docs, chunk=8, max_fraction=0.5)
  assert val == ['copy'] and set(train) == {'orig', 'other', 'alone'}
  assert stats['copy'] == 1.0


def test_pydoc_split_chunks_recur_in_train():
  """The shipped split: every validation document has at least half of its 32-byte chunks
  verbatim in the train documents (checked by substring search)."""
  from pydoc_data import topics
  train, val, stats = pydoc_retro.near_neighbour_split(dict(topics.topics))
  assert tuple(val) == pydoc_retro.VALIDATION and not set(val) & set(train)
  docs, rest = retro.corpus(val)
  assert rest == train
  text = '\x00'.join(docs[n] for n in train)
  for name in val:
    d = docs[name]
    hits = [d[i:i + 32] in text for i in range(0, len(d) - 31, 32)]
    assert np.mean(hits) == stats[name] >= 0.5, name


def test_train_windows_carry_their_documents():
  tokens = np.arange(40, dtype=np.int32)
  doc = np.repeat(np.arange(4), 10).astype(np.int32)
  inp = retro.WindowInput(tokens, doc, 4, 9, batch_size=4, seed=0, pidx=0, pcount=1)
  b = next(inp)
  starts = b['tokens'][:, 0]
  assert (starts % 4 == 0).all() and b['doc'].shape == (4, 2, 2)
  np.testing.assert_array_equal(b['tokens'], starts[:, None] + np.arange(9))
  np.testing.assert_array_equal(b['doc'][:, 1, 0], doc[starts + 4])
  np.testing.assert_array_equal(b['doc'][:, 1, 1], doc[np.minimum(starts + 11, 39)])
  np.testing.assert_array_equal(b['chunk'], starts[:, None] // 4 + np.arange(2))
  inp.set_state({'drawn': 0})
  np.testing.assert_array_equal(next(inp)['tokens'], b['tokens'])


def test_tiny_config_trains_resumes_keeps_its_index_and_samples(tmp_path, data_dir):
  """4 steps with checkpoints at 2 and 4; the step-2 checkpoint resumes bitwise; the
  checkpointed index holds the frozen encoder's keys of every database chunk (built once,
  identical in both runs); train.sample continues a prompt alike on 1 and 8 devices."""
  result = train_spec(SPEC, tmp_path / 'straight', data_dir, data__eval_split='validation[:1]')
  assert np.isfinite(result['loss']) and result['tokens'] > 100
  check_resumes_from_step_2(SPEC, train_spec, tmp_path, data_dir)

  from train import checkpoint, core
  config = load_config(SPEC, data__data_dir=data_dir)
  task = core.load_task(config)
  abstract = core.abstract_state(config, task)
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'straight'), async_save=False)
  state = ckpt.restore(4, abstract)[0]
  ckpt.close()
  index = state.extra['index']
  docs, names = retro.corpus(config.task_kwargs.held_out)
  stream, _ = retro.token_stream(docs, names)
  assert int(index['built']) == 1
  _, key_fn = retro.frozen_key_fn(config)
  m = config.model.chunk_length
  some = np.arange(0, len(index['tokens']), 97)
  want = key_fn(state.extra['encoder'], jnp.asarray(index['tokens'][some, :m]))
  np.testing.assert_allclose(index['keys'][some], want, rtol=1e-5, atol=1e-5)
  # the train chunks' neighbours (chunk c is entry c * M / stride): the nearest keys outside
  # the chunk's own documents, as a brute-force search finds them
  keys, doc, nbrs = (np.asarray(index[n]) for n in ('keys', 'doc', 'neighbours'))
  per = m // config.task_kwargs.database_stride
  assert per > 1 and nbrs.shape[1] == config.model.num_neighbours
  assert (nbrs.shape[0] - 1) * per < len(keys) <= (nbrs.shape[0] + 1) * per
  for c in range(0, len(nbrs), 13):
    e = c * per
    np.testing.assert_array_equal(index['tokens'][e, :m], stream[c * m:(c + 1) * m])
    d = ((keys - keys[e]) ** 2).sum(-1)
    allowed = ~np.isin(doc, doc[e]).any(-1)
    np.testing.assert_allclose(d[nbrs[c]], np.sort(d[allowed])[:nbrs.shape[1]], atol=1e-5)
    assert allowed[nbrs[c]].all()

  lm_checks.check_sampler_one_and_eight(SPEC, tmp_path / 'straight', data_dir)
