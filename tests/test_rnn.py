"""Recurrent cells, layers, the RNN LM and tagger, and RNNsearch: equations against numpy,
padding, bidirectional reversal, causality, cached decoding, attention, parameter count."""

import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.sequence import rnn, rnnsearch

CELLS = ('rnn', 'lstm', 'gru')


def _key(seed=0):
  """'rbg' keys: XLA-CPU compiles initializers much faster than with threefry."""
  return jax.random.key(seed, impl='rbg')


def _init(model, *args, **kwargs):
  return jax.jit(functools.partial(model.init, **kwargs))(_key(), *args)


def _apply(model, **kwargs):
  """model.apply, jitted once (eager flax retraces and recompiles the scan every call)."""
  return jax.jit(functools.partial(model.apply, **kwargs))


def _randomize(variables, scale=0.5, seed=0):
  """Every param replaced by N(0, scale^2): the paper's small inits would make many
  properties hold trivially (RNNsearch's v_a starts at zero, i.e. uniform attention)."""
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(0, scale, p.shape), p.dtype),
                        nn.meta.unbox(variables['params']))
  return {**variables, 'params': params}


def _normal(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def np_cell(cell, p, carry, x):
  """One step of each cell's equations in numpy, from the layer's (W, b, U) params."""
  W, b, U = (np.asarray(a, np.float64) for a in (p['wi']['kernel'], p['wi']['bias'], p['wh']))
  h = carry['h']
  xw = np.einsum('bd,dgh->bgh', x, W) + b
  if cell == 'rnn':
    h = np.tanh(xw[:, 0] + h @ U[:, 0])
    return {'h': h}
  if cell == 'lstm':
    i, f, o = (_sigmoid(xw[:, k] + h @ U[:, k]) for k in (0, 1, 3))
    g = np.tanh(xw[:, 2] + h @ U[:, 2])
    c = f * carry['c'] + i * g
    return {'c': c, 'h': o * np.tanh(c)}
  z = _sigmoid(xw[:, 0] + h @ U[:, 0])
  r = _sigmoid(xw[:, 1] + h @ U[:, 1])
  n = np.tanh(xw[:, 2] + (r * h) @ U[:, 2])
  return {'h': z * h + (1 - z) * n}


@pytest.mark.parametrize('cell', CELLS)
def test_cell_matches_numpy_equations(cell):
  layer = rnn.Recurrent(cell, hidden_dim=5)
  x = _normal((2, 3, 4))
  variables = _init(layer, x)
  if cell == 'lstm':  # the forget gate's bias starts at one, the others at zero
    bias = nn.meta.unbox(variables['params'])['cell']['wi']['bias']
    np.testing.assert_array_equal(bias, np.array([0, 1, 0, 0])[:, None] * np.ones((4, 5)))
  u = nn.meta.unbox(variables['params'])['cell']['wh']                 # (H, G, H)
  np.testing.assert_allclose(np.einsum('igj,kgj->gik', u, u),
                             np.broadcast_to(np.eye(5), (u.shape[1], 5, 5)), atol=1e-5)
  variables = _randomize(variables)
  carry, y = _apply(layer)(variables, x)
  want = {k: np.zeros((2, 5)) for k in rnn.CELLS[cell].carry_names}
  for t in range(3):
    want = np_cell(cell, variables['params']['cell'], want, np.asarray(x[:, t], np.float64))
    np.testing.assert_allclose(y[:, t], want['h'], rtol=1e-5, atol=1e-6)
  for k in want:
    np.testing.assert_allclose(carry[k], want[k], rtol=1e-5, atol=1e-6)
  # The cell's one-step __call__ is the same equations.
  one, h = rnn.CELLS[cell](5).apply({'params': variables['params']['cell']},
                                    rnn.zero_carry(cell, 2, 5), x[:, 0])
  np.testing.assert_allclose(h, y[:, 0], rtol=1e-6, atol=1e-6)


def _padded_inputs():
  lengths = np.array([4, 6])
  mask = np.arange(6)[None] < lengths[:, None]
  x = _normal((2, 6, 3))
  other = jnp.where(mask[..., None], x, _normal((2, 6, 3), seed=7))  # new padding values
  return x, other, jnp.asarray(mask), lengths


@pytest.mark.parametrize('cell', CELLS)
@pytest.mark.parametrize('bidirectional', [False, True])
def test_padding_changes_no_real_position(cell, bidirectional):
  layer = (rnn.Bidirectional if bidirectional else rnn.Recurrent)(cell, hidden_dim=4)
  x, other, mask, lengths = _padded_inputs()
  variables = _randomize(_init(layer, x, mask))
  run = _apply(layer)
  carry, y = run(variables, x, mask)
  carry2, y2 = run(variables, other, mask)
  np.testing.assert_allclose(y2, y, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), carry, carry2)
  np.testing.assert_array_equal(y[0, 4:], 0.0)
  # Row 0 equals the same layer on the unpadded sequence alone.
  carry1, y1 = run(variables, x[:1, :4], None)
  np.testing.assert_allclose(y[0, :4], y1[0], rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6),
               carry, carry1)


