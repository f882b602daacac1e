"""RoBERTa (configs/roberta_pydoc.py): BERT's encoder with RoBERTa's fields
(arch/sequence/bert.py `ROBERTA`) and the masked-LM task without NSP (arch/sequence/mlm.py)."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from arch import vocab
from arch.sequence import bert, mlm
from conftest import check_resumes_alike, load_config, train_spec
from train import steps

V = vocab.BYTE_VOCAB_SIZE
SPEC = 'roberta_pydoc.py'
# The CPU model shrunk for tests: 1 layer of width 32 over 32-token windows.
SMALL = dict(model__num_layers=1, model__embed_dim=32, model__num_heads=2,
             model__max_length=34, data__pack=32, batch_size=4)
TINY_RUN = dict(SMALL, total_steps=4, ckpt_every=2, log_every=1, eval_every=4)


def roberta(**fields):
  return bert.Model(**dict(bert.TINY, **dict(bert.ROBERTA, vocab_size=V, max_length=18,
                                             num_layers=1, embed_dim=32), **fields))


def test_positions_skip_padding_and_start_at_the_offset():
  """HF's create_position_ids_from_input_ids: real token k at row k + 2 counted over
  non-pad tokens, pads at row 1; so left padding leaves the real tokens' outputs as they
  were (BERT's arange would shift them), row 0 is never read and row 17 is (16 tokens)."""
  model = roberta()
  tokens = jax.random.randint(jax.random.key(1), (2, 10), vocab.NUM_SPECIAL, V)
  left = jnp.pad(tokens, ((0, 0), (6, 0)))  # id 0 = PAD
  variables = nn.meta.unbox(model.init(jax.random.key(0), left))
  apply = jax.jit(model.apply)
  out = apply(variables, tokens)['mlm_logits']
  np.testing.assert_allclose(apply(variables, left)['mlm_logits'][:, 6:], out, atol=1e-5)
  table = variables['params']['position_embeddings']['embedding']
  assert table.shape == (18, 32)

  def with_row(row, value):
    params = dict(variables['params'], position_embeddings={
        'embedding': table.at[row].add(value * jnp.linspace(-1, 1, 32))})
    return apply({'params': params}, left)['mlm_logits'][:, 6:]
  np.testing.assert_array_equal(with_row(0, 1.0), apply(variables, left)['mlm_logits'][:, 6:])
  for row in (2, 11):  # the first and the last real token's rows (10 real tokens)
    assert not np.allclose(with_row(row, 1.0), out, atol=1e-4)
  full = jax.random.randint(jax.random.key(2), (1, 17), vocab.NUM_SPECIAL, V)
  with pytest.raises(ValueError, match='position_offset'):
    apply(variables, full)  # 17 tokens would need row 18
  full = full[:, :16]
  # 16 tokens use rows 2..17; the BERT model (offset 0) still reads row 0
  assert jax.eval_shape(model.apply, variables, full)['mlm_logits'].shape == (1, 16, V)
  plain = bert.Model(**dict(bert.TINY, num_layers=1, embed_dim=32))
  pv = nn.meta.unbox(plain.init(jax.random.key(0), tokens))
  pt = pv['params']['position_embeddings']['embedding']
  plain_apply = jax.jit(plain.apply)
  moved = plain_apply({'params': dict(pv['params'], position_embeddings={
      'embedding': pt.at[0].add(jnp.linspace(-1, 1, 32))})}, tokens)['mlm_logits']
  assert not np.allclose(moved, plain_apply(pv, tokens)['mlm_logits'], atol=1e-4)


@pytest.fixture(scope='module')
def tiny_task():
  """The test-sized task, its variables and its jitted loss."""
  task = mlm.make(load_config(SPEC, **SMALL))
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in task.example_batch(4).items()}
  variables = nn.meta.unbox(task.init(jax.random.key(0), batch))
  return task, variables, jax.jit(task.loss)


