"""BERT: a bidirectional Transformer encoder with its pre-training heads (Devlin et al. 2019).

The encoder sums word, learned position and token-type (segment) embeddings, normalises
them (LayerNorm, eps 1e-12) and runs post-LayerNorm blocks with exact-GELU MLPs 4x wide.
Pad tokens (id 0) are masked as attention keys. Two heads, as in Hugging Face's
`BertForPreTraining`: the masked-LM head (dense + GELU + LayerNorm, then logits tied to the
word embeddings plus a per-token output bias) and the next-sentence head (the pooler,
dense + tanh on the first token, then a 2-way classifier; class 0 = "B follows A").
All weights start at normal(0.02), as in the paper's code. The objective is
`arch/sequence/mlm.py`.

RoBERTa (Liu et al. 2019) is this encoder and masked-LM head trained differently (no NSP
and dynamic masking, the objective's options; full-sentence windows; bigger batches), with
four changes to the network, all fields here (`ROBERTA`): a type vocabulary of 1, no
pooler (Hugging Face's RobertaForMaskedLM), LayerNorm eps 1e-5, and positions offset past
fairseq's padding index (`position_offset=2`): real token k sits at row k + 2 of a
514-row table and padding at row 1, so 512 tokens need max_length 514.

Dimension key: B batch, T length, D width, V vocabulary.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.attention import key_mask
from arch.layers.embed import ACTIVATIONS, LearnedPositions, norm, token_embed
from arch.layers.transformer import Block, run_blocks
from arch import vocab

Dtype = Any
INIT_STDDEV = 0.02


def _dense(features, axes, dtype, param_dtype, name):
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(
                      nn.initializers.normal(INIT_STDDEV), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))


class Model(nn.Module):
  """BERT for pre-training: tokens (B, T) -> {'mlm_logits' (B, T, V), 'nsp_logits' (B, 2)}
  (float32), plus the encoder output 'hidden' (B, T, D) and 'pooled' (B, D).
  `pretraining_heads=False` is the encoder and pooler alone (Hugging Face's BertModel):
  'hidden' and 'pooled' only."""
  vocab_size: int = 30522
  num_layers: int = 12
  num_heads: int = 12
  embed_dim: int = 768
  mlp_dim: Optional[int] = None  # default 4 * embed_dim
  max_length: int = 512  # positions the learned table holds
  # > 0 (RoBERTa: 2): real tokens take rows offset, offset + 1, ... counted over non-pad
  # tokens, padding takes row offset - 1 (fairseq's padding_idx); 0: rows 0..T-1 (BERT).
  position_offset: int = 0
  type_vocab_size: int = 2  # segments A and B; 0: no segment embeddings (DistilBERT)
  dropout_rate: float = 0.1  # embeddings, residual branches and attention weights
  norm_eps: float = 1e-12
  pretraining_heads: bool = True  # the masked-LM and next-sentence heads
  pooler: bool = True  # False: no pooler and no next-sentence head (DistilBERT)
  remat: str = ''  # activation checkpointing of each block (arch/layers/transformer.py)
  # The blocks as one nn.scan, params stacked under 'layers' (`stack_layers(params,
  # 'layers', num_layers, lambda i: f'layer{i}')` converts an unrolled checkpoint).
  scan_layers: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, token_types_BT=None, train: bool = False):
    b, t = tokens_BT.shape
    if t + self.position_offset > self.max_length:
      raise ValueError(f'sequence length {t} (+ position_offset {self.position_offset}) '
                       f'exceeds max_length {self.max_length}')
    if token_types_BT is None:
      token_types_BT = jnp.zeros_like(tokens_BT)
    if self.position_offset:
      real_BT = (tokens_BT != vocab.PAD).astype(jnp.int32)
      pos_BT = (jnp.cumsum(real_BT, axis=1) * real_BT + self.position_offset - 1)
    else:
      pos_BT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    dense = lambda features, axes, name: _dense(features, axes, self.dtype, self.param_dtype,
                                                name)
    layer_norm = lambda name: norm('layer', self.norm_eps, dtype=self.dtype,
                                   param_dtype=self.param_dtype, name=name)

    # Embeddings.
    words = token_embed(self.vocab_size, self.embed_dim, INIT_STDDEV, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='word_embeddings')
    x_BTD = (words(tokens_BT)
             + LearnedPositions(self.max_length, self.embed_dim, INIT_STDDEV,
                                param_dtype=self.param_dtype,
                                name='position_embeddings')(pos_BT).astype(self.dtype))
    if self.type_vocab_size:
      types = nn.Embed(self.type_vocab_size, self.embed_dim, dtype=self.dtype,
                       param_dtype=self.param_dtype, name='token_type_embeddings',
                       embedding_init=nn.with_logical_partitioning(
                           nn.initializers.normal(INIT_STDDEV), ('token_types', 'embed')))
      x_BTD = x_BTD + types(token_types_BT)
    x_BTD = layer_norm('embed_norm')(x_BTD)
    x_BTD = nn.Dropout(self.dropout_rate)(x_BTD, deterministic=not train)

    # Encoder: post-LN blocks, every query attends to every real (non-pad) token.
    block = functools.partial(
        Block, self.num_heads, self.mlp_dim or 4 * self.embed_dim, pre_norm=False,
        norm_eps=self.norm_eps, activation='gelu', dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.dropout_rate, init_stddev=INIT_STDDEV, remat=self.remat,
        dtype=self.dtype, param_dtype=self.param_dtype)
    if self.scan_layers:  # one scanned block, params stacked under 'layers'
      x_BTD = run_blocks(block, self.num_layers, x_BTD, is_decoder=False,
                         enc_mask_BS=tokens_BT != vocab.PAD, train=train, scan=True)
    mask = key_mask(tokens_BT != vocab.PAD)
    for i in range(0 if self.scan_layers else self.num_layers):
      x_BTD = block(name=f'layer{i}')(x_BTD, self_mask=mask, deterministic=not train)

    out = {'hidden': x_BTD}
    if self.pooler:
      out['pooled'] = jnp.tanh(dense(self.embed_dim, ('embed', 'mlp'), 'pooler')(x_BTD[:, 0]))
    if not self.pretraining_heads:
      return out

    # Masked-LM head: transform, then logits tied to the word embeddings plus a bias.
    h_BTD = ACTIVATIONS['gelu'](dense(self.embed_dim, ('embed', 'mlp'), 'mlm_dense')(x_BTD))
    h_BTD = layer_norm('mlm_norm')(h_BTD)
    mlm_bias = self.param('mlm_bias', nn.with_logical_partitioning(
        nn.initializers.zeros, ('vocab',)), (self.vocab_size,), self.param_dtype)
    mlm_logits_BTV = words.attend(h_BTD) + jnp.asarray(mlm_bias, self.dtype)

    out['mlm_logits'] = mlm_logits_BTV.astype(jnp.float32)
    if self.pooler:
      # Next-sentence head: 2 classes from the pooler (on the first, [CLS], token).
      out['nsp_logits'] = dense(2, ('mlp', 'classes'), 'nsp')(out['pooled']).astype(jnp.float32)
    return out


# Hugging Face's bert-base-uncased and bert-large-uncased (BertForPreTraining).
VARIANTS = {
    'base': dict(num_layers=12, num_heads=12, embed_dim=768),
    'large': dict(num_layers=24, num_heads=16, embed_dim=1024),
    # The encoders alone, as the distilled models are published (arch/compress/distill_lm.py):
    # huawei-noah's General_TinyBERT_4L_312D as Hugging Face's BertModel (14,350,248) and
    # distilbert-base-uncased as DistilBertModel (66,362,880: no segments, no pooler).
    'tinybert-4l-312d': dict(num_layers=4, num_heads=12, embed_dim=312, mlp_dim=1200,
                             pretraining_heads=False),
    'distilbert-base': dict(num_layers=6, num_heads=12, embed_dim=768, type_vocab_size=0,
                            pooler=False, pretraining_heads=False),
}
# RoBERTa's changes to the network (Hugging Face's RobertaForMaskedLM, roberta-base and
# roberta-large: byte-level BPE of 50265 ids, 512 tokens + fairseq's 2 offset rows).
ROBERTA = dict(vocab_size=50265, max_length=514, position_offset=2, type_vocab_size=1,
               norm_eps=1e-5, pooler=False)
ROBERTA_VARIANTS = {k: dict(ROBERTA, **VARIANTS[k]) for k in ('base', 'large')}
TINY = dict(vocab_size=vocab.BYTE_VOCAB_SIZE, num_layers=2, num_heads=4, embed_dim=64,
            max_length=128, dropout_rate=0.0)