@pytest.mark.parametrize('cell', CELLS)
def test_backward_direction_reverses_each_sequence_within_its_length(cell):
  layer = rnn.Bidirectional(cell, hidden_dim=4)
  x, _, mask, lengths = _padded_inputs()
  variables = _randomize(_init(layer, x, mask))
  (_, carry_b), y = _apply(layer)(variables, x, mask)
  forward = _apply(rnn.Recurrent(cell, hidden_dim=4))
  for row, n in enumerate(lengths):
    rev = x[row:row + 1, :n][:, ::-1]
    carry_r, y_r = forward({'params': variables['params']['backward']}, rev)
    np.testing.assert_allclose(y[row, :n, 4:], y_r[0, ::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry_b['h'][row], carry_r['h'][0], rtol=1e-5, atol=1e-6)
    # ... and the backward final carry is its output at the first position.
    np.testing.assert_allclose(carry_b['h'][row], y[row, 0, 4:], rtol=1e-6)


@pytest.mark.parametrize('cell', CELLS)
def test_lm_is_causal_through_gradients(cell):
  """d logits[t] / d embedding[t'] is zero exactly when t' > t (two layers)."""
  model = rnn.Model(vocab_size=11, cell=cell, **rnn.TINY)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, (1, 6)), jnp.int32)
  variables = _randomize(_init(model, tokens))

  def logits_of(delta_BTD):
    def add_delta(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.module.name == 'embed' and context.method_name == '__call__':
        out = out + delta_BTD
      return out
    with nn.intercept_methods(add_delta):
      return model.apply(variables, tokens)[0].sum(-1)  # (T,)

  jac = jax.jit(jax.jacrev(logits_of))(jnp.zeros((1, 6, rnn.TINY['embed_dim'])))  # (T, 1, T', D)
  reach = np.abs(np.asarray(jac[:, 0])).sum(-1) > 0                      # (T, T')
  np.testing.assert_array_equal(reach, np.tril(np.ones((6, 6), bool)))


@pytest.mark.parametrize('cell', CELLS)
def test_lm_decode_chunk_by_chunk_equals_full_forward(cell):
  model = rnn.Model(vocab_size=11, cell=cell, **rnn.TINY)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, (2, 8)), jnp.int32)
  variables = _init(model, tokens, decode=True)
  for leaf in jax.tree.leaves(variables['cache']):
    assert leaf.shape == (2, rnn.TINY['hidden_dim']) and not leaf.any()
  variables = _randomize(variables)
  full = _apply(model)(variables, tokens)
  step = _apply(model, decode=True, mutable=['cache'])
  cache, chunks = variables['cache'], []
  for lo, hi in ((0, 5), (5, 6), (6, 7), (7, 8)):
    logits, mutated = step({**variables, 'cache': cache}, tokens[:, lo:hi])
    cache = mutated['cache']
    chunks.append(logits)
  np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), full, rtol=1e-5, atol=1e-5)


def test_stacked_dropout_runs_in_train_mode():
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 11, (2, 5)), jnp.int32)
  for model, out_dim in ((rnn.Model(vocab_size=11, dropout_rate=0.5, **rnn.TINY), 11),
                         (rnn.Tagger(vocab_size=11, num_tags=3, dropout_rate=0.5,
                                     **rnn.TINY), 3)):
    variables = _init(model, tokens)
    train = _apply(model, train=True)
    run = lambda seed: train(variables, tokens, rngs={'dropout': _key(seed)})
    evaluate = _apply(model)
    a, b = run(1), run(2)
    assert a.shape == (2, 5, out_dim) and a.dtype == jnp.float32
    assert np.isfinite(a).all() and not np.allclose(a, b)
    np.testing.assert_array_equal(evaluate(variables, tokens), evaluate(variables, tokens))
    assert not np.allclose(a, evaluate(variables, tokens))


def test_tagger_default_mask_is_non_padding_tokens():
  model = rnn.Tagger(vocab_size=11, num_tags=3, cell='gru', **rnn.TINY)
  tokens = jnp.array([[4, 5, 6, 0, 0], [7, 8, 9, 10, 4]], jnp.int32)
  variables = _randomize(_init(model, tokens))
  run = _apply(model)
  out = run(variables, tokens)
  np.testing.assert_array_equal(out, run(variables, tokens, mask_BT=tokens != 0))
  # Row 0's tags do not depend on how much padding follows it.
  np.testing.assert_allclose(out[0, :3], run(variables, tokens[:1, :3])[0], rtol=1e-5,
                             atol=1e-6)


