"""BART and its denoising objective: published sizes, KV-cache decoding, masks,
causality, and the structure of the text-infilling noise."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import vocab
from arch.sequence import bart, denoise
from arch.task import ConfigError
from train import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Hugging Face transformers 5.23: sum(p.numel() for p in
# BartForConditionalGeneration(BartConfig(vocab_size=50265, max_position_embeddings=1024,
# d_model=..., encoder/decoder_layers=..., *_attention_heads=..., *_ffn_dim=...)).parameters())
# (tied embeddings counted once; the final_logits_bias buffer is not a parameter), built
# locally on the meta device: the facebook/bart-base and facebook/bart-large configs.
HF_PARAMS = {'base': 139_420_416, 'large': 406_291_456}

KEY = jax.random.key(0, impl='rbg')
TINY = dict(bart.TINY, embed_dim=32, mlp_dim=64, num_heads=2)


def tokens(rng, shape, pad_from=None):
  t = np.asarray(jax.random.randint(rng, shape, vocab.NUM_SPECIAL, vocab.BYTE_VOCAB_SIZE))
  if pad_from is not None:
    t = t.copy()
    for row, start in enumerate(pad_from):
      t[row, start:] = vocab.PAD
  return jnp.asarray(t, jnp.int32)


@pytest.mark.parametrize('variant', ['base', 'large'])
def test_parameter_count_equals_hugging_face(variant):
  model = bart.Model(**bart.VARIANTS[variant])
  x = jnp.zeros((1, 8), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), x, x)['params']
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nn.meta.unbox(params)))
  assert n == HF_PARAMS[variant]


@pytest.fixture(scope='module')
def tiny():
  model = bart.Model(**TINY)
  src = tokens(jax.random.key(1), (2, 12), pad_from=[12, 7])
  tgt = tokens(jax.random.key(2), (2, 10))
  variables = jax.jit(model.init)(KEY, src, tgt)
  return model, variables, src, tgt


def test_cached_decoding_equals_teacher_forcing(tiny):
  model, variables, src, tgt = tiny
  full = jax.jit(model.apply)(variables, src, tgt)
  assert full.shape == (2, 10, TINY['vocab_size']) and full.dtype == jnp.float32
  cache = jax.jit(lambda: model.init(KEY, src, tgt, decode=True)['cache'])()
  params = {'params': variables['params']}
  # A prefix of 4 through __call__, then one token at a time through `decode`.
  logits, mut = jax.jit(lambda c: model.apply({**params, 'cache': c}, src, tgt[:, :4],
                                              decode=True, mutable=['cache']))(cache)
  steps = [logits]
  encoded = jax.jit(lambda: model.apply(variables, src, method=bart.Model.encode))()
  assert [x.shape[0] for x in jax.tree.leaves(encoded)] == [2, 2]
  step = jax.jit(lambda c, tok: model.apply({**params, 'cache': c}, tok, encoded, decode=True,
                                            mutable=['cache'], method=bart.Model.decode))
  for i in range(4, 10):
    logits, mut = step(mut['cache'], tgt[:, i:i + 1])
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=2e-5, rtol=2e-5)


def test_source_padding_does_not_change_logits(tiny):
  model, variables, src, tgt = tiny
  longer = jnp.pad(src, ((0, 0), (0, 5)))  # more <pad> on the right
  apply = jax.jit(model.apply)
  np.testing.assert_allclose(apply(variables, longer, tgt), apply(variables, src, tgt),
                             atol=1e-5, rtol=1e-5)


def test_decoder_is_causal_and_encoder_sees_real_source_only(tiny):
  """Jacobians of each target position's logits with respect to the embedded source
  (B, S, D) and decoder input (B, T, D), which replace the shared embedding's lookups."""
  model, variables, src, tgt = tiny
  assert src.shape[1] != tgt.shape[1]  # the interceptor tells the two lookups apart
  shared = nn.meta.unbox(variables['params']['shared']['embedding'])

  def logits_by_position(src_emb, tgt_emb):
    def intercept(next_fun, args, kwargs, context):
      if context.module.name == 'shared' and context.method_name == '__call__':
        return src_emb if args[0].shape == src.shape else tgt_emb
      return next_fun(*args, **kwargs)
    with nn.intercept_methods(intercept):
      return model.apply(variables, src, tgt).sum(axis=(0, 2))  # (T,)

  j_src, j_tgt = jax.jit(jax.jacrev(logits_by_position, argnums=(0, 1)))(
      jnp.take(shared, src, axis=0), jnp.take(shared, tgt, axis=0))
  reach_tgt = np.abs(np.asarray(j_tgt)).sum(-1) > 0  # (T, B, T)
  want = np.arange(10)[None, None, :] <= np.arange(10)[:, None, None]
  np.testing.assert_array_equal(reach_tgt, np.broadcast_to(want, reach_tgt.shape))
  reach_src = np.abs(np.asarray(j_src)).sum(-1) > 0  # (T, B, S)
  np.testing.assert_array_equal(reach_src, np.broadcast_to(np.asarray(src) != vocab.PAD,
                                                           reach_src.shape))


