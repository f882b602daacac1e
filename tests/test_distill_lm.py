"""Language-model distillation (arch/compress/distill_lm.py): TinyBERT's and DistilBERT's
losses against direct numpy formulas, zero for a student equal to its teacher, the taps
being the networks' own tensors, DistilBERT's every-other-layer initialisation, MobileBERT's
structure (arch/sequence/mobilebert.py), the published sizes, and the configs through the
loop with exact resume."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.compress import distill_lm
from arch.sequence import bert, mobilebert
from conftest import (check_eight_devices, check_resumes_alike, load_config, read_metrics,
                      restored_states, train_spec)

KEY = jax.random.key(0)


def _bert(**kw):
  return bert.Model(**{**bert.TINY, 'num_layers': 2, 'num_heads': 2, 'embed_dim': 16,
                       'max_length': 16, **kw})


def _init(model, key, tokens):
  return nn.meta.unbox(model.init(key, tokens))


def _tokens():
  tokens = np.array(jax.random.randint(jax.random.key(1), (3, 12), 4, 200))
  tokens[0, -3:] = 0  # padding: masked keys
  return jnp.asarray(tokens)


def _run(model, variables, tokens):
  return distill_lm.run_tapped(model, variables, tokens, jnp.zeros_like(tokens),
                               model.num_layers)


def _np_scores(q, k, valid):
  """Direct: per example, head, query, key."""
  b, t, n, h = q.shape
  out = np.zeros((b, n, t, k.shape[1]))
  for bi in range(b):
    for ni in range(n):
      for i in range(t):
        for j in range(k.shape[1]):
          if valid[bi, j]:
            out[bi, ni, i, j] = np.dot(q[bi, i, ni], k[bi, j, ni]) / np.sqrt(h)
  return out


def test_attention_scores_and_their_mse_equal_a_direct_computation():
  rng = np.random.RandomState(0)
  qs, ks, qt, kt = (rng.randn(2, 5, 3, 4).astype(np.float32) for _ in range(4))
  valid = np.ones((2, 5), bool)
  valid[1, 3:] = False
  got = distill_lm.attention_scores(jnp.asarray(qs), jnp.asarray(ks), jnp.asarray(valid))
  np.testing.assert_allclose(got, _np_scores(qs, ks, valid), rtol=1e-5, atol=1e-6)
  want = np.mean((_np_scores(qs, ks, valid) - _np_scores(qt, kt, valid)) ** 2)
  mse = distill_lm.mse(got, distill_lm.attention_scores(jnp.asarray(qt), jnp.asarray(kt),
                                                        jnp.asarray(valid)))
  np.testing.assert_allclose(mse, want, rtol=1e-5)


def test_tinybert_losses_equal_a_direct_computation_with_maps_and_layer_mapping():
  rng = np.random.RandomState(1)
  b, t, n, ds, dt = 2, 5, 2, 3, 4
  arr = lambda *shape: rng.randn(*shape).astype(np.float32)
  s = {'embed': arr(b, t, ds), 'hidden': [arr(b, t, ds) for _ in range(2)],
       'q': [arr(b, t, n, 2) for _ in range(2)], 'k': [arr(b, t, n, 2) for _ in range(2)]}
  te = {'embed': arr(b, t, dt), 'hidden': [arr(b, t, dt) for _ in range(4)],
        'q': [arr(b, t, n, 3) for _ in range(4)], 'k': [arr(b, t, n, 3) for _ in range(4)]}
  maps = {'embed': arr(ds, dt), 'hidden': arr(ds, dt)}
  valid = np.ones((b, t), bool)
  valid[0, -1] = False
  mapping = distill_lm.layer_map(2, 4)
  assert mapping == [2, 4]
  got = distill_lm.tinybert_losses(jax.tree.map(jnp.asarray, s), jax.tree.map(jnp.asarray, te),
                                   jax.tree.map(jnp.asarray, maps), jnp.asarray(valid), mapping)
  np.testing.assert_allclose(got['embed'], np.mean((s['embed'] @ maps['embed'] - te['embed'])
                                                   ** 2), rtol=1e-5)
  # student layer m (1, 2) learns teacher layer 2m (2, 4): indices 1 and 3
  hidden = sum(np.mean((s['hidden'][m] @ maps['hidden'] - te['hidden'][g]) ** 2)
               for m, g in ((0, 1), (1, 3)))
  np.testing.assert_allclose(got['hidden'], hidden, rtol=1e-5)
  attention = sum(np.mean((_np_scores(s['q'][m], s['k'][m], valid)
                           - _np_scores(te['q'][g], te['k'][g], valid)) ** 2)
                  for m, g in ((0, 1), (1, 3)))
  np.testing.assert_allclose(got['attention'], attention, rtol=1e-5)


def test_layer_map_is_uniform_and_refuses_what_does_not_divide():
  assert distill_lm.layer_map(4, 12) == [3, 6, 9, 12]
  assert distill_lm.layer_map(4, 4) == [1, 2, 3, 4]
  with pytest.raises(ValueError):
    distill_lm.layer_map(3, 4)


def test_soft_target_loss_equals_the_formula_at_a_temperature():
  rng = np.random.RandomState(2)
  zs, zt = rng.randn(2, 6, 7) * 3, rng.randn(2, 6, 7) * 3
  w = (rng.rand(2, 6) < 0.5).astype(np.float32)
  w[0, 0] = 1
  t = 2.5

  def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  ps, pt = softmax(zs / t), softmax(zt / t)
  kl = (pt * (np.log(pt) - np.log(ps))).sum(-1)
  want = t * t * (kl * w).sum() / w.sum()
  got = distill_lm.soft_target_loss(jnp.asarray(zs), jnp.asarray(zt), jnp.asarray(w), t)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # = t^2 (soft cross-entropy - the teacher's entropy): TinyBERT's L_pred up to a constant
  ce = -(pt * np.log(ps)).sum(-1)
  entropy = -(pt * np.log(pt)).sum(-1)
  np.testing.assert_allclose(got, t * t * ((ce - entropy) * w).sum() / w.sum(), rtol=1e-5)


def test_cosine_loss_equals_the_formula():
  rng = np.random.RandomState(3)
  s, te = rng.randn(2, 4, 5), rng.randn(2, 4, 5)
  w = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], np.float32)
  cos = (s * te).sum(-1) / np.linalg.norm(s, axis=-1) / np.linalg.norm(te, axis=-1)
  got = distill_lm.cosine_loss(jnp.asarray(s), jnp.asarray(te), jnp.asarray(w))
  np.testing.assert_allclose(got, ((1 - cos) * w).sum() / w.sum(), rtol=1e-5)
  # a positive multiple of the teacher costs nothing
  np.testing.assert_allclose(distill_lm.cosine_loss(jnp.asarray(3 * te), jnp.asarray(te),
                                                    jnp.asarray(w)), 0.0, atol=1e-6)


def test_taps_are_the_networks_own_states():
  model, tokens = _bert(), _tokens()
  variables = _init(model, KEY, tokens)
  out, taps = _run(model, variables, tokens)
  np.testing.assert_array_equal(taps['hidden'][-1], out['hidden'])
  assert len(taps['hidden']) == len(taps['q']) == 2
  # layer 0's query: its input (the embeddings' LayerNorm output) through its kernel
  p = variables['params']['layer0']['self_attn']['query']
  q = jnp.einsum('BTD,DNH->BTNH', taps['embed'], p['kernel']) + p['bias']
  np.testing.assert_allclose(taps['q'][0], q, rtol=1e-5, atol=1e-6)
  assert taps['k'][1].shape == (3, 12, 2, 8)
  # and the network's own outputs are untouched by the capture
  np.testing.assert_array_equal(out['mlm_logits'], model.apply(variables, tokens)['mlm_logits'])


def test_every_loss_is_zero_for_the_teacher_itself_and_positive_for_another_network():
  model, tokens = _bert(), _tokens()
  valid = tokens != 0
  w = valid.astype(jnp.float32)
  teacher = _init(model, KEY, tokens)
  other = _init(model, jax.random.key(7), tokens)
  t_out, t_taps = _run(model, teacher, tokens)
  mapping = distill_lm.layer_map(2, 2)
  for variables, zero in ((teacher, True), (other, False)):
    out, taps = _run(model, variables, tokens)
    losses = distill_lm.tinybert_losses(taps, t_taps, {}, valid, mapping)
    losses['soft'] = distill_lm.soft_target_loss(out['mlm_logits'], t_out['mlm_logits'], w, 2.0)
    losses['cosine'] = distill_lm.cosine_loss(out['hidden'], t_out['hidden'], w)
    for name, value in losses.items():
      if zero:
        assert abs(float(value)) < 1e-6, (name, value)
      else:
        assert float(value) > 1e-4, (name, value)


def test_every_other_layer_initialisation_copies_the_right_layers():
  tokens = _tokens()
  teacher = _init(_bert(num_layers=4), KEY, tokens)['params']
  student = _init(_bert(num_layers=2), jax.random.key(3), tokens)['params']
  got, copied = distill_lm.copy_from_teacher(student, teacher, 2, 4)
  for i, j in ((0, 0), (1, 2)):
    jax.tree.map(np.testing.assert_array_equal, got[f'layer{i}'], teacher[f'layer{j}'])
  for name in ('word_embeddings', 'position_embeddings', 'embed_norm', 'mlm_dense', 'pooler'):
    jax.tree.map(np.testing.assert_array_equal, got[name], teacher[name])
  assert len(copied) == len(jax.tree.leaves(student))
  # a narrower student: only what has the teacher's shape (the output biases) is copied
  narrow = _init(_bert(num_layers=2, embed_dim=8), jax.random.key(4), tokens)['params']
  got, copied = distill_lm.copy_from_teacher(narrow, teacher, 2, 4)
  assert copied == ['mlm_bias', 'nsp/bias']
  np.testing.assert_array_equal(got['nsp']['bias'], teacher['nsp']['bias'])
  keep = lambda p: {k: v for k, v in p.items() if k not in ('mlm_bias', 'nsp')}
  jax.tree.map(np.testing.assert_array_equal, keep(got), keep(narrow))


def test_mobilebert_embeddings_are_a_3gram_and_blocks_keep_the_wide_stream():
  model = mobilebert.Model(**mobilebert.TINY)
  tokens = _tokens()
  variables = _init(model, KEY, tokens)
  out, taps = _run(model, variables, tokens)
  # changing token 5 moves the embedding output at positions 4, 5, 6 only
  _, moved = _run(model, variables, tokens.at[:, 5].set(7))
  changed = np.abs(np.asarray(moved['embed'] - taps['embed'])).max(axis=(0, 2)) > 0
  np.testing.assert_array_equal(np.flatnonzero(changed), [4, 5, 6])
  # blocks keep the inter-block width D; attention runs at the bottleneck E = 16, 2 heads
  assert taps['hidden'][0].shape == (3, 12, 32) and taps['q'][0].shape == (3, 12, 2, 8)
  np.testing.assert_array_equal(taps['hidden'][-1], out['hidden'])
  # NoNorm is the elementwise affine map, not a normalisation
  p = variables['params']['layer0']['output_norm']
  x = jax.random.normal(KEY, (4, 32))
  np.testing.assert_allclose(mobilebert.NoNorm().apply({'params': p}, x),
                             x * p['scale'] + p['bias'], rtol=1e-6)


@pytest.mark.parametrize('spec, count', [
    ('tinybert_pydoc.py:variant=tinybert-4l-312d', 14_350_248),
    ('distilbert_pydoc.py:variant=distilbert-base', 66_362_880),
    ('tinybert_pydoc.py:variant=mobilebert', 24_844_544)])
def test_published_sizes_are_hugging_faces_counts(spec, count):
  from train import core
  config = load_config(spec)
  task = core.load_task(config)
  variables = jax.eval_shape(task.init, KEY, task.example_batch(1))
  assert sum(x.size for x in jax.tree.leaves(variables['params'])) == count


# ------------------------------------------------------------------ through the loop

TINY_RUN = dict(total_steps=4, ckpt_every=2, log_every=1, eval_every=4)


@pytest.fixture(scope='module')
def teacher_run(tmp_path_factory, data_dir):
  """The tiny teacher (2 layers of width 32) trained 2 steps, shared by the runs below."""
  workdir = tmp_path_factory.mktemp('teacher')
  train_spec('tinybert_pydoc.py:teacher,tiny', workdir, data_dir)
  return str(workdir)


@pytest.mark.parametrize('spec', ['tinybert_pydoc.py:tiny', 'distilbert_pydoc.py:tiny',
                                  'tinybert_pydoc.py:tiny,method=none',
                                  'tinybert_pydoc.py:tiny,variant=mobile'])
def test_config_trains_and_resumes_exactly(spec, tmp_path, data_dir, teacher_run):
  overrides = {} if 'none' in spec else dict(frozen__teacher__workdir=teacher_run)
  train = lambda workdir, **kw: train_spec(spec, workdir, data_dir,
                                           **{**TINY_RUN, **overrides, **kw})
  final = train(tmp_path / 'straight')
  assert 0 <= final['mlm_accuracy'] <= 1
  if spec in ('tinybert_pydoc.py:tiny', 'distilbert_pydoc.py:tiny'):
    straight, _, states = check_resumes_alike(spec, train, tmp_path,
                                              must_have=('loss', 'mlm_accuracy'), **overrides)
  else:  # trained only: their resume path (a frozen teacher, TinyBERT's stages) is the above
    straight = read_metrics(tmp_path / 'straight')
    assert sorted(straight) == [1, 2, 3, 4] and all(np.isfinite(straight[s]['loss'])
                                                    for s in straight)
  assert all(straight[s]['grad_norm'] > 0 for s in straight)
  if spec.startswith('tinybert') and 'none' not in spec and 'mobile' not in spec:
    # two intermediate-layer steps, then two prediction-layer ones
    for s in (1, 2):
      parts = sum(straight[s][f'loss_{k}'] for k in ('embed', 'hidden', 'attention'))
      assert straight[s]['loss'] == pytest.approx(parts, rel=1e-5)
    for s in (3, 4):
      assert straight[s]['loss'] == pytest.approx(straight[s]['loss_soft'], rel=1e-6)
    assert set(states[0].params['maps']) == {'embed', 'hidden'}  # width 16 -> 32
  if 'none' not in spec:
    assert 0 <= final['agreement'] <= 1 and 'teacher_mlm_accuracy' in final


def test_distilbert_first_step_starts_from_the_teachers_layers(tmp_path, data_dir, teacher_run):
  """With a zero learning rate the student stays where the first step put it: the
  teacher's layer 0 (the tiny student has one layer of the teacher's two) and embeddings."""
  from train import core
  spec = 'distilbert_pydoc.py:tiny'
  overrides = dict(frozen__teacher__workdir=teacher_run, total_steps=2, ckpt_every=2,
                   eval_every=0, lr=0.0)
  train_spec(spec, tmp_path, data_dir, **overrides)
  config = load_config(spec, **overrides)
  abstract = core.abstract_state(config, core.load_task(config))
  state = restored_states(abstract, [tmp_path], 2)[0]
  student, teacher = state.params['student'], state.extra['teacher']['params']
  jax.tree.map(np.testing.assert_array_equal, student['layer0'], teacher['layer0'])
  jax.tree.map(np.testing.assert_array_equal, student['word_embeddings'],
               teacher['word_embeddings'])
  assert set(student) == set(teacher) - {'layer1'}


@pytest.mark.parametrize('spec', ['tinybert_pydoc.py:tiny', 'distilbert_pydoc.py:tiny'])
def test_eight_devices_match_one(spec, tmp_path, teacher_run):
  """8 simulated devices (jit) give one device's per-step losses (both TinyBERT stages:
  steps 1-2 intermediate layers, 3-4 prediction layer) and its eval."""
  check_eight_devices(spec, tmp_path, ('jit',), close=('loss',), evals=('mlm_accuracy',),
                      args=(f'--config.frozen.teacher.workdir={teacher_run}',
                            '--config.log_every=1'))
