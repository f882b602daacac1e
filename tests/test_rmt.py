"""Recurrent Memory Transformer (arch/sequence/rmt.py) and the `recall` dataset: the
attention layout, memory carrying information across segments (and nothing without it),
the scan over segments against an unrolled computation and against GPT, truncated BPTT,
the answer-scored objective, the dataset's answers, the sampler (its continuation against
the network's argmax, the words tokenizer) and the tiny config trained through the loop
with an exact resume and sampled alike on 1 and 8 devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from arch.layers.transformer import Block
from arch.sequence import gpt, rmt
from arch.task import ConfigError
from conftest import check_resumes_from_step_2, load_config, run_sample, train_spec
from train.datasets import recall

T = 8  # segment length of the small models below
SMALL = dict(vocab_size=recall.VOCAB_SIZE, segment_length=T, num_layers=2, num_heads=2,
             embed_dim=16)


def _tokens(b=2, n=3, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(1, recall.VOCAB_SIZE, (b, n * T)),
                     jnp.int32)


def _init(model, tokens):
  return jax.jit(model.init)(jax.random.key(0), tokens)


def test_memory_mask_by_hand():
  """M=2, T=3: rows are queries over [r r | x x x | w w]."""
  want = np.array([[1, 1, 0, 0, 0, 0, 0],
                   [1, 1, 0, 0, 0, 0, 0],
                   [1, 1, 1, 0, 0, 0, 0],
                   [1, 1, 1, 1, 0, 0, 0],
                   [1, 1, 1, 1, 1, 0, 0],
                   [1, 1, 1, 1, 1, 1, 1],
                   [1, 1, 1, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(rmt.memory_mask(2, 3)[0, 0], want)
  np.testing.assert_array_equal(rmt.memory_mask(0, 3)[0, 0], np.tril(np.ones((3, 3), bool)))


@pytest.mark.parametrize('num_memory', [0, 3])
def test_memory_carries_information_across_segments(num_memory):
  """Changing the first segment changes the last segment's logits with memory and leaves
  them bitwise unchanged without; either way the model is causal over the whole sequence
  (a change at position p leaves every logit before p unchanged)."""
  model = rmt.Model(**SMALL, num_memory=num_memory)
  tokens = _tokens()
  variables = _init(model, tokens)
  apply = jax.jit(model.apply)
  base = np.asarray(apply(variables, tokens))
  assert base.shape == (2, 3 * T, recall.VOCAB_SIZE) and base.dtype == np.float32
  first = np.asarray(apply(variables, tokens.at[:, :T].set((tokens[:, :T] + 7) % 40 + 1)))
  np.testing.assert_array_equal(first[:, :T] != base[:, :T], True)  # its own segment
  if num_memory:
    assert np.abs(first[:, 2 * T:] - base[:, 2 * T:]).max(-1).min() > 1e-6
  else:
    np.testing.assert_array_equal(first[:, T:], base[:, T:])
  p = T + 3  # a token inside the second segment
  later = np.asarray(apply(variables, tokens.at[:, p].set(tokens[:, p] % 40 + 2)))
  np.testing.assert_array_equal(later[:, :p], base[:, :p])
  assert np.abs(later[:, p] - base[:, p]).max(-1).min() > 1e-6


def _unrolled(variables, tokens_BL, m):
  """The same model computed directly: a Python loop over segments through each block's
  own apply, with the layout, positions, mask and memory hand-off written out."""
  p = nn.meta.unbox(variables)['params']
  seg = p['segment']
  b, l = tokens_BL.shape
  mask = np.zeros((2 * m + T, 2 * m + T), bool)
  for i in range(2 * m + T):
    for j in range(2 * m + T):
      mask[i, j] = j <= i or j < m or (i >= m + T and j >= m + T)
  block = Block(SMALL['num_heads'], 4 * SMALL['embed_dim'], activation='gelu_tanh')
  mem = jnp.broadcast_to(p['memory'], (b, m, SMALL['embed_dim']))
  wte = seg['wte']['embedding']
  out = []
  for s in range(l // T):
    x = jnp.concatenate([mem, wte[tokens_BL[:, s * T:(s + 1) * T]], mem], 1)
    x = x + seg['wpe']['embedding'][None]
    for i in range(SMALL['num_layers']):
      x = block.apply({'params': seg[f'h{i}']}, x, self_mask=mask[None, None])
    h = nn.LayerNorm(epsilon=1e-5).apply({'params': seg['ln_f']}, x[:, m:m + T])
    out.append(h @ wte.T)
    mem = x[:, m + T:]  # the write slots' residual stream, before the final norm
  return jnp.concatenate(out, 1)


def test_scan_equals_an_unrolled_computation():
  model = rmt.Model(**SMALL, num_memory=3)
  tokens = _tokens(n=4)
  variables = _init(model, tokens)
  np.testing.assert_allclose(jax.jit(model.apply)(variables, tokens),
                             jax.jit(_unrolled, static_argnums=2)(variables, tokens, 3),
                             rtol=1e-4, atol=1e-5)


def test_without_memory_each_segment_is_gpt_on_that_segment():
  """num_memory=0 with GPT's parameters (the same names) gives GPT's logits for each
  segment read alone."""
  model = rmt.Model(**SMALL, num_memory=0)
  tokens = _tokens(n=3)
  variables = _init(model, tokens)
  ref = gpt.Model(vocab_size=SMALL['vocab_size'], num_layers=2, num_heads=2, embed_dim=16,
                  max_length=T)
  gpt_vars = {'params': variables['params']['segment']}
  want = jnp.concatenate([ref.apply(gpt_vars, tokens[:, s * T:(s + 1) * T])
                          for s in range(3)], 1)
  np.testing.assert_allclose(jax.jit(model.apply)(variables, tokens), want, rtol=1e-4,
                             atol=1e-5)


def test_truncated_bptt_stops_gradients_into_older_segments():
  """The last segment's loss reaches the learned initial memory through all 3 segments by
  default and not with bptt_segments=2 (the memory read by segment 1 is cut); the forward
  pass is the same."""
  tokens = _tokens(n=3)
  small = dict(SMALL, num_layers=1)
  variables = _init(rmt.Model(**small, num_memory=2), tokens)
  out = {}
  for k in (0, 2):
    model = rmt.Model(**small, num_memory=2, bptt_segments=k)

    def last_loss(params, model=model):
      logits = model.apply({'params': params}, tokens)[:, -T:]
      return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, -T:]).mean()
    loss, grads = jax.jit(jax.value_and_grad(last_loss))(variables['params'])
    out[k] = loss, nn.meta.unbox(grads)
  assert out[2][0] == out[0][0]
  assert np.abs(out[0][1]['memory']).max() > 1e-8
  np.testing.assert_array_equal(out[2][1]['memory'], 0.0)
  assert np.abs(out[2][1]['segment']['wte']['embedding']).max() > 1e-8


def test_objective_scores_only_the_answers():
  """The task's loss and eval sums equal cross-entropy and accuracy over targets >= 0,
  computed from the network's logits directly."""
  from train import core
  config = load_config('rmt_recall.py:tiny', model__dropout_rate=0.0)
  task = core.load_task(config)
  data = recall.examples(4, 7)
  batch = jax.tree.map(jnp.asarray, data)
  variables = jax.jit(task.init)(jax.random.key(0), batch)
  model = rmt.Model(**config.model)
  logits = np.asarray(jax.jit(model.apply)(variables, batch['tokens']), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  rows, cols = np.nonzero(data['targets'] >= 0)
  labels = data['targets'][rows, cols]
  assert len(rows) == 4 * recall.NUM_PAIRS
  loss, (metrics, _) = jax.jit(task.loss)(variables, batch, jax.random.key(1))
  assert metrics['loss'] == loss
  np.testing.assert_allclose(loss, -logp[rows, cols, labels].mean(), rtol=1e-5)
  right = logits[rows, cols].argmax(-1) == labels
  sums = jax.jit(task.evaluate)(variables, batch)
  np.testing.assert_array_equal(sums['answers'], [recall.NUM_PAIRS] * 4)
  np.testing.assert_array_equal(sums['correct'], np.bincount(rows, right, minlength=4))
  summed = {k: np.asarray(v).sum() for k, v in sums.items()}
  out = task.finalize_eval(summed, 4)
  np.testing.assert_allclose(out['accuracy'], right.mean(), rtol=1e-6)
  np.testing.assert_allclose(out['loss'], -logp[rows, cols, labels].mean(), rtol=1e-5)


def _check_examples(tokens, targets):
  """Every example's scored positions answer its queries from its first segment."""
  t, n, k = recall.SEGMENT_LENGTH, recall.NUM_SEGMENTS, recall.NUM_PAIRS
  noise = lambda x: (x >= recall.FIRST_NOISE) & (x < recall.VOCAB_SIZE)
  for tok, tgt in zip(tokens, targets):
    pairs = {int(tok[2 * i]): int(tok[2 * i + 1]) for i in range(k)}
    assert len(pairs) == k  # distinct keys
    assert all(recall.FIRST_KEY <= key < recall.FIRST_VALUE for key in pairs)
    assert all(recall.FIRST_VALUE <= v < recall.FIRST_NOISE for v in pairs.values())
    assert noise(tok[2 * k:t]).all() and noise(tok[t:(n - 1) * t]).all()
    (scored,) = np.nonzero(tgt >= 0)
    assert len(scored) == k and scored.min() >= (n - 1) * t
    assert sorted(int(tok[p]) for p in scored) == sorted(pairs)  # each key asked once
    for p in scored:
      assert tok[p - 1] == recall.QUERY
      assert tgt[p] == pairs[int(tok[p])] == tok[p + 1]
    assert noise(np.delete(tok[(n - 1) * t:], np.r_[scored - 1, scored, scored + 1]
                           - (n - 1) * t)).all()


def test_recall_dataset_answers_are_right(data_dir):
  """The prepared splits are the seeded draws, and every answer, recomputed from the
  stored tokens, is the value its key was paired with in the first segment."""
  from train import data
  builder = data.builder('recall', data_dir)
  for split, (count, seed) in recall.SPLITS.items():
    src = builder.as_data_source(split)
    assert len(src) == count
    want = recall.examples(count, seed)
    drawn = {np.concatenate([t, g]).tobytes() for t, g in zip(want['tokens'], want['targets'])}
    got = [src[i] for i in range(min(count, 2000))]  # TFDS stores them in its own order
    tokens = np.stack([g['tokens'] for g in got])
    targets = np.stack([g['targets'] for g in got])
    assert all(np.concatenate([t, g]).tobytes() in drawn for t, g in zip(tokens, targets))
    assert len({t.tobytes() for t in tokens}) > 0.99 * len(tokens)
    _check_examples(tokens[:300], targets[:300])
  test = recall.examples(2000, recall.SPLITS['test'][1])['targets']
  values = test[test >= 0] - recall.FIRST_VALUE
  counts = np.bincount(values, minlength=recall.NUM_VALUES)
  assert counts.min() > 0.6 * len(values) / recall.NUM_VALUES  # uniform: chance is 1/16
  assert not np.array_equal(recall.examples(5, 1)['tokens'], recall.examples(5, 2)['tokens'])


def test_recall_words_round_trip_and_refuse_unknown_words():
  from train import text
  tok = text.tokenizer(load_config('rmt_recall.py:tiny'), kind='words')
  ids = tok.encode(' k3 v7  n0 ? k3')
  assert ids == [recall.FIRST_KEY + 3, recall.FIRST_VALUE + 7, recall.FIRST_NOISE, recall.QUERY,
                 recall.FIRST_KEY + 3]
  assert tok.decode(ids) == ' k3 v7 n0 ? k3' and tok.decode([0, ids[0], 0]) == ' k3'
  assert [tok.encode(w)[0] for w in recall.WORDS[1:]] == list(range(1, recall.VOCAB_SIZE))
  with pytest.raises(ValueError, match='<pad>, k16, x not in the recall vocabulary'):
    tok.encode('k3 x k16 <pad>')


def test_sampler_continues_with_the_networks_choices_across_a_segment():
  """Greedy tokens after a 13-token prompt, 6 of them (into the next segment of 8), each
  the argmax of the network over the sequence so far padded with another token than the
  sampler's: padding after a position changes nothing. An eval example's prompt ends at
  its queried key."""
  config = load_config('rmt_recall.py:tiny', model__segment_length=T)
  task = rmt.make(config)
  prompt = np.asarray(_tokens(b=2, n=2, seed=3))[:, :13]
  variables = jax.jit(task.init)(jax.random.key(1), {'tokens': jnp.asarray(prompt[:, :8])})
  got = jax.jit(lambda v, b: task.sample(v, b, jax.random.key(0), max_new_tokens=6,
                                         temperature=0.0))(variables, {'prompt': prompt})
  np.testing.assert_array_equal(got['prompt'], prompt)
  model = rmt.Model(**config.model)
  seq = prompt
  for i in range(6):
    padded = np.full((2, 24), recall.FIRST_NOISE + 5, np.int32)
    padded[:, :seq.shape[1]] = seq
    logits = model.apply(variables, jnp.asarray(padded))
    nxt = np.asarray(logits[:, seq.shape[1] - 1].argmax(-1))
    np.testing.assert_array_equal(got['tokens'][:, i], nxt)
    seq = np.concatenate([seq, nxt[:, None]], 1)
  data = recall.examples(3, 3)
  batch = task.prompt_batch([[]] * 3, 3, examples=data)
  first = (data['targets'][0] >= 0).argmax()
  assert batch['prompt'].shape == (3, first + 1)
  assert (batch['prompt'][:, -1] >= recall.FIRST_KEY).all()
  assert (batch['prompt'][:, -2] == recall.QUERY).all()
  with pytest.raises(ConfigError, match='same, nonzero length'):
    task.prompt_batch([[2, 3], [2]], 2, examples=data)


_train = train_spec


@pytest.mark.parametrize('spec', ['rmt_recall.py:tiny', 'rmt_recall.py:tiny,memory=0'])
def test_tiny_config_trains_and_resumes_exactly(spec, tmp_path, data_dir):
  """4 steps (dropout on) with checkpoints at 2 and 4, evaluated over the test split's
  answers; the step-2 checkpoint alone resumes bitwise (conftest)."""
  result = _train(spec, tmp_path / 'straight', data_dir)
  assert 0 <= result['accuracy'] <= 1 and np.isfinite(result['loss'])
  assert result['answers'] == recall.SPLITS['test'][0] * recall.NUM_PAIRS
  check_resumes_from_step_2(spec, _train, tmp_path, data_dir)
  if 'memory=0' in spec:
    return
  # train.sample: the test examples up to their query, then the greedy answer, in words;
  # the same text on 8 devices
  args = ['--config', f'configs/{spec}', '--workdir', tmp_path / 'straight', '--num_samples',
          '3']
  one, eight = run_sample(args, data_dir), run_sample(args, data_dir, devices=8)
  assert one.returncode == 0 and eight.returncode == 0, (one.stderr + eight.stderr)[-3000:]
  assert one.stdout == eight.stdout
  from train import core, sample
  config = load_config(spec, data__data_dir=data_dir)
  test = sample.eval_examples(config, core.load_task(config), 3)  # the split's first rows
  bodies = one.stdout.split('--- sample')[1:]
  assert len(bodies) == 3
  for body, tokens in zip(bodies, test['tokens']):
    words = body.split('---\n', 1)[1].split()
    assert words[:-1] == [recall.WORDS[int(i)] for i in tokens[:-1]]
    assert words[-1] in recall.WORDS[1:]
  bad = run_sample([*args, '--prompt', 'k3 v7 z'], data_dir)
  assert bad.returncode == 2 and 'z not in the recall vocabulary' in bad.stderr
