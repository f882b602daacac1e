"""The Transformer: the encoder-decoder of Vaswani et al. 2017, "Attention is all you need".

Token embeddings scaled by sqrt(D) plus fixed sinusoidal positions, dropout, then post-norm
layers (x = LayerNorm(x + Dropout(sublayer(x)))) with ReLU MLPs: 6 encoder layers of
self-attention, 6 decoder layers of causal self-attention and cross-attention. As in the
paper (section 3.4), with a joint source/target vocabulary the two embeddings and the
pre-softmax projection share one matrix (`share_embeddings`, `tie_embeddings`).

Biases sit on every projection (the MLP's, as the paper writes them, and the attention's,
as in fairseq's and tensor2tensor-era reimplementations; the shared `Block` has one switch
for both); LayerNorm eps 1e-6 as in tensor2tensor. Embeddings start at N(0, D^-1/2), so
that times sqrt(D) they are of unit scale. Parameters, with the paper's 37000-token
joint BPE vocabulary (WMT En-De), shared and tied: base 63,082,496 and big 214,245,376
(the paper's table 3 says 65M and 213M); the formula is in tests/test_t5_transformer.py.

encode / decode / __call__ are `arch.layers.transformer.EncoderDecoder`'s (the seq2seq
and denoising tasks and the beam-search sampler call them). With decode=True the decoder's
self-attention keeps a KV cache in the 'cache' collection (created by
`init(rngs, src_BS, tgt_BT_of_max_len, decode=True)`) and its positions continue from
the cache.

Dimension key: B batch, S source length, T target length, D width, V vocabulary.
"""

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from arch.layers.attention import token_positions
from arch.layers.embed import sinusoids, token_embed
from arch.layers.transformer import Block, EncoderDecoder, run_blocks
from arch import vocab

Dtype = Any


class Stack(nn.Module):
  """The encoder (is_decoder=False) or the decoder: scaled embeddings + sinusoids, dropout,
  post-LN blocks (causal, with cross-attention, in the decoder). Returns (B, T, D)."""
  embed: nn.Module  # this side's token embedding (possibly shared)
  block: Callable[..., nn.Module]  # functools.partial(Block, ...) without cross_attention
  num_layers: int
  max_length: int
  is_decoder: bool = False
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, enc_BSD=None, enc_mask_BS=None, *, train: bool = False,
               decode: bool = False):
    b, t = tokens_BT.shape
    if t > self.max_length:
      raise ValueError(f'sequence length {t} exceeds max_length {self.max_length}')
    pos_BT = token_positions(self, b, t, decode and self.is_decoder)
    d = self.embed.features
    table_LD = jnp.asarray(sinusoids(self.max_length, d))
    x_BTD = self.embed(tokens_BT) * np.sqrt(d) + jnp.take(table_LD, pos_BT, axis=0)
    x_BTD = nn.Dropout(self.dropout_rate)(x_BTD.astype(self.dtype), deterministic=not train)
    return run_blocks(self.block, self.num_layers, x_BTD, is_decoder=self.is_decoder,
                      enc_BSD=enc_BSD, enc_mask_BS=enc_mask_BS, positions_BT=pos_BT,
                      train=train, decode=decode)


class Model(EncoderDecoder):
  """Transformer: source (B, S) and shifted target (B, T) int -> logits (B, T, V) float32."""
  vocab_size: int = 37_000  # the source's, and the target's unless tgt_vocab_size
  tgt_vocab_size: Optional[int] = None
  share_embeddings: bool = True  # one table for source and target (joint vocabulary)
  tie_embeddings: bool = True  # pre-softmax projection = target embedding^T
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  num_heads: int = 8
  embed_dim: int = 512
  mlp_dim: int = 2048
  max_length: int = 1024  # rows of the sinusoid table (no parameters)
  dropout_rate: float = 0.0  # the paper's P_drop: 0.1 (base), 0.3 (big En-De)
  attention_dropout_rate: float = 0.0  # not in the paper; tensor2tensor's option
  norm_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    tgt_vocab = self.tgt_vocab_size or self.vocab_size
    if self.share_embeddings and tgt_vocab != self.vocab_size:
      raise ValueError(f'share_embeddings needs one vocabulary; got source {self.vocab_size}'
                       f' and target {tgt_vocab}')
    embed = functools.partial(token_embed, dim=self.embed_dim, stddev=self.embed_dim ** -0.5,
                              dtype=self.dtype, param_dtype=self.param_dtype)
    self.embed = embed(self.vocab_size)  # the source's, and the target's when shared
    self.tgt_embed = None if self.share_embeddings else embed(tgt_vocab)
    self.output = None if self.tie_embeddings else nn.Dense(
        tgt_vocab, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                 ('embed', 'vocab')))
    block = functools.partial(
        Block, self.num_heads, self.mlp_dim, pre_norm=False, norm_eps=self.norm_eps,
        activation='relu', use_bias=True, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, dtype=self.dtype,
        param_dtype=self.param_dtype)
    stack = functools.partial(Stack, block=block, max_length=self.max_length,
                              dropout_rate=self.dropout_rate, dtype=self.dtype)
    self.encoder = stack(self.embed, num_layers=self.num_encoder_layers, is_decoder=False)
    self.decoder = stack(self._target_embed(), num_layers=self.num_decoder_layers,
                         is_decoder=True)

  def _target_embed(self):
    return self.embed if self.share_embeddings else self.tgt_embed

  def logits(self, x_BTD):
    if self.tie_embeddings:
      return self._target_embed().attend(x_BTD)
    return self.output(x_BTD)


# The paper's table 3, with its WMT En-De joint BPE vocabulary of about 37000 tokens.
VARIANTS = {
    'base': dict(num_encoder_layers=6, num_decoder_layers=6, num_heads=8, embed_dim=512,
                 mlp_dim=2048),
    'big': dict(num_encoder_layers=6, num_decoder_layers=6, num_heads=16, embed_dim=1024,
                mlp_dim=4096),
}
TINY = dict(vocab_size=vocab.BYTE_VOCAB_SIZE, num_encoder_layers=2, num_decoder_layers=2,
            num_heads=4, embed_dim=64, mlp_dim=256, max_length=128)
