"""ProphetNet (arch/sequence/prophetnet.py): what each stream sees (through the Jacobian),
the future n-gram loss against a direct computation, cached decoding against the
teacher-forced decoder, the published parameter count and the config's exact resume."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import vocab
from arch.sequence import mass, prophetnet, seq2seq
from arch.task import ConfigError
from conftest import check_resumes_alike, load_config, train_spec

SPEC = 'prophetnet_pydoc.py'
TINY_RUN = dict(total_steps=4, ckpt_every=2, log_every=1, eval_every=4, batch_size=4,
                model__num_heads=1, model__embed_dim=16, model__mlp_dim=32)
S, T = 6, 9  # source and target lengths (different: the embedding intercept tells them apart)


def small_model(ngram=3):
  return prophetnet.Model(vocab_size=40, num_encoder_layers=1, num_decoder_layers=2,
                          num_heads=2, embed_dim=16, mlp_dim=32, max_positions=T + 3,
                          ngram=ngram, num_buckets=8, relative_max_distance=16)


def tokens(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).integers(vocab.NUM_SPECIAL, 40, shape),
                     jnp.int32)


def test_each_stream_sees_only_the_main_states_before_it():
  """d(stream g at t) / d(decoder input embedding at c) != 0 exactly where stream g may
  look: the main stream at c <= t; predicting stream s at c <= t - s + 1 and c = 0."""
  model = small_model(ngram=3)
  src, tgt = tokens((1, S), 0), tokens((1, T), 1)
  variables = jax.jit(model.init)(jax.random.key(0), src, tgt)
  d = model.embed_dim

  def streams(delta_TD):
    def add(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if (context.method_name == '__call__' and isinstance(context.module, nn.Embed)
          and args[0].shape == (1, T)):
        out = out + delta_TD
      return out
    with nn.intercept_methods(add):
      return model.apply(variables, src, tgt,
                         method=lambda m, s, t: m.streams(t, m.encode(s)))[0]

  jac = jax.jit(jax.jacfwd(streams))(jnp.zeros((T, d)))  # (G, T, D, T, D)
  reach = np.abs(np.asarray(jac)).sum((2, 4)) > 0  # (G, T, T): query t, input position c
  t_, c_ = np.arange(T)[:, None], np.arange(T)[None, :]
  np.testing.assert_array_equal(reach[0], c_ <= t_)
  for s in range(1, 4):
    np.testing.assert_array_equal(reach[s], (c_ <= t_ - s + 1) | (c_ == 0), err_msg=f'{s}')


def test_main_stream_is_a_causal_decoder_and_decoding_matches_teacher_forcing():
  model = small_model(ngram=2)
  src, tgt = tokens((2, S), 2), tokens((2, T), 3)
  variables = jax.jit(model.init)(jax.random.key(1), src, tgt)
  main = jax.jit(lambda k: model.apply(
      variables, src, tgt, method=lambda m, s, t: m.streams(t, m.encode(s), num_streams=k)),
      static_argnums=0)
  # The main stream never reads the predicting streams: alone it is the same decoder.
  np.testing.assert_allclose(main(0)[:, 0], main(2)[:, 0], rtol=0, atol=1e-6)

  # Cached decoding (main stream + first predicting stream), a 3-token prefix whole and
  # the rest one at a time, gives the teacher-forced next-token logits.
  full, ngram = jax.jit(lambda v: (model.apply(v, src, tgt), model.apply(
      v, src, tgt, method=prophetnet.Model.ngram_logits)))(variables)
  np.testing.assert_allclose(full, ngram[:, 0], rtol=0, atol=1e-6)
  cache = jax.eval_shape(lambda: model.init(jax.random.key(0), src, tgt, decode=True))
  cache = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), cache['cache'])
  encoded = jax.jit(lambda v: model.apply(v, src, method=prophetnet.Model.encode))(variables)
  step = jax.jit(lambda cache, chunk: model.apply(
      {**variables, 'cache': cache}, chunk, encoded, decode=True, mutable=['cache'],
      method=prophetnet.Model.decode))
  got = []
  for lo, hi in [(0, 3)] + [(i, i + 1) for i in range(3, T)]:
    logits, mutated = step(cache, tgt[:, lo:hi])
    cache = mutated['cache']
    got.append(logits)
  np.testing.assert_allclose(jnp.concatenate(got, 1), full, rtol=0, atol=2e-5)

  # seq2seq's greedy decoding runs on it: each token is the argmax of the teacher-forced
  # logits of the decoded prefix.
  out = seq2seq.decode_source(model, variables, src, jax.random.key(0), max_new_tokens=T,
                              temperature=0.0)
  forced = jax.jit(model.apply)(variables, src, seq2seq.shift_right(out))
  np.testing.assert_array_equal(np.asarray(forced.argmax(-1)), np.asarray(out))


def test_ngram_loss_is_the_weighted_streams_nll_over_the_fragment():
  config = load_config(SPEC, task_kwargs__gamma=0.5)
  task = prophetnet.make(config)
  t = tokens((3, 128), 4)
  t = t.at[2, 100:].set(vocab.PAD)
  variables = jax.jit(task.init)(jax.random.key(0), {'tokens': t})
  rng = jax.random.key(7)
  loss, (metrics, _) = jax.jit(task.loss)(variables, {'tokens': t}, rng)

  # Direct: the MASS noise of the same key, both streams' logits, numpy log-softmax.
  src, dec_in, frag = mass.corrupt(jax.random.split(rng)[0], t, vocab_size=260)
  model = prophetnet.Model(**config.model)
  logits = np.asarray(jax.jit(lambda v: model.apply(
      v, src, dec_in, method=prophetnet.Model.ngram_logits))(variables), np.float64)
  t, frag = np.asarray(t), np.asarray(frag)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                                                           keepdims=True)) \
      - logits.max(-1, keepdims=True)
  per_stream = []
  for s in range(2):
    nll = [-logp[b, s, i, t[b, i]] for b in range(3) for i in range(128) if frag[b, i]]
    per_stream.append(np.mean(nll))
  want = (2 / 3) * per_stream[0] + (1 / 3) * per_stream[1]  # gamma 0.5: alpha = 2/3, 1/3
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['loss_stream_1']), per_stream[0], rtol=1e-5)
  np.testing.assert_allclose(float(metrics['loss_stream_2']), per_stream[1], rtol=1e-5)
  acc = np.mean([logits[b, 0, i].argmax() == t[b, i] for b in range(3) for i in range(128)
                 if frag[b, i]])
  np.testing.assert_allclose(float(metrics['token_accuracy']), acc, rtol=1e-6)


def test_large_variant_has_hugging_faces_parameter_count():
  """microsoft/prophetnet-large-uncased: ProphetNetForConditionalGeneration with random
  weights counts 391,321,600 parameters (transformers 5.25, tied embedding once)."""
  config = load_config(SPEC + ':variant=large')
  model = prophetnet.Model(**config.model)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                                             jnp.zeros((1, 8), jnp.int32)))
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)) == 391_321_600


@pytest.mark.parametrize('kwargs, match', [
    (dict(gamma=0.0), 'gamma'),
    (dict(fragment_ratio=1.5), 'fragment_ratio'),
    (dict(ngram=2), 'unknown'),
])
def test_inconsistent_configs_fail_clearly(kwargs, match):
  config = load_config(SPEC)
  with config.unlocked():
    config.task_kwargs.update(kwargs)
  with pytest.raises(ConfigError, match=match):
    prophetnet.make(config)


def test_config_trains_and_resumes_exactly(tmp_path, data_dir):
  train = lambda workdir, **kw: train_spec(SPEC, workdir, data_dir, **{**TINY_RUN, **kw})
  final = train(tmp_path / 'straight')
  assert set(final) >= {'loss', 'token_accuracy', 'future_accuracy', 'perplexity'}
  straight, _, _ = check_resumes_alike(SPEC, train, tmp_path,
                                       must_have=('loss', 'loss_stream_2', 'future_accuracy'),
                                       **{k: v for k, v in TINY_RUN.items()
                                          if k.startswith('model__') or k == 'batch_size'})
  assert all(0.45 < straight[s]['fragment_fraction'] < 0.55 for s in straight)
