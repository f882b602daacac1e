"""MobileBERT: a thin BERT with bottlenecks (Sun et al. 2020, "MobileBERT: a Compact
Task-Agnostic BERT for Resource-Limited Devices").

Every block keeps the teacher's wide inter-block state (D, 512 in the paper) in its
residual stream and works inside a narrow intra-block width (E, 128):
  input bottleneck   x_E = NoNorm(W_in x_D)                       (the block's narrow input)
  shared bottleneck  s_E = NoNorm(W_att x_D): queries and keys read s, values read x_D
  attention          a_E = NoNorm(x_E + W_o MHA(q(s), k(s), v(x_D)))   N heads of E / N
  stacked FFNs       a_E = NoNorm(a_E + W_2 relu(W_1 a_E)), F times (F - 1 extra; the
                     paper's 4 FFNs balance the parameters between attention and FFN)
  output bottleneck  y_D = NoNorm(x_D + W_up a_E)
NoNorm(x) = x * gamma + beta, an elementwise affine map in place of LayerNorm (the paper's
latency change). Embeddings are factorised: word vectors of width C (128) are joined
with their neighbours' (a 3-gram convolution, kernel 3: [next, this, previous] -> 3C),
projected to D, then added to position and segment embeddings and NoNorm'd.
The pre-training heads follow Hugging Face's MobileBertForPreTraining: a dense + ReLU +
LayerNorm transform, then logits against the word vectors (C wide) joined with a learned
(D - C)-wide extension of them, plus a bias; next-sentence prediction from the pooler.
`variant='mobilebert'` is google/mobilebert-uncased (24 blocks, D 512, E 128, 4 heads,
4 FFNs of 512, C 128); with `pretraining_heads=False` it is Hugging Face's
MobileBertModel, 24,844,544 parameters (checked against transformers 5.25).

It is a student network of arch/compress/distill_lm.py: it names its embedding output
'embed_norm', its blocks 'layer{i}' (outputs D wide) and their attention's projections
'layer{i}/self_attn/query|key' (B, T, N, H) as sequence.bert does.

Dimension key: B batch, T length, D inter-block width, E intra-block width, C embedding
width, N heads, H head width, V vocabulary.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from arch import vocab
from arch.layers.attention import Projection, dot_product_attention, key_mask
from arch.layers.embed import norm

Dtype = Any
INIT_STDDEV = 0.02


class NoNorm(nn.Module):
  """x * scale + bias per channel: MobileBERT's replacement for LayerNorm."""
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
                       (d,), self.param_dtype)
    bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)),
                      (d,), self.param_dtype)
    return x * jnp.asarray(scale, x.dtype) + jnp.asarray(bias, x.dtype)


def _dense(features, name, dtype, param_dtype, axes=('embed', 'mlp')):
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(
                      nn.initializers.normal(INIT_STDDEV), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))


class SelfAttention(nn.Module):
  """Queries and keys from the shared bottleneck s (B, T, E), values from the wide input
  x (B, T, D); out (B, T, E)."""
  num_heads: int
  dropout_rate: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, s_BTE, x_BTD, mask, deterministic: bool = True):
    e = s_BTE.shape[-1]
    n, h = self.num_heads, e // self.num_heads
    proj = lambda name: Projection((n, h), ('embed', 'heads', 'kv'),
                                   init_stddev=INIT_STDDEV, dtype=self.dtype,
                                   param_dtype=self.param_dtype, name=name)
    q_BTNH, k_BTNH, v_BTNH = proj('query')(s_BTE), proj('key')(s_BTE), proj('value')(x_BTD)
    rng = None
    if self.dropout_rate and not deterministic:
      rng = self.make_rng('dropout')
    o_BTNH = dot_product_attention(q_BTNH, k_BTNH, v_BTNH, mask=mask,
                                   dropout_rate=self.dropout_rate, dropout_rng=rng)
    return Projection((e,), ('heads', 'kv', 'embed'), num_in=2, init_stddev=INIT_STDDEV,
                      dtype=self.dtype, param_dtype=self.param_dtype, name='out')(o_BTNH)


class Block(nn.Module):
  """One MobileBERT block (module docstring): (B, T, D) -> (B, T, D)."""
  num_heads: int
  bottleneck_dim: int  # E
  mlp_dim: int
  num_ffn: int = 4
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, mask, deterministic: bool = True):
    dense = lambda f, name: _dense(f, name, self.dtype, self.param_dtype)
    no_norm = lambda name: NoNorm(self.param_dtype, name=name)
    e = self.bottleneck_dim
    x_BTE = no_norm('input_norm')(dense(e, 'input_bottleneck')(x_BTD))
    s_BTE = no_norm('shared_norm')(dense(e, 'shared_bottleneck')(x_BTD))
    a_BTE = SelfAttention(self.num_heads, self.attention_dropout_rate, self.dtype,
                          self.param_dtype, name='self_attn')(s_BTE, x_BTD, mask, deterministic)
    a_BTE = no_norm('attn_norm')(x_BTE + a_BTE)
    for i in range(self.num_ffn):
      f_BTE = dense(e, f'ffn{i}_out')(nn.relu(dense(self.mlp_dim, f'ffn{i}_in')(a_BTE)))
      a_BTE = no_norm(f'ffn{i}_norm')(a_BTE + f_BTE)
    y_BTD = dense(x_BTD.shape[-1], 'output_bottleneck')(a_BTE)
    y_BTD = nn.Dropout(self.dropout_rate)(y_BTD, deterministic=deterministic)
    return no_norm('output_norm')(x_BTD + y_BTD)


