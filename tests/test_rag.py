"""RAG (arch/sequence/rag.py): both marginals against a hand computation, K = 1 against the
single-passage LM, the query head's gradient through p(z|x), the own-document filter on
real train windows, and the tiny config through the loop (exact resume, the index kept in
the checkpoint, sampling through train.sample)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import arch
from arch import vocab
from arch.sequence import rag, retro
import lm_checks
from conftest import check_resumes_from_step_2, load_config, train_spec

SPEC = 'rag_pydoc.py:variant=tiny,aligned=True'  # (the default's generator is plain GPT)


def test_marginals_equal_a_hand_computation():
  rng = np.random.default_rng(0)
  b, k, y = 2, 3, 4
  logp_z = np.log(rng.dirichlet(np.ones(k), b))
  logp_y = np.log(rng.uniform(0.05, 0.9, (b, k, y)))
  w = np.ones((b, y))
  w[1, -1] = 0  # a <pad> target counts nothing
  for i in range(b):
    seq = sum(np.exp(logp_z[i, z]) * np.prod(np.exp(logp_y[i, z])[w[i] > 0]) for z in range(k))
    tok = np.prod([sum(np.exp(logp_z[i, z] + logp_y[i, z, t]) for z in range(k))
                   for t in range(y) if w[i, t]])
    got_seq = rag.marginal_nll(*map(jnp.asarray, (logp_z, logp_y, w)), 'sequence')
    got_tok = rag.marginal_nll(*map(jnp.asarray, (logp_z, logp_y, w)), 'token')
    np.testing.assert_allclose(got_seq[i], -np.log(seq), rtol=1e-5)
    np.testing.assert_allclose(got_tok[i], -np.log(tok), rtol=1e-5)
  assert not np.allclose(got_seq, got_tok)  # the forms differ when the passages disagree


@pytest.fixture(scope='module')
def tiny():
  """(config, task, variables with the index built, a train batch) of the tiny config with
  K=2; the frozen encoder keeps its initialisation (the keys only need to be some fixed
  function of the chunks)."""
  from train import core
  config = load_config(SPEC)
  task = core.load_task(config)
  batch = {key: jnp.asarray(v) for key, v in next(task.input(0, 1)).items()}
  variables = nn.unbox(task.init(jax.random.key(0), batch))
  _, (_, extra) = jax.jit(task.loss)(variables, batch, jax.random.key(1))
  assert int(extra['index']['built']) == 1
  return config, task, {**variables, **extra}, batch


def _task(**overrides):
  from train import core
  return core.load_task(load_config(SPEC, **overrides))


def test_own_document_filter_holds_on_train_windows(tiny):
  """The tiny windows start where database chunks do, so unfiltered each prefix finds its
  own chunk at distance 0; with the window's documents every passage comes from others."""
  config, _, variables, batch = tiny
  model = arch.model_from_config(config)
  _, key_fn = retro.frozen_key_fn(config)
  p, index = config.task_kwargs.prefix, variables['index']
  q, scale = model.apply({'params': variables['params']}, key_fn(variables['encoder'],
                                                                 batch['tokens'][:, :p]),
                         method=rag.Model.query)
  idx, _ = rag.retrieve(q, scale, index, 2)
  d = np.sum((np.asarray(q) - np.asarray(index['keys'])[np.asarray(idx[:, 0])]) ** 2, -1)
  np.testing.assert_allclose(d, 0, atol=1e-4)
  own = np.asarray(index['doc'])[np.asarray(idx[:, 0])][:, 0] == np.asarray(batch['doc'])[:, 0]
  assert own.mean() >= 0.5  # (a chunk may also recur verbatim in another document)
  idx, logp_z = rag.retrieve(q, scale, index, 2, batch['doc'])
  docs = np.asarray(index['doc'])[np.asarray(idx)]  # (B, K, 2)
  assert not (docs[:, :, :, None] == np.asarray(batch['doc'])[:, None, None, :]).any()
  np.testing.assert_allclose(np.exp(logp_z).sum(-1), 1, rtol=1e-6)


