"""LLaMA: the decoder-only Transformer language model of Touvron et al. 2023a, "LLaMA: Open
and Efficient Foundation Language Models", and Llama 2 (Touvron et al. 2023b).

LLaMA's changes to the GPT decoder (its section 2.2), each taken from an earlier model:
pre-normalisation, the input of every sub-layer normalised with RMSNorm (Zhang & Sennrich
2019: x / sqrt(mean(x^2) + eps) * g, no centring, no bias); the SwiGLU feed-forward
(Shazeer 2020: (SiLU(x W_gate) * x W_up) W_down) with a hidden width of 2/3 * 4D instead of
4D; rotary position embeddings (Su et al. 2021) in every layer instead of absolute ones.
No biases anywhere, and the output projection is a matrix of its own (untied). Llama 2
keeps this and adds grouped-query attention (Ainslie et al. 2023) to its largest models;
TinyLlama (Zhang et al. 2024) uses it at 1.1B parameters (32 query heads, 4 key/value heads).

Hugging Face's LlamaForCausalLM layout and parameter counts (`sum(p.numel())`):
Llama-2-7B 6,738,415,616 and TinyLlama-1.1B 1,100,048,384. Parameter names are the shared
Block's: HF's q/k/v/o_proj are self_attn/{query,key,value,out}, gate/up/down_proj are
mlp/{wi,wi_up,wo}, input/post_attention_layernorm are {self_attn,mlp}_norm. Rotary pairs use the half-split
layout (x[i], x[i + H/2]) of HF's `rotate_half` (Meta's checkpoints rotate interleaved
pairs; HF's conversion permutes the query/key weights to match). `rope_scale` > 1 is linear
position interpolation (Chen et al. 2023) to stretch the trained context.

Initialisation, which the papers do not give: normal(0.02) for every kernel and the
embedding, projections into the residual stream 0.02 / sqrt(2 * layers) as GPT-2 (and
arch/sequence/gpt.py), so that on the same data the two differ in architecture only.

The interface is gpt.Model's: `Model(...)(tokens_BT, *, train, decode)` -> logits (B, T, V)
float32, and with decode=True a KV cache and a position counter in the 'cache' collection
(arch/layers/attention.py), so the causal-LM task (arch/sequence/lm.py) trains it and
samples from it (arch/sequence/decoding.py) as it does GPT.

Dimension key: B batch, T length, D width, V vocabulary.
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.attention import token_positions
from arch.layers.embed import norm, token_embed
from arch.layers.transformer import Block, decoder_stack

Dtype = Any


def swiglu_width(embed_dim: int, multiple_of: int = 256) -> int:
  """LLaMA's SwiGLU hidden width: 2/3 of 4D (the gate's third matrix keeps the parameter
  count of a 4D MLP), rounded up to a multiple of `multiple_of`; 11008 at D = 4096."""
  hidden = int(2 * 4 * embed_dim / 3)
  return multiple_of * math.ceil(hidden / multiple_of)


class Model(nn.Module):
  """LLaMA language model: tokens (B, T) int -> next-token logits (B, T, V) float32."""
  vocab_size: int = 32000
  num_layers: int = 32
  num_heads: int = 32
  embed_dim: int = 4096
  mlp_dim: Optional[int] = None  # default swiglu_width(embed_dim)
  num_kv_heads: Optional[int] = None  # < num_heads: grouped-query attention
  max_length: int = 4096  # the longest input accepted (Llama 2 trained on 4096 tokens)
  rope_max_wavelength: float = 10_000.0  # RoPE's base, theta
  rope_scale: float = 1.0  # > 1: linear position interpolation (raise max_length with it)
  dropout_rate: float = 0.0  # LLaMA has none; on embeddings, residuals and attention
  norm_eps: float = 1e-5  # Llama 2's and TinyLlama's (LLaMA 1: 1e-6)
  init_stddev: float = 0.02
  remat: str = ''  # activation checkpointing of each block (arch/layers/transformer.py)
  # True: the blocks as one nn.scan, params stacked under 'layers' (as gpt.Model's;
  # `stack_layers(params, 'layers', n, lambda i: f'layers_{i}')` converts unrolled ones)
  scan_layers: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, train: bool = False, decode: bool = False, context=None):
    b, t = tokens_BT.shape
    if t > self.max_length:
      raise ValueError(f'sequence length {t} exceeds max_length {self.max_length}')
    pos_BT = token_positions(self, b, t, decode)
    x_BTD = token_embed(self.vocab_size, self.embed_dim, self.init_stddev, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='embed_tokens')(tokens_BT)
    x_BTD = nn.Dropout(self.dropout_rate)(x_BTD.astype(self.dtype), deterministic=not train)
    x_BTD = decoder_stack(self, Model, x_BTD, pos_BT, train=train, decode=decode,
                          context=context, name='layers')
    x_BTD = norm('rms', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='norm')(x_BTD)
    head_init = nn.initializers.normal(self.init_stddev)
    logits_BTV = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype,
                          param_dtype=self.param_dtype, name='lm_head',
                          kernel_init=nn.with_logical_partitioning(
                              head_init, ('embed', 'vocab')))(x_BTD)
    return logits_BTV.astype(jnp.float32)

  def layer(self, i: int, x_BTD, pos_BT, *, train: bool, decode: bool, context=None):
    """Block layers_{i}: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)). As in
    gpt.Model, a subclass may override it to interleave layers of its own reading
    `context`; LLaMA itself takes none."""
    if context is not None:
      raise ValueError('LLaMA takes no context; a subclass that reads one overrides layer()')
    return Block(**self.block_fields(), name=f'layers_{i}')(
        x_BTD, causal=True, positions_BT=pos_BT, deterministic=not train, decode=decode)

  def block_fields(self) -> dict:
    """The fields of every Block of the stack."""
    return dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim or swiglu_width(self.embed_dim),
                num_kv_heads=self.num_kv_heads, pre_norm=True, norm='rms',
                norm_eps=self.norm_eps, activation='silu', gated_mlp=True, use_bias=False,
                rope=True, rope_max_wavelength=self.rope_max_wavelength,
                rope_scale=self.rope_scale, dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.dropout_rate, init_stddev=self.init_stddev,
                out_init_stddev=self.init_stddev / math.sqrt(2 * self.num_layers),
                remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype)


# Hugging Face's meta-llama/Llama-2-7b-hf and TinyLlama/TinyLlama-1.1B (LlamaConfig's
# hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
# intermediate_size, max_position_embeddings; vocabulary 32000, theta 10000, eps 1e-5).
VARIANTS = {
    'llama2-7b': dict(num_layers=32, num_heads=32, embed_dim=4096, mlp_dim=11008,
                      max_length=4096),
    'tinyllama-1.1b': dict(num_layers=22, num_heads=32, num_kv_heads=4, embed_dim=2048,
                           mlp_dim=5632, max_length=2048),
}
TINY = dict(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, mlp_dim=64,
            max_length=64)
