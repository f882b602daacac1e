"""Hyena: the published size, the FFT convolution against the direct causal sum and a float64
loop, the operator against its recurrence written out in numpy, the implicit filter's
positional features and decay window, causality, cached decoding (greedy and beam search)
against the full forward pass, and the tiny config through the loop with an exact resume."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import vocab
from arch.sequence import hyena
from train import config_lib, summary

import lm_checks

# The reference code's ConvLMHeadModel for configs/experiment/pile/hyena.yaml, summed by
# hand from its module tree per layer: 2 LayerNorms 3,456, in_proj 2,242,080, short_filter
# 10,368, filter (z (2048, 33) 67,584, Sin freq 64, Linear 33->64 2,176, 2 x Linear 64->64
# 8,320, Linear 64->864 55,296, bias 864) 134,304, out_proj 747,360, MLP 2,988,576; 18 layers,
# embedding 50264 x 864 tied with the head, ln_f 1,728.
HYENA_153M = 153_700_416

TINY = dict(hyena.TINY, vocab_size=vocab.BYTE_VOCAB_SIZE)
KEY = jax.random.key(0)


def _tokens(shape, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, vocab.NUM_SPECIAL,
                            vocab.BYTE_VOCAB_SIZE, jnp.int32)


def test_published_size_is_the_reference_configs():
  config = config_lib.load('configs/hyena_pydoc.py:variant=153m')
  params = summary.param_shapes(config)['params']
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == HYENA_153M
  assert sorted(params) == sorted(['embeddings', 'ln_f'] + [f'layers_{i}' for i in range(18)])
  shapes = jax.tree.map(lambda x: x.shape, params['layers_0'])
  assert shapes['mixer'] == {
      'in_proj': {'kernel': (864, 2592), 'bias': (2592,)},
      'short_filter': {'kernel': (3, 2592), 'bias': (2592,)},
      'filter': {'pos_emb': (2048, 33), 'freq': (64,), 'bias': (864,),
                 'fc_in': {'kernel': (33, 64), 'bias': (64,)},
                 'fc_hidden_0': {'kernel': (64, 64), 'bias': (64,)},
                 'fc_hidden_1': {'kernel': (64, 64), 'bias': (64,)},
                 'fc_out': {'kernel': (64, 864)}},
      'out_proj': {'kernel': (864, 864), 'bias': (864,)}}
  assert shapes['mlp'] == {'wi': {'kernel': (864, 1728), 'bias': (1728,)},
                           'wo': {'kernel': (1728, 864), 'bias': (864,)}}
  assert params['embeddings']['embedding'].shape == (50264, 864)  # tied: no head


def _loop_conv(u, h, bias):
  """y_t = sum_{s <= t} h_{t - s} u_s + bias u_t, term by term in float64."""
  u, h, bias = (np.asarray(x, np.float64) for x in (u, h, bias))
  y = np.zeros_like(u)
  for t in range(u.shape[1]):
    for s in range(t + 1):
      y[:, t] += h[t - s] * u[:, s]
  return y + bias * u


def test_fft_convolution_equals_the_direct_causal_convolution():
  k = jax.random.split(jax.random.key(3), 3)
  u = jax.random.normal(k[0], (2, 37, 5))
  h = jax.random.normal(k[1], (37, 5))
  bias = jax.random.normal(k[2], (5,))
  want = _loop_conv(u, h, bias)
  fft = jax.jit(hyena.fft_causal_conv)(u, h, bias)
  direct = jax.jit(hyena.direct_causal_conv)(u, h, bias)
  np.testing.assert_allclose(fft, want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(direct, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(fft, direct, rtol=1e-4, atol=1e-4)
  # Without the zero-padding to 2T the product of spectra wraps around (circular).
  circular = jnp.fft.irfft(jnp.fft.rfft(u, axis=1) * jnp.fft.rfft(h, axis=0)[None], n=37,
                           axis=1) + bias * u
  assert np.abs(np.asarray(circular) - want).max() > 1e-2
  # The direct form at a traced offset: the outputs of positions 20..24 alone.
  part = jax.jit(lambda s: hyena.direct_causal_conv(u, h, bias, s, 5))(jnp.array(20))
  np.testing.assert_allclose(part, want[:, 20:25], rtol=1e-5, atol=1e-5)


def test_positional_features_and_decay_window():
  z = hyena.positional_features(16, 7)
  t = np.arange(16)
  f = np.linspace(1e-4, 2, 3)
  np.testing.assert_allclose(z[:, 0], t / 15, atol=1e-7)
  np.testing.assert_allclose(z[:, 1:4], np.cos(2 * np.pi * np.outer(t, f) / 16), atol=1e-6)
  np.testing.assert_allclose(z[:, 4:], -np.sin(2 * np.pi * np.outer(t, f) / 16), atol=1e-6)
  w = hyena.decay_window(101, 4, fast=0.3, slow=1.5, target=1e-2)
  assert np.all(np.diff(w, axis=0) < 0) and np.all(np.diff(w, axis=1) <= 0)
  np.testing.assert_allclose(w[0], 1.0)
  np.testing.assert_allclose(w[30, -1], 1e-2, rtol=1e-5)  # the fastest: target at t = 0.3
  np.testing.assert_allclose(w[100, 0], 1e-2 ** (1 / 1.5), rtol=1e-5)  # the slowest


def test_filter_is_the_ffn_times_the_window_and_decays_at_init():
  common = dict(channels=8, num_filters=2, max_length=64, pos_dim=9, filter_dim=16)
  f = hyena.ImplicitFilter(**common)
  variables = f.init(KEY, 64)
  h, bias = f.apply(variables, 64)
  raw, _ = hyena.ImplicitFilter(**common, modulate=False).apply(variables, 64)
  assert h.shape == (2, 64, 8) and bias.shape == (2, 8)
  # Channel c = 2 d + n of the window belongs to filter n, channel d.
  window = hyena.decay_window(64, 16).reshape(64, 8, 2).transpose(2, 0, 1)
  np.testing.assert_allclose(h, raw * window, rtol=1e-5, atol=1e-7)
  # The FFN written out in numpy: sin(w a) after each Linear, the last without a bias.
  p = jax.tree.map(np.asarray, nn.meta.unbox(variables)['params'])
  a = p['pos_emb']
  for name in ('fc_in', 'fc_hidden_0', 'fc_hidden_1'):
    a = np.sin(p['freq'] * (a @ p[name]['kernel'] + p[name]['bias']))
  np.testing.assert_allclose(raw, (a @ p['fc_out']['kernel']).reshape(64, 8, 2)
                             .transpose(2, 0, 1), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(bias, p['bias'].reshape(8, 2).T)
  # At init the FFN output stays O(1) over t, so the window sets the magnitude.
  mag = np.abs(np.asarray(h)).mean(axis=(0, 2))
  assert mag[-16:].mean() < 0.1 * mag[:16].mean()
  # A shorter call is the same filter cut short.
  np.testing.assert_allclose(f.apply(variables, 20)[0], h[:, :20], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('recurrence', hyena.RECURRENCES)
def test_operator_is_its_recurrence(recurrence):
  b, t, d, n = 2, 10, 4, 3
  op = hyena.HyenaOperator(order=n, recurrence=recurrence, max_length=16,
                           filter_fn=lambda *a, **k: hyena.ImplicitFilter(
                               *a, **k, pos_dim=5, filter_dim=8))
  x = jax.random.normal(jax.random.key(2), (b, t, d))
  variables = nn.meta.unbox(op.init(KEY, x))
  # Random biases everywhere (the init's zeros would hide a misplaced one).
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  variables = jax.tree.unflatten(tree, [l + 0.3 * jax.random.normal(k, l.shape)
                                        for l, k in zip(leaves, keys)])
  y = op.apply(variables, x)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])
  filters = n if recurrence == 'paper' else n - 1
  h, bias = hyena.ImplicitFilter(d, filters, 16, pos_dim=5, filter_dim=8).apply(
      {'params': variables['params']['filter']}, t)
  u = np.asarray(x, np.float64) @ p['in_proj']['kernel'] + p['in_proj']['bias']
  padded = np.concatenate([np.zeros((b, 2, (n + 1) * d)), u], 1)
  k = p['short_filter']['kernel']
  u = sum(padded[:, j:j + t] * k[j] for j in range(3)) + p['short_filter']['bias']
  *gates, v = np.split(u, n + 1, axis=-1)
  gates = gates[::-1]  # stored last first: x_1 is the N-th block
  for i in range(filters):
    if recurrence == 'paper':
      v = gates[i] * _loop_conv(v, h[i], bias[i])
    else:
      v = _loop_conv(gates[i] * v, h[i], bias[i])
  if recurrence == 'official':
    v = gates[n - 1] * v
  want = v @ p['out_proj']['kernel'] + p['out_proj']['bias']
  np.testing.assert_allclose(y, want, rtol=2e-4, atol=2e-4)


@pytest.fixture(scope='module')
def tiny():
  model = hyena.Model(**TINY)
  tokens = _tokens((2, 12))
  variables = nn.meta.unbox(jax.jit(model.init)(KEY, tokens))
  # out_proj and the MLP's wo start at 0.02 / sqrt(4); perturbing every parameter makes
  # the logits far from uniform, so greedy choices are not near-ties.
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  leaves = [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return model, jax.tree.unflatten(tree, leaves), tokens


@pytest.mark.parametrize('recurrence', hyena.RECURRENCES)
def test_fft_and_direct_give_the_same_model_and_gradients(tiny, recurrence):
  _, variables, tokens = tiny
  fft = hyena.Model(**TINY, recurrence=recurrence)
  direct = hyena.Model(**TINY, recurrence=recurrence, conv='direct')
  variables = {'params': dict(variables['params'])}
  if recurrence == 'official':  # one long filter: the tiny model's fc_out is half as wide
    variables = nn.meta.unbox(fft.init(KEY, tokens))

  def loss(model, v):
    return jnp.mean(jnp.sin(model.apply(v, tokens)) ** 2)
  lf, gf = jax.jit(jax.value_and_grad(lambda v: loss(fft, v)))(variables)
  ld, gd = jax.jit(jax.value_and_grad(lambda v: loss(direct, v)))(variables)
  np.testing.assert_allclose(lf, ld, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(gf), jax.tree.leaves(gd)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-6)
  with pytest.raises(ValueError, match='valid: fft, direct'):
    hyena.Model(**TINY, conv='circular').apply(variables, tokens)
  with pytest.raises(ValueError, match='exceeds max_length 32'):
    fft.apply(variables, _tokens((1, 33)))


def test_logits_are_causal(tiny):
  model, variables, tokens = tiny
  # The direct form is causal bitwise: a later input meets only exact zeros.
  lm_checks.check_causal(hyena.Model(**TINY, conv='direct'), variables, tokens)
  # The FFT mixes every position's rounding into every output: causal to float tolerance.
  apply = jax.jit(model.apply)
  base = apply(variables, tokens)
  changed = apply(variables, tokens.at[:, 7].set(5 + tokens[:, 7] % 200))
  np.testing.assert_allclose(changed[:, :7], base[:, :7], atol=1e-5)
  assert np.abs(changed[:, 7:] - base[:, 7:]).max(axis=-1).min() > 1e-3


@pytest.mark.parametrize('recurrence', hyena.RECURRENCES)
def test_cached_decoding_equals_the_full_forward_pass(recurrence):
  model = hyena.Model(**TINY, recurrence=recurrence)
  tokens = _tokens((2, 12))
  variables = nn.meta.unbox(jax.jit(model.init)(KEY, tokens))
  full = jax.jit(model.apply)(variables, tokens)
  # A zero cache, as the LM task's sampler makes it from a buffer of the final length.
  shapes = jax.eval_shape(lambda: model.init(KEY, tokens, decode=True))['cache']
  filters = 2 if recurrence == 'paper' else 1
  assert jax.tree.map(lambda x: x.shape, shapes['layers_1']) == {
      'mixer': {'short': (2, 2, 96), 'history': (2, 12, filters, 32)}}
  cache = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
  step = jax.jit(lambda c, tok: model.apply({**variables, 'cache': c}, tok, decode=True,
                                            mutable=['cache']))
  # A prompt of 2, a chunk of 5, then one token at a time.
  out = []
  for lo, hi in [(0, 2), (2, 7)] + [(i, i + 1) for i in range(7, tokens.shape[1])]:
    logits, mutated = step(cache, tokens[:, lo:hi])
    cache = mutated['cache']
    out.append(logits)
  np.testing.assert_allclose(jnp.concatenate(out, axis=1), full, atol=2e-5, rtol=2e-5)
  assert int(cache['position']) == 12


def test_greedy_sampling_through_the_lm_task_follows_the_full_forward_pass(tiny):
  config = config_lib.load('configs/hyena_pydoc.py:variant=tiny')
  assert dict(config.model) == dict(TINY, conv='fft')  # the `tiny` fixture's network
  model, variables, _ = tiny
  lm_checks.check_greedy_sampling(config, model, variables)


def test_beam_search_reorders_the_convolution_history(tiny):
  # Beam search gathers cache rows along the batch axis when beams swap parents; a
  # history left behind makes the returned score differ from the full forward pass's.
  model, variables, tokens = tiny
  lm_checks.check_beam_search(model, variables, tokens[:, :3])


def test_tiny_config_trains_resumes_and_samples_alike_on_8_devices(tmp_path, data_dir):
  straight = lm_checks.check_trains_and_resumes('hyena_pydoc.py:variant=tiny', tmp_path,
                                                data_dir)
  assert straight[-1][1] < straight[0][1]
  lm_checks.check_sampler_one_and_eight('hyena_pydoc.py:variant=tiny', tmp_path / 'straight',
                                        data_dir)