def test_one_passage_gives_the_single_passage_lm_for_both_forms(tiny):
  """K = 1: both marginals equal the generator's cross-entropy on y reading [z ; x ; y]
  (and z's byte aligned with each target), z the nearest passage of another document found
  by brute force."""
  config, _, variables, batch = tiny
  model = arch.model_from_config(config)
  _, key_fn = retro.frozen_key_fn(config)
  p, index = config.task_kwargs.prefix, variables['index']
  tokens = batch['tokens']
  q, _ = model.apply({'params': variables['params']}, key_fn(variables['encoder'],
                                                             tokens[:, :p]),
                     method=rag.Model.query)
  d = ((np.asarray(q)[:, None] - np.asarray(index['keys'])[None]) ** 2).sum(-1)
  same = (np.asarray(index['doc'])[None, :, :, None]
          == np.asarray(batch['doc'])[:, None, None, :]).any((2, 3))
  z = np.where(same, np.inf, d).argmin(1)
  seq = jnp.concatenate([index['tokens'][z], tokens[:, :-1]], 1)
  # the aligned read: x ; y's position j gets passage byte j + 1 (<pad> past its end)
  pas = np.asarray(index['tokens'][z])
  hint = np.full(seq.shape, vocab.PAD, np.int32)
  hint[:, 2 * p:2 * p + 2 * p - 1] = pas[:, 1:]
  assert config.model.aligned
  logits = model.apply({'params': variables['params']}, seq, jnp.asarray(hint))[:, 3 * p - 1:]
  targets = tokens[:, p:]
  w = (targets != vocab.PAD).astype(jnp.float32)
  want = float((optax.softmax_cross_entropy_with_integer_labels(logits, targets) * w).sum()
               / w.sum())
  for marginal in rag.MARGINALS:
    task = _task(task_kwargs__num_passages=1, task_kwargs__marginal=marginal)
    got, (metrics, _) = jax.jit(task.loss)(variables, batch, jax.random.key(1))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    assert float(metrics['p_top']) == 1.0


def test_query_head_gets_gradient_through_passage_probabilities(tiny):
  """K = 2: the loss moves the query head and the scale (through p(z|x)); K = 1: p(z|x) is 1
  and they get exactly none."""
  _, task, variables, batch = tiny

  def grads(task):
    def f(params):
      return task.loss({**variables, 'params': params}, batch, jax.random.key(1))[0]
    return jax.jit(jax.grad(f))(variables['params'])

  g = grads(task)
  for leaf in (g['query_head']['kernel'], g['query_head']['bias'], g['log_scale']):
    assert np.abs(np.asarray(leaf)).max() > 0
  assert np.abs(np.asarray(g['generator']['wte']['embedding'])).max() > 0
  g1 = grads(_task(task_kwargs__num_passages=1))
  assert np.abs(np.asarray(g1['query_head']['kernel'])).max() == 0


def test_tiny_config_trains_resumes_keeps_its_index_and_samples(tmp_path, data_dir):
  """4 steps with checkpoints at 2 and 4 resume bitwise from step 2; the checkpointed index
  holds the frozen encoder's keys of the database chunks; train.sample continues a prompt
  alike on 1 and 8 devices."""
  result = train_spec(SPEC, tmp_path / 'straight', data_dir, data__eval_split='validation[:1]')
  assert np.isfinite(result['loss']) and result['tokens'] > 100
  check_resumes_from_step_2(SPEC, train_spec, tmp_path, data_dir)

  from train import checkpoint, core
  config = load_config(SPEC, data__data_dir=data_dir)
  abstract = core.abstract_state(config, core.load_task(config))
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'straight'), async_save=False)
  state = ckpt.restore(4, abstract)[0]
  ckpt.close()
  index = state.extra['index']
  assert int(index['built']) == 1
  _, key_fn = retro.frozen_key_fn(config)
  p = config.task_kwargs.prefix
  some = np.arange(0, len(index['tokens']), 97)
  want = key_fn(state.extra['encoder'], jnp.asarray(index['tokens'][some, :p]))
  np.testing.assert_allclose(index['keys'][some], want, rtol=1e-5, atol=1e-5)

  lm_checks.check_sampler_one_and_eight(SPEC, tmp_path / 'straight', data_dir)