class Model(nn.Module):
  """MobileBERT for pre-training: tokens (B, T) -> {'mlm_logits' (B, T, V), 'nsp_logits'
  (B, 2)} (float32), 'hidden' (B, T, D), 'pooled' (B, D); `pretraining_heads=False` is the
  encoder and pooler alone (Hugging Face's MobileBertModel)."""
  vocab_size: int = 30522
  num_layers: int = 24
  num_heads: int = 4
  embed_dim: int = 512  # D, the inter-block width
  bottleneck_dim: int = 128  # E, the intra-block width
  embedding_size: int = 128  # C, the word vectors' width
  mlp_dim: int = 512
  num_ffn: int = 4  # stacked FFNs per block
  max_length: int = 512
  type_vocab_size: int = 2
  dropout_rate: float = 0.0  # Hugging Face's config: hidden dropout 0
  attention_dropout_rate: float = 0.1
  norm_eps: float = 1e-12  # the MLM transform's LayerNorm
  pretraining_heads: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, token_types_BT=None, train: bool = False):
    b, t = tokens_BT.shape
    if t > self.max_length:
      raise ValueError(f'sequence length {t} exceeds max_length {self.max_length}')
    if token_types_BT is None:
      token_types_BT = jnp.zeros_like(tokens_BT)
    embed = lambda n, d, name, axes: nn.Embed(
        n, d, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(INIT_STDDEV), axes))
    dense = lambda f, name, axes=('embed', 'mlp'): _dense(f, name, self.dtype, self.param_dtype,
                                                         axes)

    # Factorised embeddings: the 3-gram of word vectors, projected to D.
    words = embed(self.vocab_size, self.embedding_size, 'word_embeddings', ('vocab', 'embed'))
    w_BTC = words(tokens_BT)
    zero_B1C = jnp.zeros_like(w_BTC[:, :1])
    trigram_BT3C = jnp.concatenate([jnp.concatenate([w_BTC[:, 1:], zero_B1C], 1), w_BTC,
                                    jnp.concatenate([zero_B1C, w_BTC[:, :-1]], 1)], axis=-1)
    x_BTD = dense(self.embed_dim, 'embedding_transformation')(trigram_BT3C)
    pos_BT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    x_BTD = (x_BTD + embed(self.max_length, self.embed_dim, 'position_embeddings',
                           ('length', 'embed'))(pos_BT)
             + embed(self.type_vocab_size, self.embed_dim, 'token_type_embeddings',
                     ('token_types', 'embed'))(token_types_BT))
    x_BTD = NoNorm(self.param_dtype, name='embed_norm')(x_BTD)
    x_BTD = nn.Dropout(self.dropout_rate)(x_BTD, deterministic=not train)

    mask = key_mask(tokens_BT != vocab.PAD)
    for i in range(self.num_layers):
      x_BTD = Block(self.num_heads, self.bottleneck_dim, self.mlp_dim, self.num_ffn,
                    self.dropout_rate, self.attention_dropout_rate, self.dtype,
                    self.param_dtype, name=f'layer{i}')(x_BTD, mask, not train)

    pooled_BD = jnp.tanh(dense(self.embed_dim, 'pooler')(x_BTD[:, 0]))
    if not self.pretraining_heads:
      return {'hidden': x_BTD, 'pooled': pooled_BD}

    # Masked-LM head: logits against [word vectors | a learned (D - C)-wide extension].
    h_BTD = nn.relu(dense(self.embed_dim, 'mlm_dense')(x_BTD))
    h_BTD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='mlm_norm')(h_BTD)
    extra = self.param('mlm_extension', nn.with_logical_partitioning(
        nn.initializers.normal(INIT_STDDEV), ('mlp', 'vocab')),
        (self.embed_dim - self.embedding_size, self.vocab_size), self.param_dtype)
    table_DV = jnp.concatenate([jnp.asarray(words.embedding, self.dtype).T,
                                jnp.asarray(extra, self.dtype)], axis=0)
    bias = self.param('mlm_bias', nn.with_logical_partitioning(
        nn.initializers.zeros, ('vocab',)), (self.vocab_size,), self.param_dtype)
    mlm_logits_BTV = jnp.einsum('BTD,DV->BTV', h_BTD, table_DV) + jnp.asarray(bias, self.dtype)
    nsp_logits_B2 = dense(2, 'nsp', ('mlp', 'classes'))(pooled_BD)
    return {'mlm_logits': mlm_logits_BTV.astype(jnp.float32),
            'nsp_logits': nsp_logits_B2.astype(jnp.float32),
            'hidden': x_BTD, 'pooled': pooled_BD}


# google/mobilebert-uncased.
VARIANTS = {
    'mobilebert': dict(),
}
TINY = dict(vocab_size=vocab.BYTE_VOCAB_SIZE, num_layers=2, num_heads=2, embed_dim=32,
            bottleneck_dim=16, embedding_size=8, mlp_dim=32, max_length=128,
            attention_dropout_rate=0.0)