def test_params_carry_valid_logical_axes():
  from train import config_lib
  rules = config_lib.base().sharding_rules
  tokens = jax.ShapeDtypeStruct((1, 4), jnp.int32)
  trees = [jax.eval_shape(rnn.Model(cell=c, **rnn.TINY).init, _key(), tokens)['params']
           for c in CELLS]
  trees.append(jax.eval_shape(rnnsearch.Model().init, _key(), tokens, tokens)['params'])
  for tree in trees:
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    for leaf in leaves:
      assert len(leaf.names) == len(leaf.value.shape)
      mesh = [a for a in nn.logical_to_mesh_axes(leaf.names, rules) if a is not None]
      assert len(mesh) == len(set(mesh)), leaf.names


def test_bf16_compute_keeps_fp32_params_carry_and_logits():
  tokens = jax.ShapeDtypeStruct((2, 4), jnp.int32)
  cases = [(rnn.Model(cell=c, dtype='bfloat16', **rnn.TINY), (tokens,)) for c in CELLS]
  cases.append((rnnsearch.Model(dtype='bfloat16'), (tokens, tokens)))  # as configs pass it
  for model, args in cases:
    variables = jax.eval_shape(functools.partial(model.init, decode=True), _key(), *args)
    dtypes = {x.dtype for x in jax.tree.leaves(nn.meta.unbox(variables['params']))}
    assert dtypes == {jnp.dtype('float32')}
    carry = [x for x in jax.tree.leaves(variables['cache']) if x.ndim]
    assert carry and {x.dtype for x in carry} == {jnp.dtype('float32')}
    out, _ = jax.eval_shape(functools.partial(model.apply, decode=True, mutable=['cache']),
                            variables, *args)
    assert out.dtype == jnp.float32


# --------------------------------------------------------------------------------------
# RNNsearch
# --------------------------------------------------------------------------------------

def rnnsearch_param_count(Kx, Ky, m, n, n_align, l):
  """The paper's equations (appendix A), biases where the paper omits them."""
  gru = lambda inputs: 3 * (n * inputs + n * n + n)  # W_{z,r,.} x, U_{z,r,.} h, b per gate
  encoder = Kx * m + 2 * gru(m)                       # E_x shared by both directions
  init = n * n + n                                    # s_0 = tanh(W_s <-h_1 + b)
  align = n_align * n + n_align * 2 * n + n_align + n_align  # W_a, U_a, bias, v_a
  decoder = Ky * m + gru(m + 2 * n)                   # E_y; inputs [E y_{i-1}; c_i]
  deep_out = 2 * l * (n + m + 2 * n) + 2 * l          # U_o, V_o, C_o, bias
  softmax = Ky * l + Ky                               # W_o, bias
  return encoder + init + align + decoder + deep_out + softmax


def test_rnnsearch50_parameter_count():
  count = rnnsearch_param_count(Kx=30_000, Ky=30_000, m=620, n=1000, n_align=1000, l=500)
  assert count == 80_443_000
  src = jax.ShapeDtypeStruct((1, 4), jnp.int32)
  shapes = jax.eval_shape(rnnsearch.Model('rnnsearch50').init, _key(), src, src)['params']
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes))) == count
  # Overriding one width by attribute changes the count as the formula says.
  shapes = jax.eval_shape(rnnsearch.Model('rnnsearch50', hidden_dim=100).init, _key(), src,
                          src)['params']
  assert (sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes)))
          == rnnsearch_param_count(30_000, 30_000, 620, 100, 1000, 500))


def test_rnnsearch_rejects_unknown_variant():
  with pytest.raises(ValueError, match='valid: rnnsearch50, tiny'):
    rnnsearch.Model('big').init(_key(), jnp.ones((1, 2), jnp.int32), jnp.ones((1, 2), jnp.int32))


SRC = jnp.array([[5, 6, 7, 0, 0], [3, 4, 5, 6, 9]], jnp.int32)
TGT = jnp.array([[1, 8, 9, 10, 11, 12], [1, 13, 14, 15, 16, 17]], jnp.int32)


@pytest.fixture(scope='module')
def search():
  model = rnnsearch.Model('tiny', src_vocab_size=20, tgt_vocab_size=30, dropout_rate=0.5)
  variables = _randomize(_init(model, SRC, TGT, decode=True), scale=0.3)
  # Jitted once for the module's tests.
  return types.SimpleNamespace(
      model=model, variables=variables, run=_apply(model),
      encode=_apply(model, method=rnnsearch.Model.encode),
      with_alignment=_apply(model, mutable=['intermediates']))


