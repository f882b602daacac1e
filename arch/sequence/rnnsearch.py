"""RNNsearch: the encoder-decoder with additive attention of Bahdanau, Cho & Bengio 2014
("Neural machine translation by jointly learning to align and translate"), as in its
appendix A.

Encoder: a bidirectional GRU over the source embeddings E_x; annotation h_j = [->h_j; <-h_j]
(2n). The decoder, at output step i, from the previous state s_{i-1} and word y_{i-1}:
  e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j)       alignment (U_a h_j computed once, in encode)
  a_ij = softmax_j(e_ij) over real source words;  c_i = sum_j a_ij h_j
  t~_i = U_o s_{i-1} + V_o E_y y_{i-1} + C_o c_i   deep output (2l), maxout over pairs -> t_i (l)
  p(y_i | ...) = softmax(W_o t_i)
  s_i  = GRU(s_{i-1}, [E_y y_{i-1}; c_i])        (the paper's W, U, C matrices of every gate)
with s_0 = tanh(W_s <-h_1). The biases the paper leaves out "to make the equations less
cluttered" sit on every GRU gate (3n per GRU), W_s (n), the alignment (n', with U_a h_j),
t~ (2l) and the softmax (K_y). Initialisation as in appendix B.1: recurrent matrices
orthogonal, W_a and U_a N(0, 0.001^2), v_a and biases zero, other weights N(0, 0.01^2).

'rnnsearch50' is the paper's model (m=620, n=1000, n'=1000, l=500, 30k-word vocabularies);
80,443,000 parameters (derived in tests/test_rnn.py). Token id 0 is padding in the source.

Dimension key: B batch, S source length, T target length, M embedding width, H decoder
state / per-direction encoder width (n), E annotation width (2n), A alignment width (n'),
L maxout units (l), V target vocabulary.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch import vocab
from arch.sequence import rnn

Dtype = Any
NEG_INF = -1e9

VARIANTS = {
    'rnnsearch50': dict(embed_dim=620, hidden_dim=1000, align_dim=1000, maxout_dim=500,
                        src_vocab_size=30_000, tgt_vocab_size=30_000),
    'tiny': dict(embed_dim=16, hidden_dim=24, align_dim=20, maxout_dim=12,
                 src_vocab_size=64, tgt_vocab_size=64),
}

_weight = nn.initializers.normal(0.01)   # "any other weight matrix"
_align = nn.initializers.normal(0.001)   # W_a, U_a


def _dense(features, axes, init=_weight, use_bias=True, dtype=jnp.float32,
           param_dtype=jnp.float32, name=None):
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                  name=name, kernel_init=nn.with_logical_partitioning(init, axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))


def _embed(vocab_size, dim, dtype, param_dtype, name=None):
  return nn.Embed(vocab_size, dim, dtype=dtype, param_dtype=param_dtype, name=name,
                  embedding_init=nn.with_logical_partitioning(_weight, ('vocab', 'embed')))


class DecoderStep(nn.Module):
  """One decoder step: attend from s_{i-1}, then the GRU update. Returns s_i and, for the
  readout, (s_{i-1}, c_i, a_i)."""
  hidden_dim: int
  align_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, s_BH, y_BM, enc):
    q_BA = _dense(self.align_dim, ('embed', 'mlp'), _align, use_bias=False, dtype=self.dtype,
                  param_dtype=self.param_dtype, name='attention_query')(s_BH)   # W_a s
    v_A = self.param('attention_v', nn.with_logical_partitioning(nn.initializers.zeros,
                                                                 ('mlp',)),
                     (self.align_dim,), self.param_dtype)
    act_BSA = jnp.tanh(enc['keys_BSA'].astype(jnp.float32) + q_BA[:, None].astype(jnp.float32))
    e_BS = jnp.einsum('BSA,A->BS', act_BSA, v_A.astype(jnp.float32))
    # float32 softmax; padded words get exactly zero weight.
    a_BS = jax.nn.softmax(jnp.where(enc['mask_BS'], e_BS, NEG_INF), axis=-1)
    c_BE = jnp.einsum('BS,BSE->BE', a_BS, enc['annotations_BSE'].astype(jnp.float32))
    gru = rnn.GRUCell(self.hidden_dim, kernel_init=_weight, dtype=self.dtype,
                      param_dtype=self.param_dtype, name='gru')
    x_B = jnp.concatenate([y_BM.astype(jnp.float32), c_BE], axis=-1)
    new, _ = gru({'h': s_BH}, x_B)
    return new['h'], (s_BH, c_BE, a_BS)


class Decoder(nn.Module):
  """Target embedding, the attentive GRU scanned over T, and the maxout deep output."""
  tgt_vocab_size: int
  embed_dim: int
  hidden_dim: int
  align_dim: int
  maxout_dim: int
  dropout_rate: float = 0.0
  unroll: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tgt_in_BT, encoded, *, train: bool = False, decode: bool = False):
    b, t = tgt_in_BT.shape
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y_BTM = _embed(self.tgt_vocab_size, self.embed_dim, name='embed', **dt)(tgt_in_BT)
    y_BTM = nn.Dropout(self.dropout_rate)(y_BTM, deterministic=not train)
    s_BH = encoded['init_BH'].astype(jnp.float32)
    state = None
    if decode:
      initialised = self.has_variable('cache', 'state')
      state = self.variable('cache', 'state', jnp.zeros, (b, self.hidden_dim), jnp.float32)
      index = self.variable('cache', 'index', lambda: jnp.array(0, jnp.int32))
      if initialised:  # the first call after init starts from s_0
        s_BH = jnp.where(index.value == 0, s_BH, state.value)
      else:
        state = None  # init: the cache keeps its zeros
    enc = {k: encoded[k] for k in ('annotations_BSE', 'keys_BSA', 'mask_BS')}
    scan = nn.scan(DecoderStep, variable_broadcast='params', split_rngs={'params': False},
                   in_axes=(1, nn.broadcast), out_axes=1, unroll=self.unroll)
    s_BH, (s_prev_BTH, c_BTE, a_BTS) = scan(self.hidden_dim, self.align_dim, **dt,
                                            name='step')(s_BH, y_BTM, enc)
    self.sow('intermediates', 'alignment_BTS', a_BTS)
    if state is not None:
      state.value = s_BH
      index.value = index.value + t
    t2_BT2L = (_dense(2 * self.maxout_dim, ('embed', 'mlp'), name='readout_state', **dt)(s_prev_BTH)
               + _dense(2 * self.maxout_dim, ('embed', 'mlp'), use_bias=False,
                        name='readout_embed', **dt)(y_BTM)
               + _dense(2 * self.maxout_dim, ('embed', 'mlp'), use_bias=False,
                        name='readout_context', **dt)(c_BTE))
    t_BTL = t2_BT2L.reshape(b, t, self.maxout_dim, 2).max(axis=-1)  # maxout over pairs
    t_BTL = nn.Dropout(self.dropout_rate)(t_BTL, deterministic=not train)
    logits_BTV = _dense(self.tgt_vocab_size, ('embed', 'vocab'), name='output', **dt)(t_BTL)
    return logits_BTV.astype(jnp.float32)


class Model(nn.Module):
  """RNNsearch: `encode(src)`, `decode(tgt_in, encoded)`, or both in `__call__`."""
  variant: str = 'tiny'  # a key of VARIANTS; the fields below override its sizes
  src_vocab_size: Optional[int] = None
  tgt_vocab_size: Optional[int] = None
  embed_dim: Optional[int] = None   # m
  hidden_dim: Optional[int] = None  # n, per encoder direction and decoder state
  align_dim: Optional[int] = None   # n'
  maxout_dim: Optional[int] = None  # l
  dropout_rate: float = 0.0  # on embeddings and the maxout output (the paper used none)
  unroll: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def sizes(self) -> dict:
    if self.variant not in VARIANTS:
      raise ValueError(f'unknown RNNsearch variant {self.variant!r}; valid: '
                       f'{", ".join(VARIANTS)}')
    return {k: getattr(self, k) if getattr(self, k) is not None else v
            for k, v in VARIANTS[self.variant].items()}

  def setup(self):
    z = self.sizes()
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.src_embed = _embed(z['src_vocab_size'], z['embed_dim'], **dt)
    self.encoder = rnn.Bidirectional('gru', z['hidden_dim'], kernel_init=_weight,
                                     unroll=self.unroll, **dt)
    self.init_state = _dense(z['hidden_dim'], ('embed', 'mlp'), **dt)          # W_s
    self.attention_keys = _dense(z['align_dim'], ('embed', 'mlp'), _align, **dt)  # U_a
    self.dropout = nn.Dropout(self.dropout_rate)
    self.decoder = Decoder(z['tgt_vocab_size'], z['embed_dim'], z['hidden_dim'],
                           z['align_dim'], z['maxout_dim'], self.dropout_rate,
                           unroll=self.unroll, **dt)

  def encode(self, src_BS, *, train: bool = False) -> dict:
    """Source ids (B, S), 0 = padding -> {'annotations_BSE', 'keys_BSA' (U_a h_j + b),
    'mask_BS', 'init_BH' (s_0)}; every leaf has the batch axis first."""
    mask_BS = src_BS != vocab.PAD
    x_BSM = self.dropout(self.src_embed(src_BS), deterministic=not train)
    (_, carry_b), h_BSE = self.encoder(x_BSM, mask_BS)
    # The backward direction's final carry is its state after the first word: <-h_1.
    init_BH = jnp.tanh(self.init_state(carry_b['h']).astype(jnp.float32))
    return {'annotations_BSE': h_BSE, 'keys_BSA': self.attention_keys(h_BSE),
            'mask_BS': mask_BS, 'init_BH': init_BH}

  def decode(self, tgt_in_BT, encoded: dict, *, train: bool = False, decode: bool = False):
    """Target inputs (B, T) (<s> y_1 ... y_{T-1}) -> logits (B, T, V) float32. With
    decode=True the state s_i lives in the 'cache' collection between calls."""
    return self.decoder(tgt_in_BT, encoded, train=train, decode=decode)

  def __call__(self, src_BS, tgt_in_BT, *, train: bool = False, decode: bool = False):
    return self.decode(tgt_in_BT, self.encode(src_BS, train=train), train=train,
                       decode=decode)
