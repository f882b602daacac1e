"""BERT (arch/sequence/bert.py) and the masked-LM + NSP objective (arch/sequence/mlm.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import vocab
from arch.sequence import bert, mlm
from arch.task import ConfigError
from train import config_lib, summary

# Hugging Face transformers 5.23 (torch), no weights downloaded:
#   m = BertForPreTraining(BertConfig(vocab_size=30522, max_position_embeddings=512,
#                                     type_vocab_size=2, **size))
#   sum(p.numel() for p in m.parameters())   # the tied decoder weight counted once
# with size = {} for base and hidden_size=1024, num_hidden_layers=24,
# num_attention_heads=16, intermediate_size=4096 for large.
HF_PARAMS = {'base': 110_106_428, 'large': 336_226_108}

RNG = jax.random.key(0, impl='rbg')
V = vocab.BYTE_VOCAB_SIZE


def tiny_config(**task_kwargs):
  c = config_lib.load('configs/bert_pydoc.py')
  with c.unlocked():
    c.model = dict(bert.TINY)
    c.data.pack = 32
    c.task_kwargs = dict(c.task_kwargs, **task_kwargs)
  return c


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(tree)))


@pytest.mark.parametrize('variant', ['base', 'large'])
def test_summary_counts_equal_hugging_face(variant):
  variables = summary.param_shapes(config_lib.load(f'configs/bert_pydoc.py:variant={variant}'))
  assert count(variables['params']) == HF_PARAMS[variant]


def test_padding_does_not_change_real_positions():
  model = bert.Model(**bert.TINY)
  tokens = jax.random.randint(jax.random.key(1), (2, 10), vocab.NUM_SPECIAL, V)
  types = jnp.broadcast_to((jnp.arange(10) >= 5).astype(jnp.int32), (2, 10))
  padded = jnp.pad(tokens, ((0, 0), (0, 6)))  # id 0 = PAD
  padded_types = jnp.pad(types, ((0, 0), (0, 6)), constant_values=1)
  variables = model.init(RNG, padded)
  out = model.apply(variables, tokens, token_types_BT=types)
  out_pad = model.apply(variables, padded, token_types_BT=padded_types)
  assert out['mlm_logits'].shape == (2, 10, V) and out['nsp_logits'].shape == (2, 2)
  assert out['mlm_logits'].dtype == jnp.float32
  np.testing.assert_allclose(out_pad['mlm_logits'][:, :10], out['mlm_logits'], atol=1e-5)
  np.testing.assert_allclose(out_pad['nsp_logits'], out['nsp_logits'], atol=1e-5)
  # ... while a real token in those slots does change them (the mask is what protects them).
  other = model.apply(variables, padded.at[:, 12].set(50), token_types_BT=padded_types)
  assert not np.allclose(other['mlm_logits'][:, :10], out['mlm_logits'], atol=1e-5)


def test_masking_is_80_10_10_of_15_percent_and_skips_specials():
  n, length = 2000, 128
  rows = np.asarray(jax.random.randint(jax.random.key(2), (n, length), vocab.NUM_SPECIAL, V))
  specials = np.random.default_rng(0).random((n, length)) < 0.1
  rows = np.where(specials, np.random.default_rng(1).integers(0, vocab.NUM_SPECIAL,
                                                              (n, length)), rows)
  inputs, chosen = jax.vmap(lambda r, k: mlm.mask_tokens(r, k, vocab_size=V))(
      jnp.asarray(rows, jnp.int32), jax.random.split(jax.random.key(3), n))
  inputs, chosen = np.asarray(inputs), np.asarray(chosen)
  maskable = rows >= vocab.NUM_SPECIAL
  assert not (chosen & ~maskable).any()  # specials and padding are never targets
  np.testing.assert_array_equal(chosen.sum(1), np.round(0.15 * maskable.sum(1)))
  np.testing.assert_array_equal(inputs[~chosen], rows[~chosen])  # the rest is untouched
  picked_in, picked = inputs[chosen], rows[chosen]
  masked = picked_in == vocab.MASK
  replaced = ~masked & (picked_in != picked)
  kept = picked_in == picked
  total = chosen.sum()  # about 36,000 targets: these fractions are good to about +-0.005
  assert abs(masked.mean() - 0.8) < 0.01
  # a random id equals the original 1 time in 256
  assert abs(replaced.mean() - 0.1 * (1 - 1 / 256)) < 0.01
  assert abs(kept.mean() - (0.1 + 0.1 / 256)) < 0.01
  assert total > 30_000
  assert (picked_in[replaced] >= vocab.NUM_SPECIAL).all() and (picked_in[replaced] < V).all()


def test_nsp_pairs_and_labels():
  b, length = 64, 32
  h = length // 2
  windows = jax.random.randint(jax.random.key(4), (b, length), vocab.NUM_SPECIAL, V)
  windows = windows.at[5].set(windows[4])  # row 5's partner is identical: never "not next"
  windows = windows.at[9].set(0)  # an all-pad row (eval padding): never used as a B
  inputs, types, seq, chosen, labels = mlm.pretraining_inputs(
      windows, jax.random.split(jax.random.key(5), b), vocab_size=V)
  seq, windows, labels = np.asarray(seq), np.asarray(windows), np.asarray(labels)
  assert seq.shape == (b, length)
  assert (seq[:, 0] == vocab.BOS).all() and (seq[:, h - 1] == vocab.EOS).all()
  assert (seq[:, -1] == vocab.EOS).all()
  np.testing.assert_array_equal(seq[:, 1:h - 1], windows[:, 2:h])  # A: the window's own
  np.testing.assert_array_equal(np.asarray(types), np.broadcast_to(np.arange(length) >= h,
                                                                   (b, length)))
  partner = np.roll(windows, 1, axis=0)
  own_b, partner_b, got_b = windows[:, h:-1], partner[:, h:-1], seq[:, h:-1]
  from_partner = (got_b == partner_b).all(1) & (got_b != own_b).any(1)
  from_own = (got_b == own_b).all(1)
  assert (from_partner | from_own).all()
  np.testing.assert_array_equal(labels, from_partner.astype(int))
  assert labels[5] == 0 and labels[10] == 0  # identical partner; all-pad partner (row 9)
  assert 16 < labels.sum() < 48  # a fair coin over 64 rows
  # masking happens after the layout: the special tokens it added stay
  inputs = np.asarray(inputs)
  assert (inputs[:, [0, h - 1, length - 1]] == seq[:, [0, h - 1, length - 1]]).all()


@pytest.fixture(scope='module')
def tiny_task():
  """The tiny task, its variables and its jitted loss gradient (compiled once)."""
  task = mlm.make(tiny_config())
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in task.example_batch(4).items()}
  variables = nn.meta.unbox(task.init(RNG, batch))
  return task, variables, jax.jit(jax.value_and_grad(task.loss, has_aux=True))


def test_loss_step_is_finite_and_learns_something(tiny_task):
  task, variables, grad_fn = tiny_task
  batch = {'tokens': jax.random.randint(jax.random.key(6), (4, 32), 0, V, jnp.int32)}
  assert task.example_batch(4)['tokens'].shape == (4, 32)
  (loss, (metrics, extra)), grads = grad_fn(variables, batch, jax.random.key(7))
  assert set(metrics) >= {'loss', 'mlm_loss', 'mlm_accuracy', 'nsp_loss', 'nsp_accuracy'}
  assert np.isfinite(float(loss)) and extra == {}
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  np.testing.assert_allclose(loss, metrics['mlm_loss'] + metrics['nsp_loss'], rtol=1e-6)
  assert abs(float(metrics['mlm_loss']) - np.log(V)) < 1.0  # near uniform at init
  params = jax.tree.map(lambda p, g: p - 0.1 * g, variables['params'], grads['params'])
  (loss2, _), _ = grad_fn({'params': params}, batch, jax.random.key(7))
  assert loss2 < loss


def test_mlm_gradient_reaches_the_tied_embedding_rows_of_absent_ids(tiny_task):
  task, variables, grad_fn = tiny_task
  assert set(variables['params']) >= {'word_embeddings', 'mlm_bias'}
  assert not any('kernel' in str(p) and s.shape[-1] == V  # no separate output projection
                 for p, s in jax.tree_util.tree_flatten_with_path(variables['params'])[0])
  batch = {'tokens': jnp.full((4, 32), 100, jnp.int32).at[:, ::3].set(101)}
  _, grads = grad_fn(variables, batch, jax.random.key(8))
  g = np.asarray(grads['params']['word_embeddings']['embedding'])
  # Ids other than 100 and 101 are no inputs (but for a random replacement or two), so
  # their rows learn through the output projection the MLM head shares with the table.
  absent = [i for i in range(vocab.NUM_SPECIAL, V) if i not in (100, 101)]
  assert np.abs(g[absent]).sum(1).min() > 0


def test_evaluate_is_deterministic_per_example(tiny_task):
  task, variables, _ = tiny_task
  tokens = jax.random.randint(jax.random.key(9), (4, 32), vocab.NUM_SPECIAL, V, jnp.int32)
  batch = {'tokens': tokens.at[2:].set(0)}  # the loop's padding rows are all zeros
  a = jax.jit(task.evaluate)(variables, batch)
  b = jax.jit(task.evaluate)(variables, batch)
  for k in a:
    assert a[k].shape == (4,) and np.isfinite(a[k]).all()
    np.testing.assert_array_equal(a[k], b[k])
  # 14 tokens of A + 15 of B; row 3 is padding with a padding partner: nothing to predict
  assert a['mlm_count'][0] == round(0.15 * 29) and a['mlm_count'][3] == 0
  # a row's result depends on its tokens and its partner's (the previous row) only
  c = jax.jit(task.evaluate)(variables, {'tokens': batch['tokens'][:2]})
  for k in a:
    np.testing.assert_allclose(c[k][1], a[k][1], rtol=1e-5)
  result = task.finalize_eval(jax.tree.map(lambda x: x[:2].sum(), a), 2.0)
  assert set(result) == {'loss', 'mlm_loss', 'mlm_accuracy', 'nsp_loss', 'nsp_accuracy'}
  np.testing.assert_allclose(result['mlm_loss'],
                             a['mlm_nll'][:2].sum() / a['mlm_count'][:2].sum(), rtol=1e-6)


@pytest.mark.parametrize('change, message', [
    (dict(model=dict(bert.TINY, vocab_size=100)), 'vocab_size=100 is smaller'),
    (dict(data=dict(pack=256)), 'exceeds config.model.max_length'),
    (dict(data=dict(pack=0)), 'config.data.pack'),
    (dict(task_kwargs=dict(mask_rat=0.2)), 'mask_rat'),
])
def test_inconsistent_configs_fail_clearly(change, message):
  c = tiny_config()
  with c.unlocked():
    for key, value in change.items():
      if key == 'model':
        c.model = value
      elif key == 'task_kwargs':
        c.task_kwargs = value
      else:
        c[key].update(value)
  with pytest.raises(ConfigError, match=message):
    mlm.make(c)