def test_rnnsearch_first_steps_match_the_papers_equations(search):
  """s_0, the alignment, the maxout deep output (from s_{i-1}) and the GRU update
  recomputed in numpy for the first two target words."""
  model, variables = search.model, search.variables
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])
  enc = search.encode(variables, SRC)
  logits, inter = search.with_alignment(variables, SRC, TGT)
  alpha = np.asarray(inter['intermediates']['decoder']['alignment_BTS'][0])
  h = np.asarray(enc['annotations_BSE'], np.float64)  # (B, S, 2n)
  n = model.sizes()['hidden_dim']
  s = np.tanh(h[:, 0, n:] @ p['init_state']['kernel'] + p['init_state']['bias'])
  np.testing.assert_allclose(enc['init_BH'], s, rtol=1e-5, atol=1e-6)
  mask = np.asarray(SRC) != 0
  dec = p['decoder']
  for i in range(2):
    e = np.tanh((s @ dec['step']['attention_query']['kernel'])[:, None]
                + h @ p['attention_keys']['kernel'] + p['attention_keys']['bias']
                ) @ dec['step']['attention_v']
    a = np.where(mask, np.exp(e - e.max(-1, keepdims=True)), 0.0)
    a /= a.sum(-1, keepdims=True)
    np.testing.assert_allclose(alpha[:, i], a, rtol=1e-5, atol=1e-6)
    c = np.einsum('bs,bse->be', a, h)
    y = dec['embed']['embedding'][np.asarray(TGT[:, i])]
    t2 = (s @ dec['readout_state']['kernel'] + dec['readout_state']['bias']
          + y @ dec['readout_embed']['kernel'] + c @ dec['readout_context']['kernel'])
    t = np.maximum(t2[:, 0::2], t2[:, 1::2])
    want = t @ dec['output']['kernel'] + dec['output']['bias']
    np.testing.assert_allclose(logits[:, i], want, rtol=1e-4, atol=1e-5)
    s = np_cell('gru', dec['step']['gru'], {'h': s}, np.concatenate([y, c], -1))['h']


def test_rnnsearch_attention_sums_to_one_and_ignores_padding(search):
  model, variables, run = search.model, search.variables, search.run
  logits, inter = search.with_alignment(variables, SRC, TGT)
  alpha = inter['intermediates']['decoder']['alignment_BTS'][0]
  assert alpha.shape == (2, 6, 5)
  np.testing.assert_allclose(alpha.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(alpha[0, :, 3:], 0.0)
  assert (alpha[0, :, :3] > 0).all() and (alpha[1] > 0).all()
  # More padding, or another embedding for the padding token, changes nothing.
  longer = jnp.pad(SRC, ((0, 0), (0, 3)))
  np.testing.assert_allclose(run(variables, longer, TGT), logits, rtol=1e-6, atol=1e-6)
  params = variables['params']
  other = {**params, 'src_embed': {'embedding': params['src_embed']['embedding'].at[0].set(9.0)}}
  np.testing.assert_allclose(run({**variables, 'params': other}, SRC, TGT), logits,
                             rtol=1e-6, atol=1e-6)
  # Neither do the annotations and keys at padded positions.
  enc = search.encode(variables, SRC)
  junk = {k: jnp.where(enc['mask_BS'][:, :, None], v, 7.0) if v.ndim == 3 else v
          for k, v in enc.items()}
  np.testing.assert_allclose(_apply(model, method=rnnsearch.Model.decode)(variables, TGT, junk),
                             logits, rtol=1e-6, atol=1e-6)
  for leaf in jax.tree.leaves(enc):
    assert leaf.shape[0] == 2


def test_rnnsearch_decode_chunk_by_chunk_equals_full_forward(search):
  model, variables = search.model, search.variables
  assert not any(leaf.any() for leaf in jax.tree.leaves(variables['cache']))
  full = search.run(variables, SRC, TGT)
  enc = search.encode(variables, SRC)
  step = _apply(model, decode=True, mutable=['cache'], method=rnnsearch.Model.decode)
  cache, chunks = variables['cache'], []
  for lo, hi in ((0, 3), (3, 4), (4, 6)):
    logits, mutated = step({**variables, 'cache': cache}, TGT[:, lo:hi], enc)
    cache = mutated['cache']
    chunks.append(logits)
  np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), full, rtol=1e-5, atol=1e-5)


def test_rnnsearch_train_mode_dropout(search):
  variables = search.variables
  train = _apply(search.model, train=True)
  run = lambda seed: train(variables, SRC, TGT, rngs={'dropout': _key(seed)})
  a, b = run(1), run(2)
  assert a.shape == (2, 6, 30) and a.dtype == jnp.float32
  assert np.isfinite(a).all() and not np.allclose(a, b)
