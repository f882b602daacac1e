"""The Transformer (arch/sequence/transformer.py) and T5 (arch/sequence/t5.py): parameter
counts, cached decoding, causality, source padding, T5's relative position buckets."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.layers.attention import relative_position_bucket
from arch import vocab
from arch.sequence import t5, transformer

# Hugging Face transformers 5.23 (torch), no weights downloaded:
#   m = T5ForConditionalGeneration(T5Config(vocab_size=32128, feed_forward_proj='relu',
#       relative_attention_num_buckets=32, relative_attention_max_distance=128, **size))
#   sum(p.numel() for p in m.parameters())   # the tied embedding counted once
# with size = d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8 (t5-small) and
# d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12 (t5-base). (A one-off
# check also ported a tiny random HF T5 into t5.Model: logits equal to 2e-6.)
T5_HF_PARAMS = {'small': 60_506_624, 'base': 222_903_552}

V = vocab.BYTE_VOCAB_SIZE
FAMILIES = {'transformer': (transformer, transformer.TINY), 't5': (t5, t5.TINY)}


def _key(seed=0):
  """'rbg' keys: XLA-CPU compiles initializers much faster than with threefry."""
  return jax.random.key(seed, impl='rbg')


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(tree)))


def param_shapes(model, s=4, t=4):
  src = jnp.ones((1, s), jnp.int32)
  return jax.eval_shape(lambda: model.init(_key(), src, src[:, :t]))['params']


def transformer_params(vocab_size, num_encoder_layers, num_decoder_layers, embed_dim,
                       mlp_dim, tgt_vocab_size=None, share_embeddings=True,
                       tie_embeddings=True, **_):
  """Vaswani et al.'s count: attention 4 D x D (+ biases), MLP D->F->D (+ biases),
  LayerNorm scale + bias after each sublayer; embeddings as shared/tied."""
  d, f = embed_dim, mlp_dim
  tgt_vocab = tgt_vocab_size or vocab_size
  attention = 4 * (d * d + d)
  mlp = d * f + f + f * d + d
  layer_norm = 2 * d
  encoder = num_encoder_layers * (attention + mlp + 2 * layer_norm)
  decoder = num_decoder_layers * (2 * attention + mlp + 3 * layer_norm)
  embeddings = vocab_size * d + (0 if share_embeddings else tgt_vocab * d)
  output = 0 if tie_embeddings else d * tgt_vocab
  return embeddings + encoder + decoder + output


def t5_params(vocab_size, num_encoder_layers, num_decoder_layers, num_heads, embed_dim,
              head_dim, mlp_dim, num_buckets=32, **_):
  d, inner = embed_dim, num_heads * head_dim
  attention = 4 * d * inner
  mlp = 2 * d * mlp_dim
  stack_extra = num_buckets * num_heads + d  # relative bias table, final RMS norm
  encoder = num_encoder_layers * (attention + mlp + 2 * d) + stack_extra
  decoder = num_decoder_layers * (2 * attention + mlp + 3 * d) + stack_extra
  return vocab_size * d + encoder + decoder


@pytest.mark.parametrize('variant', ['base', 'big'])
def test_transformer_parameter_count(variant):
  sizes = dict(transformer.VARIANTS[variant], vocab_size=37_000)
  n = count(param_shapes(transformer.Model(**sizes)))
  assert n == transformer_params(**sizes)
  assert n == {'base': 63_082_496, 'big': 214_245_376}[variant]  # paper: 65M, 213M


@pytest.mark.parametrize('share,tie', [(False, True), (False, False), (True, False)])
def test_transformer_separate_embeddings_and_output_count(share, tie):
  sizes = dict(transformer.TINY, tgt_vocab_size=None if share else 300,
               share_embeddings=share, tie_embeddings=tie)
  assert count(param_shapes(transformer.Model(**sizes))) == transformer_params(**sizes)


def test_transformer_rejects_sharing_two_vocabularies():
  model = transformer.Model(**dict(transformer.TINY, tgt_vocab_size=300))
  with pytest.raises(ValueError, match='share_embeddings'):
    param_shapes(model)


@pytest.mark.parametrize('variant', ['small', 'base'])
def test_t5_parameter_count_equals_hugging_face(variant):
  sizes = dict(t5.VARIANTS[variant], vocab_size=32128)
  n = count(param_shapes(t5.Model(**sizes)))
  assert n == T5_HF_PARAMS[variant] == t5_params(**sizes)


def test_t5_has_no_biases_and_one_relative_table_per_stack():
  params = nn.meta.unbox(param_shapes(t5.Model(**t5.TINY)))
  paths = ['/'.join(str(getattr(k, 'key', k)) for k in p)
           for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  assert not [p for p in paths if p.endswith('bias')]
  assert sorted(p for p in paths if 'relative' in p) == [
      'decoder/relative_attention_bias/rel_embedding',
      'encoder/relative_attention_bias/rel_embedding']


def test_t5_relative_position_buckets():
  """Hand-computed (32 buckets, max distance 128): exact below 8 (bidirectional, per sign)
  or 16 (causal), then exact + int(log(d / exact) / log(128 / exact) * (n - exact))."""
  rel = [0, -1, 1, -7, 7, -8, 8, -12, 12, -20, 30, -100, -127, -128, -500, 500]
  want = [0, 1, 17, 7, 23, 8, 24, 9, 25, 10, 27, 15, 15, 15, 15, 31]
  got = relative_position_bucket(jnp.asarray(rel), True, 32, 128)
  np.testing.assert_array_equal(got, want)
  rel = [5, 0, -3, -15, -16, -20, -50, -100, -127, -1000]  # key - query; > 0 is the future
  want = [0, 0, 3, 15, 16, 17, 24, 30, 31, 31]
  np.testing.assert_array_equal(relative_position_bucket(jnp.asarray(rel), False, 32, 128),
                                want)


# ---------------------------------------------------------------------------------------
# Properties of both families, on their tiny variants
# ---------------------------------------------------------------------------------------

S, T = 10, 20  # T > 16: T5's causal buckets reach their log-spaced range


def _source(s=S, seed=0):
  """Two rows, the second padded after 6 tokens."""
  src = np.random.default_rng(seed).integers(vocab.NUM_SPECIAL, V, (2, s))
  src[1, 6:] = vocab.PAD
  return jnp.asarray(src, jnp.int32)


def _target(t=T, seed=1):
  tgt = np.random.default_rng(seed).integers(vocab.NUM_SPECIAL, V, (2, t))
  tgt[:, 0] = vocab.BOS
  return jnp.asarray(tgt, jnp.int32)


@pytest.fixture(scope='module', params=list(FAMILIES))
def family(request):
  """(module, model, variables with a zeroed cache for T target tokens)."""
  module, sizes = FAMILIES[request.param]
  model = module.Model(**sizes)
  variables = jax.jit(lambda: model.init(_key(), _source(), _target(), decode=True))()
  # As the sampler builds it: zeros of the cache's shapes.
  variables = {**variables, 'cache': jax.tree.map(jnp.zeros_like, variables['cache'])}
  return module, model, variables


def test_decode_chunk_then_token_by_token_equals_full_forward(family):
  module, model, variables = family
  src, tgt = _source(), _target()
  full = model.apply(variables, src, tgt)
  assert full.shape == (2, T, model.vocab_size) and full.dtype == jnp.float32
  enc = model.apply(variables, src, method=module.Model.encode)
  step = jax.jit(lambda cache, tokens: model.apply(
      {**variables, 'cache': cache}, tokens, enc, decode=True, mutable=['cache'],
      method=module.Model.decode))
  cache, chunks = variables['cache'], []
  for lo, hi in [(0, 5)] + [(i, i + 1) for i in range(5, T)]:
    logits, mutated = step(cache, tgt[:, lo:hi])
    cache = mutated['cache']
    chunks.append(logits)
  np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), full, rtol=1e-5, atol=1e-5)


def test_decoder_is_causal_through_gradients(family):
  """d logits[t] / d target embedding[t'] is zero exactly when t' > t."""
  module, model, variables = family
  params = {'params': variables['params']}
  t = 6
  tgt = _target(t)
  enc = model.apply(params, _source(), method=module.Model.encode)

  def logits_of(delta_BTD):
    def add_delta(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if isinstance(context.module, nn.Embed) and context.method_name == '__call__':
        out = out + delta_BTD  # only the target is embedded inside `decode`
      return out
    with nn.intercept_methods(add_delta):
      return model.apply(params, tgt, enc, method=module.Model.decode)[0].sum(-1)  # (T,)

  jac = jax.jit(jax.jacrev(logits_of))(jnp.zeros((2, t, model.embed_dim)))  # (T, B, T', D)
  reach = np.abs(np.asarray(jac[:, 0])).sum(-1) > 0                # (T, T')
  np.testing.assert_array_equal(reach, np.tril(np.ones((t, t), bool)))
  assert not np.asarray(jac[:, 1]).any()  # nor across rows


def test_source_padding_does_not_change_logits(family):
  module, model, variables = family
  params = {'params': variables['params']}
  src, tgt = _source(), _target()
  logits = model.apply(params, src, tgt)
  padded = jnp.pad(src, ((0, 0), (0, 7)))  # id 0 = PAD
  np.testing.assert_allclose(model.apply(params, padded, tgt), logits, rtol=1e-5, atol=1e-5)
  # ... while real tokens there do change them (the mask is what protects the logits).
  other = model.apply(params, padded.at[:, S + 2].set(50), tgt)
  assert not np.allclose(other, logits, atol=1e-4)
  # The padded row also ignores what its own padding slots hold in the hidden states.
  enc = model.apply(params, src, method=module.Model.encode)
  junk = {**enc, 'hidden': enc['hidden'].at[1, 6:].set(100.0)}
  np.testing.assert_allclose(model.apply(params, tgt, junk, method=module.Model.decode),
                             logits, rtol=1e-5, atol=1e-5)


def test_encoder_output_is_independent_of_the_decoder(family):
  """`encode` sees only the source: __call__ = decode(encode(src)); the encoder output
  captured inside __call__ does not change with the target; leaves are batch-major."""
  module, model, variables = family
  params = {'params': variables['params']}
  src = _source()
  enc = model.apply(params, src, method=module.Model.encode)
  for leaf in jax.tree.leaves(enc):
    assert leaf.shape[0] == 2
  np.testing.assert_array_equal(enc['mask'], src != vocab.PAD)
  for seed, t in ((1, T), (2, 5)):
    tgt = _target(t, seed)
    logits, state = model.apply(params, src, tgt, capture_intermediates=True,
                                mutable=['intermediates'])
    np.testing.assert_allclose(state['intermediates']['encoder']['__call__'][0],
                               enc['hidden'], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.apply(params, tgt, enc, method=module.Model.decode),
                               logits, rtol=1e-6, atol=1e-6)
  # Only the decoder keeps a cache.
  assert set(variables['cache']) == {'decoder'}


def test_train_mode_dropout(family):
  module, model, variables = family
  params = {'params': variables['params']}
  model = module.Model(**dict(FAMILIES[module.__name__.split('.')[-1]][1], dropout_rate=0.3))
  src, tgt = _source(), _target()
  a = model.apply(params, src, tgt, train=True, rngs={'dropout': _key(1)})
  b = model.apply(params, src, tgt, train=True, rngs={'dropout': _key(2)})
  assert np.isfinite(a).all() and not np.allclose(a, b)
  np.testing.assert_allclose(model.apply(params, src, tgt), model.apply(params, src, tgt))


def test_t5_stacks_use_their_own_bucket_schemes():
  """The gradient reaches exactly the relative-bias rows each stack's scheme uses: the
  encoder's distances -9..9 fall in bidirectional buckets 0-8 and 17-24; the decoder's
  past distances 0..19 in causal buckets 0-17 (the future is masked)."""
  model = t5.Model(**t5.TINY)
  src, tgt = _source(), _target()
  params = jax.jit(model.init)(_key(), src, tgt)['params']
  grads = jax.jit(jax.grad(lambda p: model.apply({'params': p}, src, tgt).sum()))(params)
  grads = nn.meta.unbox(grads)
  used = lambda stack: set(np.flatnonzero(np.abs(np.asarray(
      grads[stack]['relative_attention_bias']['rel_embedding'])).sum(-1)))
  assert used('encoder') == set(range(0, 9)) | set(range(17, 25))
  assert used('decoder') == set(range(0, 18))


@pytest.mark.parametrize('name', list(FAMILIES))
def test_seq2seq_sampler_greedy_and_beam_search(name):
  """The seq2seq objective's sampler (a zeroed cache from eval_shape; the encoder output
  and the cache repeated per beam): greedy tokens are the argmax of the teacher-forced
  logits of themselves, and beam search returns (B, N) tokens."""
  from arch.sequence import seq2seq
  from train import config_lib
  config = config_lib.load(f'configs/{name}_translate.py')
  with config.unlocked():
    config.model = dict(FAMILIES[name][1])
  task = seq2seq.make(config)
  assert not task.continues_prompt  # printed 'source => translation'
  model = seq2seq.arch.model_from_config(config)
  src, n = _source(), 8
  variables = jax.jit(task.init)(_key(), {'source': src, 'target': _target(n)})
  sample = jax.jit(task.sample, static_argnames=('max_new_tokens', 'temperature', 'beam_size'))
  greedy = sample(variables, {'source': src}, _key(), max_new_tokens=n, temperature=0.0)
  greedy = np.asarray(greedy['tokens'])
  forced = model.apply(variables, src, seq2seq.shift_right(jnp.asarray(greedy))).argmax(-1)
  upto_eos = np.cumsum(np.cumsum(greedy == vocab.EOS, 1), 1) <= 1  # through the first </s>
  np.testing.assert_array_equal(np.where(upto_eos, forced, -1), np.where(upto_eos, greedy, -1))
  beams = sample(variables, {'source': src}, _key(), max_new_tokens=n, beam_size=3)
  assert beams['tokens'].shape == (2, n)