def test_no_nsp_head_pooler_or_second_token_type(tiny_task):
  task, variables, loss_fn = tiny_task
  params = variables['params']
  assert not {'pooler', 'nsp'} & set(params)
  assert params['token_type_embeddings']['embedding'].shape == (1, 32)
  assert set(params) >= {'mlm_dense', 'mlm_norm', 'mlm_bias', 'word_embeddings'}
  batch = {'tokens': jax.random.randint(jax.random.key(3), (4, 32), vocab.NUM_SPECIAL, V)}
  loss, (metrics, _) = loss_fn(variables, batch, jax.random.key(4))
  assert set(metrics) == {'loss', 'mlm_loss', 'mlm_accuracy'}
  assert float(loss) == float(metrics['mlm_loss'])
  result = jax.jit(task.evaluate)(variables, batch)
  assert set(result) == {'mlm_nll', 'mlm_correct', 'mlm_count'}
  assert set(task.finalize_eval(jax.tree.map(jnp.sum, result), 4.0)) == set(metrics)


def test_masks_are_dynamic_a_new_one_each_step(tiny_task):
  """The loop's step key (train/steps.step_rng: the run's key folded with the step) picks
  the mask: the same windows at steps 0 and 1 get different masks, and the loss is the
  masked-token cross-entropy over exactly the mask drawn from that key. No dropout in the
  tiny model, so the mask is the loss's only randomness."""
  task, variables, loss_fn = tiny_task
  model = bert.Model(**load_config(SPEC, **SMALL).model.to_dict())
  tokens = jax.random.randint(jax.random.key(5), (4, 32), vocab.NUM_SPECIAL, V, jnp.int32)
  run_key = jax.random.key_data(jax.random.key(6))
  chosen = []
  for step in (0, 1):
    rng = steps.step_rng(types.SimpleNamespace(rng=run_key, step=jnp.int32(step)))
    data_rng, _ = jax.random.split(rng)
    inputs, types_, targets, chosen_BL, _ = mlm.pretraining_inputs(
        tokens, jax.random.split(data_rng, 4), vocab_size=V, nsp=False)
    # <s> + the window's first 31 tokens, one token type
    np.testing.assert_array_equal(targets[:, 0], vocab.BOS)
    np.testing.assert_array_equal(targets[:, 1:], tokens[:, :-1])
    assert not types_.any()
    logits = jax.jit(model.apply)(variables, inputs)['mlm_logits']
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    expected = (nll * chosen_BL).sum() / chosen_BL.sum()
    loss, _ = loss_fn(variables, {'tokens': tokens}, rng)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    chosen.append(np.asarray(chosen_BL))
  # round(0.15 * 31) = 5 targets a row (the BOS never); two independent draws share
  # about 5 * 5 / 31 of them, far from all 20
  assert (chosen[0].sum(1) == 5).all() and (chosen[1].sum(1) == 5).all()
  assert not chosen[0][:, 0].any()
  assert (chosen[0] & chosen[1]).sum() < 12


def test_config_trains_and_resumes_exactly(tmp_path, data_dir):
  train = lambda workdir, **kw: train_spec(SPEC, workdir, data_dir, **{**TINY_RUN, **kw})
  final = train(tmp_path / 'straight')
  assert set(final) >= {'mlm_accuracy', 'mlm_loss'} and 'nsp_loss' not in final
  assert 0 <= final['mlm_accuracy'] <= 1
  straight, _, states = check_resumes_alike(SPEC, train, tmp_path,
                                            must_have=('loss', 'mlm_accuracy'), **SMALL)
  assert all(straight[s]['loss'] == straight[s]['mlm_loss'] for s in straight)
  assert 'pooler' not in states[0].params


def test_variants():
  from train.errors import UserError
  assert load_config(SPEC).model.to_dict() == dict(
      bert.TINY, num_layers=4, num_heads=4, embed_dim=128, max_length=130, position_offset=2,
      type_vocab_size=1, norm_eps=1e-5, pooler=False)
  assert load_config(SPEC + ':variant=large').model.to_dict() == dict(
      bert.ROBERTA, num_layers=24, num_heads=16, embed_dim=1024)
  with pytest.raises(UserError, match='valid: tiny, base, large'):
    load_config(SPEC + ':variant=huge')
