"""RWKV-4: the published size, the stable WKV against the paper's formula evaluated naively
in float64, its two forms against each other, causality, cached decoding (greedy and beam
search) against the full forward pass, the official initialisation, and the tiny config
through the loop with an exact resume."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import vocab
from arch.sequence import rwkv
from train import config_lib, summary

import lm_checks

# Hugging Face transformers: sum(p.numel() for p in RwkvForCausalLM(config).parameters())
# for RWKV/rwkv-4-169m-pile (untied head).
HF_RWKV_169M = 169_342_464

TINY = dict(rwkv.TINY, vocab_size=vocab.BYTE_VOCAB_SIZE)
KEY = jax.random.key(0)


def _tokens(shape, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, vocab.NUM_SPECIAL,
                            vocab.BYTE_VOCAB_SIZE, jnp.int32)


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_published_size_equals_hugging_face():
  config = config_lib.load('configs/rwkv_pydoc.py:variant=169m')
  params = summary.param_shapes(config)['params']
  assert _count(params) == HF_RWKV_169M
  assert sorted(params) == sorted(['embeddings', 'ln_out', 'head']
                                  + [f'blocks_{i}' for i in range(12)])
  shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)
  ln = {'scale': (768,), 'bias': (768,)}
  assert shapes(params['blocks_0']['pre_ln']) == ln
  assert sorted(params['blocks_1']) == ['attention', 'feed_forward', 'ln1', 'ln2']
  assert shapes(params['blocks_1']['attention']) == {
      'time_decay': (768,), 'time_first': (768,), 'time_mix_key': (768,),
      'time_mix_value': (768,), 'time_mix_receptance': (768,),
      'key': {'kernel': (768, 768)}, 'value': {'kernel': (768, 768)},
      'receptance': {'kernel': (768, 768)}, 'output': {'kernel': (768, 768)}}
  assert shapes(params['blocks_1']['feed_forward']) == {
      'time_mix_key': (768,), 'time_mix_receptance': (768,),
      'key': {'kernel': (768, 3072)}, 'receptance': {'kernel': (768, 768)},
      'value': {'kernel': (3072, 768)}}
  assert shapes(params['head']) == {'kernel': (768, 50277)}


def _wkv_inputs(b=2, t=11, a=3, seed=0):
  k = jax.random.split(jax.random.key(seed), 4)
  w = -jnp.exp(jax.random.normal(k[0], (a,)))
  u = jax.random.normal(k[1], (a,))
  keys = 3 * jax.random.normal(k[2], (b, t, a))
  keys = keys.at[0, 2, 0].set(120.0).at[1, 6, 1].set(-150.0)  # e^120 overflows float32
  return w, u, keys, jax.random.normal(k[3], (b, t, a))


def _naive(w, u, k, v):
  """The paper's formula term by term in float64, without any shifting; with the sums
  a_T, b_T a state would hold after the last position."""
  w, u, k, v = (np.asarray(x, np.float64) for x in (w, u, k, v))
  b, t, _ = k.shape
  y = np.zeros(k.shape)
  for n in range(b):
    for i in range(t):
      past = [np.exp((i - 1 - j) * w + k[n, j]) for j in range(i)]
      now = np.exp(u + k[n, i])
      y[n, i] = (sum(p * v[n, j] for j, p in enumerate(past)) + now * v[n, i]) / (sum(past) + now)
  decays = [np.exp((t - 1 - j) * w + k[:, j]) for j in range(t)]
  return y, sum(d * v[:, j] for j, d in enumerate(decays)), sum(decays)


@pytest.mark.parametrize('form', rwkv.FORMS)
def test_wkv_is_the_papers_formula(form):
  w, u, k, v = _wkv_inputs()
  run = jax.jit(lambda *x, state=None: rwkv.wkv(*x, state, form=form, chunk=4))
  y, (a, b, p) = run(w, u, k, v)
  want, want_a, want_b = _naive(w, u, k, v)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(np.asarray(a))) and np.all(np.asarray(b) >= 1)
  # The true sums are a e^p and b e^p (p near 100 here: float32 rounding of p costs
  # |p| * 2^-24 relative).
  scale = np.exp(np.asarray(p, np.float64))
  np.testing.assert_allclose(np.asarray(a, np.float64) * scale, want_a, rtol=5e-5)
  np.testing.assert_allclose(np.asarray(b, np.float64) * scale, want_b, rtol=5e-5)
  # The state carries over: the first 5 positions, then the rest from their state; and
  # an all-zero state (as the sampler makes a cache) is the empty state.
  zeros = tuple(jnp.zeros((2, 3)) for _ in range(3))
  y1, state = run(w, u, k[:, :5], v[:, :5], state=zeros)
  y2, _ = run(w, u, k[:, 5:], v[:, 5:], state=state)
  np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), want, rtol=1e-5, atol=1e-5)


def test_the_two_forms_agree_with_gradients():
  w, u, k, v = _wkv_inputs(b=2, t=13, a=4, seed=3)
  state = rwkv.wkv(w, u, k[:, :3], v[:, :3])[1]

  def loss(form, *args):
    y, (a, b, p) = rwkv.wkv(*args, state, form=form, chunk=5)
    return (jnp.sin(y) ** 2).sum() + (a / b).sum()
  grad = lambda form: jax.jit(jax.value_and_grad(lambda *x: loss(form, *x), argnums=range(4)))
  seq, chunked = grad('sequential')(w, u, k, v), grad('chunked')(w, u, k, v)
  for s, c in zip(jax.tree.leaves(seq), jax.tree.leaves(chunked)):
    assert np.all(np.isfinite(np.asarray(c)))
    np.testing.assert_allclose(s, c, rtol=2e-5, atol=2e-5)


@pytest.fixture(scope='module')
def tiny():
  # RWKV-4 zero-initialises its branches' output matrices (every block starts as the
  # identity), so the tests perturb all parameters to exercise every path.
  model = rwkv.Model(**TINY)
  tokens = _tokens((2, 12))
  variables = nn.meta.unbox(jax.jit(model.init)(KEY, tokens))
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  leaves = [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return model, jax.tree.unflatten(tree, leaves), tokens


def test_the_two_forms_give_the_same_model(tiny):
  model, variables, tokens = tiny
  chunked = rwkv.Model(**TINY, wkv='chunked', chunk_size=5)
  np.testing.assert_allclose(jax.jit(chunked.apply)(variables, tokens),
                             jax.jit(model.apply)(variables, tokens), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='valid: sequential, chunked'):
    rwkv.Model(**TINY, wkv='parallel').apply(variables, tokens)


def test_logits_are_causal(tiny):  # order from token shift and the WKV
  lm_checks.check_causal(*tiny)


@pytest.mark.parametrize('form', rwkv.FORMS)
def test_cached_decoding_equals_the_full_forward_pass(tiny, form):
  _, variables, tokens = tiny
  model = rwkv.Model(**TINY, wkv=form, chunk_size=4)
  full = jax.jit(rwkv.Model(**TINY).apply)(variables, tokens)
  # A zero cache, as the LM task's sampler makes it from a buffer of the final length.
  shapes = jax.eval_shape(lambda: model.init(KEY, tokens, decode=True))['cache']
  d = TINY['embed_dim']
  assert jax.tree.map(lambda x: x.shape, shapes['blocks_1']) == {
      'attention': {'shift': (2, d), 'a': (2, d), 'b': (2, d), 'p': (2, d)},
      'feed_forward': {'shift': (2, d)}}
  cache = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
  step = jax.jit(lambda c, tok: model.apply({**variables, 'cache': c}, tok, decode=True,
                                            mutable=['cache']))
  # A prompt of 2, a chunk of 5 (longer than a chunk), then one token at a time.
  out = []
  for lo, hi in [(0, 2), (2, 7)] + [(i, i + 1) for i in range(7, tokens.shape[1])]:
    logits, mutated = step(cache, tokens[:, lo:hi])
    cache = mutated['cache']
    out.append(logits)
  np.testing.assert_allclose(jnp.concatenate(out, axis=1), full, atol=2e-5, rtol=2e-5)


def test_initialisation_is_the_official_codes():
  layers, d = 3, 32
  model = rwkv.Model(vocab_size=300, num_layers=layers, embed_dim=d)
  params = nn.meta.unbox(jax.jit(model.init)(KEY, _tokens((1, 4))))['params']
  x = np.arange(d) / d
  for l in range(layers):
    att, ffn = params[f'blocks_{l}']['attention'], params[f'blocks_{l}']['feed_forward']
    up, down = l / (layers - 1), 1 - l / layers
    h = np.arange(d) / (d - 1)
    np.testing.assert_allclose(att['time_decay'], -5 + 8 * h ** (0.7 + 1.3 * up), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(att['time_mix_value'], x ** down + 0.3 * up, rtol=1e-5)
    np.testing.assert_allclose(att['time_mix_receptance'], x ** (0.5 * down), rtol=1e-5)
    np.testing.assert_allclose(ffn['time_mix_key'], x ** down, rtol=1e-5)
    np.testing.assert_allclose(att['time_first'][:3], math.log(0.3) + np.array([0, .5, -.5]),
                               rtol=1e-6)
    for zero in (att['key'], att['receptance'], att['output'], ffn['receptance'],
                 ffn['value']):
      assert not np.any(zero['kernel'])
    # Orthogonal: value's columns orthonormal; the widening key's gain is sqrt(4).
    v = np.asarray(att['value']['kernel'])
    np.testing.assert_allclose(v.T @ v, np.eye(d), atol=1e-5)
    k = np.asarray(ffn['key']['kernel'])
    np.testing.assert_allclose(k @ k.T, 4 * np.eye(d), atol=1e-4)
  head = np.asarray(params['head']['kernel'])  # gain 0.5 sqrt(300 / 32)
  np.testing.assert_allclose(head @ head.T, 0.25 * 300 / d * np.eye(d), atol=1e-4)
  np.testing.assert_allclose(np.std(params['embeddings']['embedding']), 1e-4, rtol=0.05)
  assert 'pre_ln' in params['blocks_0'] and 'pre_ln' not in params['blocks_1']


def test_greedy_sampling_through_the_lm_task_follows_the_full_forward_pass(tiny):
  config = config_lib.load('configs/rwkv_pydoc.py:variant=tiny')
  assert dict(config.model) == dict(TINY, wkv='sequential')  # the `tiny` fixture's network
  model, variables, _ = tiny
  lm_checks.check_greedy_sampling(config, model, variables)


def test_beam_search_reorders_the_recurrent_state(tiny):
  # Beam search gathers cache rows along the batch axis when beams swap parents; a state
  # left behind makes the returned score differ from the full forward pass's.
  model, variables, tokens = tiny
  lm_checks.check_beam_search(model, variables, tokens[:, :3])


def test_tiny_config_trains_resumes_and_samples_alike_on_8_devices(tmp_path, data_dir):
  straight = lm_checks.check_trains_and_resumes('rwkv_pydoc.py:variant=tiny', tmp_path,
                                                data_dir)
  assert straight[-1][1] < straight[0][1]  # the zero-initialised branches start learning
  lm_checks.check_sampler_one_and_eight('rwkv_pydoc.py:variant=tiny', tmp_path / 'straight',
                                        data_dir)
