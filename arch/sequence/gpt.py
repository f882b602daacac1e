"""GPT: a decoder-only causal Transformer language model (Radford et al. 2018, 2019).

GPT-2's layout: learned token and position embeddings, pre-LayerNorm blocks with GELU
(tanh) MLPs 4x wide, a final LayerNorm, and the LM head tied to the token embedding.
Residual projections start at 0.02/sqrt(2 * layers) as in GPT-2. `positions='rope'`
swaps the learned table for rotary positions (GPT-NeoX/LLaMA style) and `num_kv_heads`
gives grouped-query attention: the same network family, modern knobs. GPT-3's eight sizes
(Brown et al. 2020) are this layout at 2048 positions (`GPT3`, with dense attention).

Dimension key: B batch, T length, D width, V vocabulary.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from arch.layers import matmul
from arch.layers.attention import token_positions
from arch.layers.embed import LearnedPositions, norm, token_embed
from arch.layers.transformer import Block, decoder_stack

Dtype = Any


class Model(nn.Module):
  """GPT language model: tokens (B, T) int -> next-token logits (B, T, V) float32."""
  vocab_size: int = 50257
  num_layers: int = 12
  num_heads: int = 12
  embed_dim: int = 768
  mlp_dim: Optional[int] = None  # default 4 * embed_dim
  num_kv_heads: Optional[int] = None  # < num_heads: grouped-query attention
  max_length: int = 1024  # positions the learned table holds
  positions: str = 'learned'  # 'learned' | 'rope'
  dropout_rate: float = 0.0  # GPT-2 trained with 0.1 (embeddings, residuals, attention)
  tie_embeddings: bool = True
  norm_eps: float = 1e-5
  remat: str = ''  # activation checkpointing of each block (arch/layers/transformer.py)
  # True: the blocks as one nn.scan, params stacked under 'h' (arch/layers/transformer.py
  # scan_blocks; `stack_layers(params, 'h', num_layers)` converts the unrolled h0, h1, ...)
  scan_layers: bool = False
  # With a `stage` mesh axis > 1: microbatches of the GPipe pipeline over the scanned stack
  # (arch/layers/pipeline.py); 0 = twice the stages.
  pipeline_microbatches: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, train: bool = False, decode: bool = False, context=None):
    if self.positions not in ('learned', 'rope'):
      raise ValueError(f"positions must be 'learned' or 'rope', got {self.positions!r}")
    b, t = tokens_BT.shape
    pos_BT = token_positions(self, b, t, decode)
    if t > self.max_length:
      raise ValueError(f'sequence length {t} exceeds max_length {self.max_length}')
    embed = token_embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='wte')
    x_BTD = embed(tokens_BT)
    if self.positions == 'learned':
      x_BTD = x_BTD + LearnedPositions(self.max_length, self.embed_dim,
                                       param_dtype=self.param_dtype, name='wpe')(pos_BT)
    x_BTD = nn.Dropout(self.dropout_rate)(x_BTD.astype(self.dtype), deterministic=not train)
    x_BTD = decoder_stack(self, Model, x_BTD, pos_BT, train=train, decode=decode,
                          context=context, name='h')
    x_BTD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='ln_f')(x_BTD)
    if self.tie_embeddings:
      logits_BTV = embed.attend(x_BTD)
    else:
      logits_BTV = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype,
                            param_dtype=self.param_dtype, name='lm_head',
                            dot_general=matmul.dot_general,
                            kernel_init=nn.with_logical_partitioning(
                                nn.initializers.normal(0.02), ('embed', 'vocab')))(x_BTD)
    return logits_BTV.astype(jnp.float32)

  def block_fields(self) -> dict:
    """The fields of every Block of the stack."""
    return dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.embed_dim,
                num_kv_heads=self.num_kv_heads, pre_norm=True, norm_eps=self.norm_eps,
                activation='gelu_tanh', rope=self.positions == 'rope',
                dropout_rate=self.dropout_rate, attention_dropout_rate=self.dropout_rate,
                init_stddev=0.02, out_init_stddev=0.02 / np.sqrt(2 * self.num_layers),
                remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype)

  def layer(self, i: int, x_BTD, pos_BT, *, train: bool, decode: bool, context=None):
    """Block h{i}. A subclass interleaves layers of its own by overriding this (Flamingo's
    gated cross-attention, arch/multimodal/flamingo.py), reading `context`: whatever the
    caller passed to `__call__`, handed through unchanged (GPT itself takes none)."""
    if context is not None:
      raise ValueError('GPT takes no context; a subclass that reads one overrides layer()')
    return Block(**self.block_fields(), name=f'h{i}')(
        x_BTD, causal=True, positions_BT=pos_BT, deterministic=not train, decode=decode)


# Hugging Face's gpt2, gpt2-medium, gpt2-large, gpt2-xl (GPT2LMHeadModel, tied head).
VARIANTS = {
    'gpt2': dict(num_layers=12, num_heads=12, embed_dim=768),
    'gpt2-medium': dict(num_layers=24, num_heads=16, embed_dim=1024),
    'gpt2-large': dict(num_layers=36, num_heads=20, embed_dim=1280),
    'gpt2-xl': dict(num_layers=48, num_heads=25, embed_dim=1600),
}
# GPT-3 (Brown et al. 2020, table 2.1): GPT-2's layout at n_ctx 2048, vocabulary 50257.
# The table's rows (layers, d_model, heads x d_head) with two of its entries reconciled:
# 1.3B lists 24 heads of 128 on d_model 2048 (24 x 128 = 3072; an attention 3072 wide would
# make it 1.5B), here 16 heads of 128; 13B lists d_model 5140 (40 heads x 128 = 5120),
# here 5120 (how d_model splits into heads leaves the count as it is). The table's
# alternating dense / locally banded sparse attention layers are not built: every layer
# here attends densely (the pattern has no parameters, so the counts are the same).
GPT3 = {  # name: (layers, d_model, heads), the paper's stated size in the comment
    'gpt3-small': (12, 768, 12),  # 125M
    'gpt3-medium': (24, 1024, 16),  # 350M
    'gpt3-large': (24, 1536, 16),  # 760M
    'gpt3-xl': (24, 2048, 16),  # 1.3B
    'gpt3-2.7b': (32, 2560, 32),  # 2.7B
    'gpt3-6.7b': (32, 4096, 32),  # 6.7B
    'gpt3-13b': (40, 5120, 40),  # 13.0B
    'gpt3-175b': (96, 12288, 96),  # 175.0B
}
VARIANTS.update({name: dict(num_layers=n, embed_dim=d, num_heads=h, max_length=2048)
                 for name, (n, d, h) in GPT3.items()})
TINY = dict(num_layers=2, num_heads=4, embed_dim=64, max_length=128)
