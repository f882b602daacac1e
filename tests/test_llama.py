"""LLaMA: published sizes, RMSNorm and SwiGLU as the papers write them, causality, GQA,
cached decoding and the sampler against the full forward pass, and the tiny config
through the loop with an exact resume."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import vocab
from arch.layers.embed import Mlp, norm
from arch.sequence import llama
from train import config_lib, summary

import lm_checks

# Hugging Face transformers: sum(p.numel() for p in LlamaForCausalLM(config).parameters())
# for the meta-llama/Llama-2-7b-hf and TinyLlama/TinyLlama-1.1B configs (untied head).
HF_LLAMA = {'llama2-7b': 6_738_415_616, 'tinyllama-1.1b': 1_100_048_384}

TINY = dict(llama.TINY, vocab_size=vocab.BYTE_VOCAB_SIZE)
KEY = jax.random.key(0)


def _tokens(shape, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, vocab.NUM_SPECIAL,
                            vocab.BYTE_VOCAB_SIZE, jnp.int32)


@pytest.mark.parametrize('variant', sorted(HF_LLAMA))
def test_published_sizes_equal_hugging_face(variant):
  config = config_lib.load(f'configs/llama_pydoc.py:variant={variant}')
  params = summary.param_shapes(config)['params']
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == HF_LLAMA[variant]
  # No biases anywhere; the head is a matrix of its own (untied).
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  assert not [p for p in paths if 'bias' in p]
  assert params['lm_head']['kernel'].shape == params['embed_tokens']['embedding'].shape[::-1]


def test_swiglu_width_is_llamas_rule():
  # 2/3 * 4D rounded up to a multiple of 256: the published intermediate sizes.
  assert llama.swiglu_width(4096) == 11008 and llama.swiglu_width(2048) == 5632
  assert llama.swiglu_width(5120) == 13824  # LLaMA-13B


def test_rms_norm_is_the_papers_formula():
  x = jax.random.normal(jax.random.key(2), (2, 3, 8)) * 3.0 + 1.0
  layer = norm('rms', 1e-5)
  variables = nn.meta.unbox(layer.init(KEY, x))
  g = jax.random.normal(jax.random.key(3), (8,))
  got = layer.apply({'params': {'scale': g}}, x)
  xn = np.asarray(x, np.float64)
  want = xn / np.sqrt((xn ** 2).mean(-1, keepdims=True) + 1e-5) * np.asarray(g)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert set(variables['params']) == {'scale'}  # no centring, no bias


def test_swiglu_mlp_is_silu_gate_times_up_then_down():
  shapes = jax.eval_shape(llama.Model(**TINY).init, KEY, _tokens((1, 5)))
  mlp_shapes = nn.meta.unbox(shapes)['params']['layers_0']['mlp']
  assert {k: v['kernel'].shape for k, v in mlp_shapes.items()} == {
      'wi': (32, 64), 'wi_up': (32, 64), 'wo': (64, 32)}  # gate, up, down; no biases
  layer = Mlp(64, 'silu', gated=True, use_bias=False)
  x = jax.random.normal(jax.random.key(4), (2, 32))
  mlp = nn.meta.unbox(layer.init(KEY, x))['params']
  a, b = x @ mlp['wi']['kernel'], x @ mlp['wi_up']['kernel']
  np.testing.assert_allclose(layer.apply({'params': mlp}, x),
                             (a * jax.nn.sigmoid(a) * b) @ mlp['wo']['kernel'],
                             rtol=1e-5, atol=1e-6)


@pytest.fixture(scope='module')
def tiny():
  model = llama.Model(**TINY)
  tokens = _tokens((2, 12))
  variables = nn.meta.unbox(jax.jit(model.init)(KEY, tokens))
  return model, variables, tokens


def test_logits_are_causal(tiny):  # order from rotary positions
  lm_checks.check_causal(*tiny)


def test_cached_decoding_equals_the_full_forward_pass(tiny):
  # Rotary positions with linear interpolation and GQA: a wrong position in the cached
  # path, or a key/value head mixed up in the cache, changes the logits.
  _, variables, tokens = tiny
  model = llama.Model(**TINY, rope_scale=4.0)
  full = jax.jit(model.apply)(variables, tokens)
  # A zero cache of the full length, as the LM task's sampler makes it.
  shapes = jax.eval_shape(lambda: model.init(KEY, tokens, decode=True))['cache']
  cache = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
  step = jax.jit(lambda c, tok: model.apply({**variables, 'cache': c}, tok, decode=True,
                                            mutable=['cache']))
  logits, mutated = step(cache, tokens[:, :4])  # a prompt of 4, then one token at a time
  out = [logits]
  for i in range(4, tokens.shape[1]):
    logits, mutated = step(mutated['cache'], tokens[:, i:i + 1])
    out.append(logits)
  np.testing.assert_allclose(jnp.concatenate(out, axis=1), full, atol=2e-5, rtol=2e-5)


def test_rope_options_reach_every_layer(tiny):
  model, variables, tokens = tiny
  base = jax.jit(model.apply)(variables, tokens)
  for other in (dict(rope_scale=2.0), dict(rope_max_wavelength=500_000.0)):
    out = jax.jit(llama.Model(**TINY, **other).apply)(variables, tokens)
    np.testing.assert_array_equal(out[:, 0], base[:, 0])  # position 0 is not rotated
    assert np.abs(out[:, 1:] - base[:, 1:]).max() > 1e-6, other


def test_grouped_query_attention_is_mha_with_shared_kv_heads(tiny):
  gqa, gqa_vars, tokens = tiny
  mha = llama.Model(**dict(TINY, num_kv_heads=None))
  # num_kv_heads = num_heads is multi-head attention: the same parameters, the same logits.
  full_kv = llama.Model(**dict(TINY, num_kv_heads=TINY['num_heads']))
  mha_shapes = jax.eval_shape(mha.init, KEY, tokens)
  assert jax.tree.structure(jax.eval_shape(full_kv.init, KEY, tokens)) == jax.tree.structure(
      mha_shapes)
  # GQA (4 query heads, 2 key/value heads) is MHA whose key/value heads are repeated per
  # group of 2 consecutive query heads.
  g = TINY['num_heads'] // TINY['num_kv_heads']
  repeated = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.repeat(x, g, axis=1) if any(
          getattr(k, 'key', None) in ('key', 'value') for k in path) else x,
      gqa_vars['params'])
  assert repeated['layers_0']['self_attn']['key']['kernel'].shape == (32, 4, 8)
  want = jax.jit(gqa.apply)(gqa_vars, tokens)
  for model in (mha, full_kv):
    np.testing.assert_allclose(jax.jit(model.apply)({'params': repeated}, tokens), want,
                               atol=1e-5, rtol=1e-5)


def test_greedy_sampling_through_the_lm_task_follows_the_full_forward_pass(tiny):
  config = config_lib.load('configs/llama_pydoc.py:variant=tiny')
  assert dict(config.model) == TINY  # the network of the `tiny` fixture
  model, variables, _ = tiny
  lm_checks.check_greedy_sampling(config, model, variables)


def test_tiny_config_trains_resumes_and_samples_alike_on_8_devices(tmp_path, data_dir):
  lm_checks.check_trains_and_resumes('llama_pydoc.py:variant=tiny', tmp_path, data_dir)
  lm_checks.check_sampler_one_and_eight('llama_pydoc.py:variant=tiny', tmp_path / 'straight',
                                        data_dir)