# ------------------------------------------------------------------------- the noise


def windows(b=16, l=96, seed=0):
  """Byte-level windows of text, some ending in padding like a split's last window."""
  text = ('The import statement. Names are bound by assignment!  A class defines a type; '
          'x.y is an attribute.') * 40
  ids = np.frombuffer(text.encode(), np.uint8).astype(np.int32) + vocab.NUM_SPECIAL
  rng = np.random.default_rng(seed)
  out = np.stack([ids[s:s + l] for s in rng.integers(0, len(ids) - l, b)])
  out[0, l // 2:] = vocab.PAD
  out[1, 3:] = vocab.PAD
  return jnp.asarray(out)


def test_infilling_reinserting_the_spans_recovers_the_window():
  t = windows()
  src, info = jax.jit(denoise.corrupt)(jax.random.key(3), t)
  assert src.shape == t.shape
  src, spans, masked, t = map(np.asarray, (src, info['span_lengths'], info['masked'], t))
  for row in range(len(t)):
    n = int((t[row] != vocab.PAD).sum())
    used = spans[row][spans[row] >= 0]
    assert used.sum() == int(np.ceil(0.3 * n)) == masked[row].sum()
    assert (src[row] == vocab.MASK).sum() == len(used)
    # Expand the i-th <mask> into used[i] holes: the kept tokens land exactly where they were.
    rebuilt, i = [], 0
    for tok in src[row][src[row] != vocab.PAD]:
      if tok == vocab.MASK:
        rebuilt += [-1] * used[i]
        i += 1
      else:
        rebuilt.append(tok)
    rebuilt = np.asarray(rebuilt)
    assert len(rebuilt) == n
    np.testing.assert_array_equal(rebuilt == -1, masked[row][:n])
    np.testing.assert_array_equal(rebuilt[rebuilt != -1], t[row][:n][~masked[row][:n]])
    assert (src[row][len(src[row][src[row] != vocab.PAD]):] == vocab.PAD).all()  # left-aligned


def test_infilling_statistics():
  t = windows(b=256, l=128, seed=1)
  src, info = jax.jit(denoise.corrupt)(jax.random.key(4), t)
  real = np.asarray(t != vocab.PAD)
  frac = np.asarray(info['masked']).sum() / real.sum()
  assert 0.30 <= frac < 0.31, frac
  spans = np.asarray(info['span_lengths'])
  whole = spans[:, :-1][(spans[:, :-1] >= 0) & (spans[:, 1:] >= 0)]  # not the cut last one
  assert 2.7 < whole.mean() < 3.3, whole.mean()  # Poisson(3)
  assert 0.02 < (whole == 0).mean() < 0.09  # P(0) = e^-3 = 0.05: a <mask> inserted
  # the source shrinks by about 30% * (1 - 1/3): one <mask> per span
  src_frac = np.asarray(src != vocab.PAD).sum() / real.sum()
  assert 0.75 < src_frac < 0.85, src_frac


def test_infilling_has_static_shapes_and_depends_on_the_key_only_through_values():
  t = windows(b=4, l=64)
  f = jax.jit(lambda r, t: denoise.corrupt(r, t, src_length=80))
  a, _ = f(jax.random.key(0), t)
  b, _ = f(jax.random.key(1), t)
  assert a.shape == b.shape == (4, 80) and f._cache_size() == 1
  assert (a != b).any()
  # Noise is keyed by window content: a row's corruption ignores its place in the batch.
  c, _ = f(jax.random.key(0), t[::-1])
  np.testing.assert_array_equal(c[::-1], a)


def test_sentence_permutation_keeps_the_sentences():
  t = np.asarray(windows(b=10, l=96))[2:].copy()  # rows with text to the end
  full_stop = ord('.') + vocab.NUM_SPECIAL
  for row in t:  # end every window at a full stop, so that each sentence is whole
    row[np.flatnonzero(row == full_stop).max() + 1:] = vocab.PAD
  src, info = jax.jit(lambda r, t: denoise.corrupt(r, t, mask_ratio=0.0, permute_sentences=True))(
      jax.random.key(5), jnp.asarray(t))
  assert not np.asarray(info['masked']).any()
  split = lambda row: sorted(bytes(int(i) - 4 for i in row if i >= 4).replace(
      b'.', b'.\n').splitlines())
  moved = 0
  for before, after in zip(np.asarray(t), np.asarray(src)):
    assert split(before) == split(after)
    moved += (before != after).any()
  assert moved > 0


# ------------------------------------------------------------------------- the task


def config(**task_kwargs):
  c = config_lib.load(os.path.join(REPO, 'configs/bart_pydoc.py:variant=tiny'))
  with c.unlocked():
    c.task_kwargs.update(task_kwargs)
  return c


def test_loss_and_grad_step_is_finite_and_eval_is_deterministic():
  task = denoise.make(config())
  batch = {'tokens': windows(b=4, l=128)}
  assert task.example_batch(4)['tokens'].shape == (4, 128)
  variables = jax.jit(task.init)(KEY, batch)
  (value, (metrics, _)), grads = jax.jit(jax.value_and_grad(task.loss, has_aux=True))(
      variables, batch, jax.random.key(0))
  assert np.isfinite(value) and value > 0
  assert set(metrics) >= {'loss', 'token_accuracy'}
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert any(np.abs(g).sum() > 0 for g in jax.tree.leaves(grads))
  evaluate = jax.jit(task.evaluate)
  e1, e2 = evaluate(variables, batch), evaluate(variables, batch)
  jax.tree.map(np.testing.assert_array_equal, e1, e2)
  assert e1['nll'].shape == (4,)
  out = task.finalize_eval(jax.tree.map(lambda x: x.sum(), e1), 4.0)
  assert 0 <= out['token_accuracy'] <= 1 and np.isfinite(out['loss'])


@pytest.mark.parametrize('kwargs, match', [
    (dict(mask_ratio=1.5), 'mask_ratio'),
    (dict(poisson_lambda=0.0), 'poisson_lambda'),
    (dict(src_length=4096), 'max_length'),
    (dict(span=3), 'unknown'),
])
def test_inconsistent_configs_fail_clearly(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    denoise.make(config(**kwargs))


def test_loss_reads_the_original_shifted_right_behind_bos_and_scores_every_real_token():
  """The task's loss equals cross-entropy of model(corrupt(window), <s> + window[:-1])
  against the whole window (padding excluded), with the noise key the loss derives."""
  t = windows(b=4, l=128)
  np.testing.assert_array_equal(denoise.shift_right(t)[:, 0], vocab.BOS)
  np.testing.assert_array_equal(denoise.shift_right(t)[:, 1:], t[:, :-1])
  task = denoise.make(config())
  variables = jax.jit(task.init)(KEY, {'tokens': t})
  rng = jax.random.key(7)
  value, (metrics, _) = jax.jit(task.loss)(variables, {'tokens': t}, rng)
  src, info = denoise.corrupt(jax.random.split(rng)[0], t)
  model = bart.Model(**config().model)
  logits = model.apply(variables, src, denoise.shift_right(t))
  w = np.asarray(t != vocab.PAD, np.float32)
  logp = jax.nn.log_softmax(logits)
  nll = -np.take_along_axis(np.asarray(logp), np.asarray(t)[..., None], -1)[..., 0]
  np.testing.assert_allclose(value, (nll * w).sum() / w.sum(), rtol=1e-5)
  right = np.asarray(logits.argmax(-1) == t) * w
  masked = np.asarray(info['masked']) * w
  np.testing.assert_allclose(metrics['masked_token_accuracy'],
                             (right * masked).sum() / masked.sum(), rtol=1e-6)
  # eval splits the accuracy: the tokens the source lacks and the ones it keeps
  sums = jax.tree.map(lambda x: x.sum(), jax.jit(task.evaluate)(variables, {'tokens': t}))
  out = task.finalize_eval(sums, 4.0)
  src, info = denoise.corrupt(jax.random.key(denoise.EVAL_SEED), t)
  logits = model.apply(variables, src, denoise.shift_right(t))
  right = np.asarray(logits.argmax(-1) == t) * w
  masked = np.asarray(info['masked']) * w
  np.testing.assert_allclose(out['masked_token_accuracy'],
                             (right * masked).sum() / masked.sum(), rtol=1e-6)
  np.testing.assert_allclose(out['unmasked_token_accuracy'],
                             (right * (w - masked)).sum() / (w - masked).sum(), rtol=1e-6)


def test_sampler_shows_the_corrupted_source_and_decodes_from_it():
  from train import sample as sample_lib
  from train.text import ByteTokenizer
  task = denoise.make(config())
  tok = ByteTokenizer()
  t = windows(b=2, l=128)
  variables = jax.jit(task.init)(KEY, {'tokens': t})
  given = tok.encode('The <mask> statement.')
  plain = tok.encode('Names are bound by assignment; a class defines a type.')
  batch = task.prompt_batch([given, plain], 2)
  assert batch['tokens'].shape == (2, 128)
  assert list(batch['tokens'][0][:6]) == tok.encode('The ') + [vocab.MASK] + tok.encode(' ')
  fn = jax.jit(lambda v, b, r: task.sample(v, b, r, max_new_tokens=16))
  out = fn(variables, batch, jax.random.key(0))
  assert out['tokens'].shape == (2, 16) and out['source'].shape == (2, 128)
  # a passage with a <mask> is the source as it is; a plain one gets the training noise
  np.testing.assert_array_equal(out['source'][0], batch['tokens'][0])
  want, _ = denoise.corrupt(jax.random.key(0), jnp.asarray(batch['tokens']))
  np.testing.assert_array_equal(out['source'][1], want[1])
  assert (np.asarray(out['source'][1]) == vocab.MASK).any()
  assert sample_lib.show_source(tok, out['source'][0]) == 'The <mask> statement.'
  # with row ids (as train.sample passes them), samples of one passage get their own noise
  rows = {'tokens': np.repeat(batch['tokens'][1:], 2, 0)}
  by_row = jax.jit(lambda v, b, r, i: task.sample(v, b, r, max_new_tokens=4, row_ids=i))
  a = by_row(variables, rows, jax.random.key(0), jnp.array([0, 1]))['source']
  b = by_row(variables, rows, jax.random.key(0), jnp.array([1, 0]))['source']
  assert (a[0] != a[1]).any()
  np.testing.assert_array_equal(a[::-1], b)
  # with no prompt, eval window j is the passage
  ex = {'tokens': np.asarray(t)}
  np.testing.assert_array_equal(task.prompt_batch([[], []], 2, examples=ex)['tokens'], t)
  with pytest.raises(ConfigError, match='--prompt'):
    task.prompt_batch([[]], 1)


def test_config_trains_and_resumes_exactly(tmp_path, data_dir):
  from conftest import check_resumes_alike, train_spec
  run = dict(total_steps=4, ckpt_every=2, log_every=1, eval_every=4, batch_size=4)
  train = lambda workdir, **kw: train_spec('bart_pydoc.py:variant=tiny', workdir, data_dir,
                                           **{**run, **kw})
  final = train(tmp_path / 'straight')
  assert set(final) >= {'loss', 'masked_token_accuracy', 'unmasked_token_accuracy'}
  check_resumes_alike('bart_pydoc.py:variant=tiny', train, tmp_path,
                      must_have=('loss', 'masked_token_accuracy'), batch_size=4)
