"""Mamba: the published size, the selective scan against the recurrence written as a loop,
the sequential and parallel scans against each other, causality, cached decoding (greedy
and beam search) against the full forward pass, the paper's initialisation, and the tiny
config through the loop with an exact resume."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import vocab
from arch.sequence import mamba
from train import config_lib, summary

import lm_checks

# Hugging Face transformers: sum(p.numel() for p in MambaForCausalLM(config).parameters())
# for state-spaces/mamba-130m-hf (the head is tied to the embedding, counted once).
HF_MAMBA_130M = 129_135_360

TINY = dict(mamba.TINY, vocab_size=vocab.BYTE_VOCAB_SIZE)
KEY = jax.random.key(0)


def _tokens(shape, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, vocab.NUM_SPECIAL,
                            vocab.BYTE_VOCAB_SIZE, jnp.int32)


def test_published_size_equals_hugging_face():
  config = config_lib.load('configs/mamba_pydoc.py:variant=130m')
  params = summary.param_shapes(config)['params']
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == HF_MAMBA_130M
  # HF's layout: 24 layers of norm + mixer, the embedding shared with the head.
  assert sorted(params) == sorted(['embeddings', 'norm_f'] + [f'layers_{i}' for i in range(24)])
  mixer = jax.tree.map(lambda x: x.shape, params['layers_0']['mixer'])
  assert mixer == {'in_proj': {'kernel': (768, 3072)},
                   'conv1d': {'kernel': (4, 1536), 'bias': (1536,)},
                   'x_proj': {'kernel': (1536, 48 + 2 * 16)},
                   'dt_proj': {'kernel': (48, 1536), 'bias': (1536,)},
                   'A_log': (1536, 16), 'D': (1536,), 'out_proj': {'kernel': (1536, 768)}}


def _scan_inputs(b=2, t=6, e=3, n=4, seed=0):
  k = jax.random.split(jax.random.key(seed), 7)
  x = jax.random.normal(k[0], (b, t, e))
  delta = jax.nn.softplus(jax.random.normal(k[1], (b, t, e)))
  A = -jnp.exp(jax.random.normal(k[2], (e, n)))
  B, C = jax.random.normal(k[3], (b, t, n)), jax.random.normal(k[4], (b, t, n))
  D, h0 = jax.random.normal(k[5], (e,)), jax.random.normal(k[6], (b, e, n))
  return x, delta, A, B, C, D, h0


@pytest.mark.parametrize('scan', mamba.SCANS)
def test_selective_scan_is_the_recurrence(scan):
  x, delta, A, B, C, D, h0 = _scan_inputs()
  y, h_last = jax.jit(lambda *a: mamba.selective_scan(*a, scan=scan))(x, delta, A, B, C, D, h0)
  x, delta, A, B, C, D, h0 = (np.asarray(a, np.float64) for a in (x, delta, A, B, C, D, h0))
  want = np.zeros(x.shape)
  for i in range(x.shape[0]):
    h = h0[i]  # (E, N)
    for t in range(x.shape[1]):
      # h_t = exp(delta A) h_{t-1} + delta B_t x_t, y_t = C_t h_t + D x_t, per channel e.
      h = np.exp(delta[i, t][:, None] * A) * h + (delta[i, t] * x[i, t])[:, None] * B[i, t]
      want[i, t] = h @ C[i, t] + D * x[i, t]
    np.testing.assert_allclose(h_last[i], h, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_sequential_and_parallel_scans_agree_with_gradients():
  inputs = _scan_inputs(b=2, t=19, e=5, n=3, seed=3)

  def loss(scan, *args):
    y, h = mamba.selective_scan(*args, scan=scan)
    return (jnp.sin(y) ** 2).sum() + (h ** 2).sum()
  grad = lambda scan: jax.jit(jax.value_and_grad(lambda *a: loss(scan, *a), argnums=range(7)))
  seq, par = grad('sequential')(*inputs), grad('parallel')(*inputs)
  for s, p in zip(jax.tree.leaves(seq), jax.tree.leaves(par)):
    np.testing.assert_allclose(s, p, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize('unroll', [1, 3])
def test_adjoint_gradient_equals_autodiff_of_the_scan(unroll):
  # The sequential scan's hand-written backward (one reverse-time scan of the adjoint)
  # against autodiff of the plain scan, in float64 so that only a wrong formula can differ:
  # both outputs get a random cotangent, and every input (x, delta, A, B, C, h0) is checked.
  with jax.enable_x64(True):
    x, delta, A, B, C, _, h0 = (jnp.asarray(a, jnp.float64)
                                for a in _scan_inputs(b=2, t=11, e=5, n=3, seed=4))
    k1, k2 = jax.random.split(jax.random.key(5))
    dy = jax.random.normal(k1, x.shape, jnp.float64)
    dh = jax.random.normal(k2, h0.shape, jnp.float64)
    grads = {}
    for name, fn in [('adjoint', mamba._adjoint_scan), ('autodiff', mamba._sequential_scan)]:
      out, vjp = jax.vjp(lambda *a, fn=fn: fn(*a, unroll=unroll), x, delta, A, B, C, h0)
      grads[name] = jax.jit(vjp)((dy, dh))
      assert all(g.dtype == jnp.float64 for g in grads[name])
      if name == 'adjoint':
        y, h_last = out
    want_y, want_h = mamba._sequential_scan(x, delta, A, B, C, h0)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_last, want_h, rtol=1e-12, atol=1e-12)
    for name, got, want in zip(['x', 'delta', 'A', 'B', 'C', 'h0'], grads['adjoint'],
                               grads['autodiff']):
      assert got.shape == want.shape, name
      assert np.abs(want).max() > 1e-3, name  # a gradient that is there to get wrong
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=name)


@pytest.fixture(scope='module')
def tiny():
  model = mamba.Model(**TINY)
  tokens = _tokens((2, 12))
  variables = nn.meta.unbox(jax.jit(model.init)(KEY, tokens))
  return model, variables, tokens


def test_the_two_scans_give_the_same_model(tiny):
  model, variables, tokens = tiny
  parallel = mamba.Model(**TINY, scan='parallel')
  np.testing.assert_allclose(jax.jit(parallel.apply)(variables, tokens),
                             jax.jit(model.apply)(variables, tokens), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='valid: sequential, parallel'):
    mamba.Model(**TINY, scan='chunked').apply(variables, tokens)


def test_logits_are_causal(tiny):  # order from the scan
  lm_checks.check_causal(*tiny)


@pytest.mark.parametrize('scan', mamba.SCANS)
def test_cached_decoding_equals_the_full_forward_pass(tiny, scan):
  _, variables, tokens = tiny
  model = mamba.Model(**TINY, scan=scan)
  full = jax.jit(model.apply)(variables, tokens)
  # A zero cache, as the LM task's sampler makes it from a buffer of the final length.
  shapes = jax.eval_shape(lambda: model.init(KEY, tokens, decode=True))['cache']
  layer = shapes['layers_0']['mixer']
  e, n = 2 * TINY['embed_dim'], TINY['state_dim']
  assert {k: v.shape for k, v in layer.items()} == {
      'conv_state': (2, TINY['conv_width'] - 1, e), 'ssm_state': (2, e, n)}
  cache = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
  step = jax.jit(lambda c, tok: model.apply({**variables, 'cache': c}, tok, decode=True,
                                            mutable=['cache']))
  # A prompt of 2 (shorter than the convolution's K - 1 = 3 past inputs), a chunk of 3,
  # then one token at a time.
  out = []
  for lo, hi in [(0, 2), (2, 5)] + [(i, i + 1) for i in range(5, tokens.shape[1])]:
    logits, mutated = step(cache, tokens[:, lo:hi])
    cache = mutated['cache']
    out.append(logits)
  np.testing.assert_allclose(jnp.concatenate(out, axis=1), full, atol=2e-5, rtol=2e-5)


def test_initialisation_is_the_papers():
  e, n, r = 64, 16, 8
  model = mamba.Model(vocab_size=300, num_layers=2, embed_dim=32, state_dim=n, dt_rank=r)
  params = nn.meta.unbox(jax.jit(model.init)(KEY, _tokens((1, 4))))['params']
  mixer = params['layers_0']['mixer']
  # S4D-real: A = -(1, 2, ..., N) in every channel; D = 1.
  np.testing.assert_allclose(-np.exp(mixer['A_log']), -np.tile(np.arange(1, n + 1), (e, 1)),
                             rtol=1e-6)
  np.testing.assert_array_equal(mixer['D'], np.ones(e))
  # softplus(dt bias) is a step size in [1e-3, 1e-1], spread log-uniformly.
  dt = np.asarray(jax.nn.softplus(mixer['dt_proj']['bias']))
  assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 1e-1 * (1 + 1e-4)
  assert dt.min() < 3e-3 and dt.max() > 3e-2
  assert np.abs(mixer['dt_proj']['kernel']).max() <= r ** -0.5
  assert np.abs(mixer['conv1d']['kernel']).max() <= 4 ** -0.5
  # out_proj: PyTorch's default bound 1/sqrt(E), divided by sqrt(layers).
  out = np.abs(mixer['out_proj']['kernel']).max()
  assert 0.9 / math.sqrt(e * 2) < out <= 1 / math.sqrt(e * 2)
  assert np.abs(mixer['in_proj']['kernel']).max() <= 32 ** -0.5
  np.testing.assert_allclose(np.std(params['embeddings']['embedding']), 0.02, rtol=0.05)


def test_greedy_sampling_through_the_lm_task_follows_the_full_forward_pass(tiny):
  config = config_lib.load('configs/mamba_pydoc.py:variant=tiny')
  assert dict(config.model) == dict(TINY, scan='sequential')  # the `tiny` fixture's network
  model, variables, _ = tiny
  lm_checks.check_greedy_sampling(config, model, variables)


def test_beam_search_reorders_the_recurrent_state(tiny):
  # Beam search gathers cache rows along the batch axis when beams swap parents; a state
  # left behind makes the returned score differ from the full forward pass's.
  model, variables, tokens = tiny
  lm_checks.check_beam_search(model, variables, tokens[:, :3])


def test_tiny_config_trains_resumes_and_samples_alike_on_8_devices(tmp_path, data_dir):
  lm_checks.check_trains_and_resumes('mamba_pydoc.py:variant=tiny', tmp_path, data_dir)
  lm_checks.check_sampler_one_and_eight('mamba_pydoc.py:variant=tiny', tmp_path / 'straight',
                                        data_dir)
