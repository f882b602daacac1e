"""BART: a denoising sequence-to-sequence Transformer (Lewis et al. 2020).

Hugging Face's `BartForConditionalGeneration` layout: one token embedding shared by the
encoder, the decoder and the (tied) LM head; per-stack learned positions with BART's
offset of 2 (a table of max_length + 2 rows, looked up at position + 2); a LayerNorm
(`layernorm_embedding`) right after the embeddings of each stack; post-LayerNorm blocks
with exact-GELU MLPs and biases everywhere; normal(0.02) initialisation.

HF's `final_logits_bias` is left out: it is a registered buffer (not a parameter, not
trained, zeros in the released checkpoints), so a zero constant would add nothing; a
checkpoint converter can drop it. Parameter counts equal HF's
`sum(p.numel() for p in model.parameters())` (tied weights once): bart-base 139,420,416,
bart-large 406,291,456.

encode / decode / __call__ are `arch.layers.transformer.EncoderDecoder`'s (the seq2seq
and denoising tasks and the beam-search sampler call them). With decode=True the decoder's
self-attention keeps a KV cache in the 'cache' collection (created by
`init(rngs, src_BS, tgt_BT_of_max_len, decode=True)`) and its positions continue from
the cache, so a prefix fed whole and the rest one token at a time give the logits of the
teacher-forced call.

Dimension key: B batch, S source length, T target length, D width, V vocabulary.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.attention import token_positions
from arch.layers.embed import LearnedPositions, norm, token_embed
from arch.layers.transformer import Block, EncoderDecoder, run_blocks
from arch import vocab

Dtype = Any
POSITION_OFFSET = 2  # BART's learned position table starts at row 2 (fairseq's padding_idx + 1)


class Stack(nn.Module):
  """BART's encoder (is_decoder=False) or decoder: token + learned positions,
  layernorm_embedding, dropout, then post-LN blocks (causal, with cross-attention, in the
  decoder). Returns the last hidden states (B, T, D)."""
  embed: nn.Module  # the shared token embedding
  block: Callable[..., nn.Module]  # functools.partial(Block, ...) without cross_attention
  num_layers: int
  max_length: int
  is_decoder: bool = False
  scan_layers: bool = False  # the blocks as one nn.scan (run_blocks)
  dropout_rate: float = 0.0
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, enc_BSD=None, enc_mask_BS=None, *, train: bool = False,
               decode: bool = False):
    b, t = tokens_BT.shape
    if t > self.max_length:
      raise ValueError(f'sequence length {t} exceeds max_length {self.max_length}')
    pos_BT = token_positions(self, b, t, decode and self.is_decoder)
    d = self.embed.features
    x_BTD = self.embed(tokens_BT) + LearnedPositions(
        self.max_length + POSITION_OFFSET, d, param_dtype=self.param_dtype,
        name='embed_positions')(pos_BT + POSITION_OFFSET)
    x_BTD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='layernorm_embedding')(x_BTD.astype(self.dtype))
    x_BTD = nn.Dropout(self.dropout_rate)(x_BTD, deterministic=not train)
    return run_blocks(self.block, self.num_layers, x_BTD, is_decoder=self.is_decoder,
                      enc_BSD=enc_BSD, enc_mask_BS=enc_mask_BS, positions_BT=pos_BT,
                      train=train, decode=decode, scan=self.scan_layers)


class Model(EncoderDecoder):
  """BART: source (B, S) and shifted target (B, T) int -> target logits (B, T, V) float32."""
  vocab_size: int = 50265
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  num_heads: int = 12
  embed_dim: int = 768
  mlp_dim: int = 3072
  max_length: int = 1024  # positions each learned table holds (plus BART's offset of 2)
  dropout_rate: float = 0.0  # BART trained with 0.1 (embeddings, residual branches)
  attention_dropout_rate: float = 0.0
  activation_dropout_rate: float = 0.0  # on the MLP's hidden activations
  norm_eps: float = 1e-5
  # Each stack's blocks as one nn.scan, params and caches stacked under encoder/layers and
  # decoder/layers (arch/layers/transformer.py run_blocks; stack_layers converts).
  scan_layers: bool = False
  remat: str = ''  # activation checkpointing of each block (arch/layers/transformer.py)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.shared = token_embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    block = functools.partial(
        Block, self.num_heads, self.mlp_dim, pre_norm=False, norm_eps=self.norm_eps,
        activation='gelu', use_bias=True, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate,
        mlp_dropout_rate=self.activation_dropout_rate, init_stddev=0.02, remat=self.remat,
        dtype=self.dtype, param_dtype=self.param_dtype)
    stack = functools.partial(Stack, self.shared, block, max_length=self.max_length,
                              scan_layers=self.scan_layers,
                              dropout_rate=self.dropout_rate, norm_eps=self.norm_eps,
                              dtype=self.dtype, param_dtype=self.param_dtype)
    self.encoder = stack(num_layers=self.num_encoder_layers, is_decoder=False)
    self.decoder = stack(num_layers=self.num_decoder_layers, is_decoder=True)

  def logits(self, x_BTD):
    return self.shared.attend(x_BTD)


# Hugging Face's facebook/bart-base and facebook/bart-large (BartForConditionalGeneration).
VARIANTS = {
    'base': dict(num_encoder_layers=6, num_decoder_layers=6, num_heads=12, embed_dim=768,
                 mlp_dim=3072),
    'large': dict(num_encoder_layers=12, num_decoder_layers=12, num_heads=16, embed_dim=1024,
                  mlp_dim=4096),
}
TINY = dict(vocab_size=vocab.BYTE_VOCAB_SIZE, num_encoder_layers=2, num_decoder_layers=2,
            num_heads=4, embed_dim=64, mlp_dim=256, max_length=128)
