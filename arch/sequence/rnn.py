"""Recurrent networks: the Elman RNN (Elman 1990, "Finding structure in time"), the LSTM
(Hochreiter & Schmidhuber 1997, "Long short-term memory", with the forget gate of Gers,
Schmidhuber & Cummins 2000) and the GRU (Cho et al. 2014, "Learning phrase representations
using RNN encoder-decoder for statistical machine translation"); layers that run a cell over
time with `nn.scan`, bidirectional and stacked; a causal language model and a tagger.

Cells (x the input, h the hidden state, c the LSTM memory; * elementwise):
  rnn:  h' = tanh(W x + U h + b)
  lstm: i, f, o = sigmoid(W_{i,f,o} x + U_{i,f,o} h + b_{i,f,o}); g = tanh(W_g x + U_g h + b_g)
        c' = f * c + i * g;  h' = o * tanh(c')              (forget bias starts at 1)
  gru:  z, r = sigmoid(W_{z,r} x + U_{z,r} h + b_{z,r});  n = tanh(W_n x + U_n (r * h) + b_n)
        h' = z * h + (1 - z) * n                            (Cho et al.'s eqs. 5-8)
The input projections W x + b of all time steps are one matmul before the scan; only U h
runs inside it. Gates are stacked on a G axis: kernels W (D, G, H), U (H, G, H), bias (G, H).
U starts as an orthogonal matrix per gate. The carry is float32 whatever the compute dtype:
it accumulates over time.

Padding: where mask is False a step leaves the carry unchanged and outputs zeros, so the
positions after a sequence's end change neither its outputs nor its final carry. The
backward direction scans from the end with the same rule: it skips the padding first and
then reads the sequence from its last real token, i.e. it equals running on each sequence
reversed within its own length (right-padded or not), never on the padded array.

Dropout (Zaremba, Sutskever & Vinyals 2014) is on the non-recurrent connections only: the
embeddings, between stacked layers, and before the output layer.

Dimension key: B batch, T time, D input width, H hidden units, G gates, V vocabulary,
K tags.
"""

from typing import Any, Callable, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch import vocab

Dtype = Any
Initializer = Callable[..., Any]
Carry = dict  # {'h': (B, H)}, and 'c': (B, H) for the LSTM


def orthogonal_per_gate(key, shape, dtype=jnp.float32):
  """U (H, G, H): an independent random orthogonal (H, H) matrix for every gate."""
  h, g, _ = shape
  q_GHH, r_GHH = jnp.linalg.qr(jax.random.normal(key, (g, h, h), jnp.float32))
  q_GHH = q_GHH * jnp.sign(jnp.diagonal(r_GHH, axis1=-2, axis2=-1))[:, None, :]  # Haar
  return q_GHH.transpose(1, 0, 2).astype(dtype)


def _lp(init, axes):
  return nn.with_logical_partitioning(init, axes)


class GateDense(nn.Module):
  """W x + b for every gate: (..., D) -> (..., G, H). The initializers see the flat
  (D, G*H) kernel and (G*H,) bias, as a dense layer's would; the params keep (D, G, H) and
  (G, H) with logical axes. (nn.DenseGeneral with a boxed init cannot do this: it boxes
  the flat array and the 3-axis sharding constraint then fails under a mesh.)"""
  num_gates: int
  hidden_dim: int
  kernel_init: Initializer
  bias_init: Initializer
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_D):
    g, h, d = self.num_gates, self.hidden_dim, x_D.shape[-1]
    kernel = self.param('kernel', _lp(
        lambda k, shape, dt: self.kernel_init(k, (d, g * h), dt).reshape(shape),
        ('embed', None, 'mlp')), (d, g, h), self.param_dtype)
    bias = self.param('bias', _lp(
        lambda k, shape, dt: self.bias_init(k, (g * h,), dt).reshape(shape), (None, 'mlp')),
        (g, h), self.param_dtype)
    x = jnp.asarray(x_D, self.dtype)
    return jnp.einsum('...D,DGH->...GH', x, jnp.asarray(kernel, self.dtype)) + jnp.asarray(
        bias, self.dtype)


class Cell(nn.Module):
  """A recurrent cell: `project(x_..D)` then `step(carry, xw)`, or both in `__call__`."""
  hidden_dim: int
  kernel_init: Initializer = nn.initializers.lecun_normal()
  recurrent_init: Initializer = orthogonal_per_gate
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  num_gates: ClassVar[int] = 1
  carry_names: ClassVar[tuple] = ('h',)

  def bias_init(self, key, shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)

  def setup(self):
    g, h = self.num_gates, self.hidden_dim
    # Kernels are (in, ..., out) with distinct logical axes so that no mesh axis repeats.
    self.wi = GateDense(g, h, self.kernel_init, self.bias_init, dtype=self.dtype,
                        param_dtype=self.param_dtype)
    self.wh = self.param('wh', _lp(self.recurrent_init, ('embed', None, 'mlp')), (h, g, h),
                         self.param_dtype)

  def project(self, x_D):
    """W x + b for every gate: (..., D) -> (..., G, H), in the compute dtype."""
    return self.wi(jnp.asarray(x_D, self.dtype))

  def recur(self, h_BH, gates=slice(None)):
    """U h for the selected gates, float32: (B, H) -> (B, G', H)."""
    u_HGH = jnp.asarray(self.wh, self.dtype)[:, gates]
    return jnp.einsum('BH,HGK->BGK', h_BH.astype(self.dtype), u_HGH).astype(jnp.float32)

  def step(self, carry: Carry, xw_BGH) -> tuple[Carry, jax.Array]:
    raise NotImplementedError

  def __call__(self, carry: Carry, x_BD):
    """One time step from the raw input: (carry, x (B, D)) -> (carry, h (B, H))."""
    return self.step(carry, self.project(x_BD))


class ElmanCell(Cell):
  """Elman (1990) simple recurrent network: h' = tanh(W x + U h + b)."""

  def step(self, carry, xw_BGH):
    h_BH = jnp.tanh(xw_BGH[:, 0].astype(jnp.float32) + self.recur(carry['h'])[:, 0])
    return {'h': h_BH}, h_BH


class LSTMCell(Cell):
  """LSTM (Hochreiter & Schmidhuber 1997) with a forget gate (Gers et al. 2000); gates
  ordered (i, f, g, o); the forget bias starts at 1 (Gers et al. 2000, Jozefowicz et al.
  2015) so the memory is kept early in training."""
  num_gates: ClassVar[int] = 4
  carry_names: ClassVar[tuple] = ('c', 'h')

  def bias_init(self, key, shape, dtype=jnp.float32):
    # Called with the flat (G * H,) bias shape (see GateDense).
    return jnp.zeros((4, shape[0] // 4), dtype).at[1].set(1.0).reshape(shape)

  def step(self, carry, xw_BGH):
    a_BGH = xw_BGH.astype(jnp.float32) + self.recur(carry['h'])
    i, f, g, o = (a_BGH[:, k] for k in range(4))
    c_BH = jax.nn.sigmoid(f) * carry['c'] + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_BH = jax.nn.sigmoid(o) * jnp.tanh(c_BH)
    return {'c': c_BH, 'h': h_BH}, h_BH


class GRUCell(Cell):
  """GRU (Cho et al. 2014), gates ordered (z, r, n), reset applied before U_n as in the
  paper: n = tanh(W_n x + U_n (r * h)), h' = z * h + (1 - z) * n. (Bahdanau et al. 2014
  write the update gate as 1 - z; the same function family and parameters.)"""
  num_gates: ClassVar[int] = 3

  def step(self, carry, xw_BGH):
    h_BH = carry['h']
    xw_BGH = xw_BGH.astype(jnp.float32)
    zr_B2H = jax.nn.sigmoid(xw_BGH[:, :2] + self.recur(h_BH, slice(0, 2)))
    z_BH, r_BH = zr_B2H[:, 0], zr_B2H[:, 1]
    n_BH = jnp.tanh(xw_BGH[:, 2] + self.recur(r_BH * h_BH, slice(2, 3))[:, 0])
    h_BH = z_BH * h_BH + (1.0 - z_BH) * n_BH
    return {'h': h_BH}, h_BH


CELLS = {'rnn': ElmanCell, 'lstm': LSTMCell, 'gru': GRUCell}


def cell_class(name: str):
  if name not in CELLS:
    raise ValueError(f'unknown cell {name!r}; valid: {", ".join(CELLS)}')
  return CELLS[name]


def zero_carry(cell: str, batch_size: int, hidden_dim: int) -> Carry:
  return {k: jnp.zeros((batch_size, hidden_dim), jnp.float32)
          for k in cell_class(cell).carry_names}


def _masked_step(cell: Cell, carry: Carry, inputs):
  """One scan step; where the mask is False the carry stays and the output is zero."""
  xw_BGH, m_B = inputs
  new, h_BH = cell.step(carry, xw_BGH)
  keep_B1 = m_B[:, None]
  new = jax.tree.map(lambda n, o: jnp.where(keep_B1, n, o), new, carry)
  return new, jnp.where(keep_B1, h_BH, 0.0)


class Recurrent(nn.Module):
  """One recurrent layer over time: (B, T, D) -> final carry, outputs (B, T, H).

  `reverse` runs from the last position to the first. With `decode=True` the carry lives
  in the 'cache' collection ('carry'): created as zeros by `init`, read and advanced by
  every later call, so a sequence can be fed chunk by chunk.
  """
  cell: str = 'lstm'  # 'rnn' | 'lstm' | 'gru'
  hidden_dim: int = 128
  reverse: bool = False
  kernel_init: Optional[Initializer] = None  # None: the cell's default
  recurrent_init: Optional[Initializer] = None
  unroll: int = 1  # time steps per scan iteration
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, mask_BT=None, carry: Optional[Carry] = None, *,
               decode: bool = False):
    b, t = x_BTD.shape[:2]
    inits = {k: v for k, v in (('kernel_init', self.kernel_init),
                               ('recurrent_init', self.recurrent_init)) if v is not None}
    cell = cell_class(self.cell)(self.hidden_dim, dtype=self.dtype,
                                 param_dtype=self.param_dtype, name='cell', **inits)
    mask_BT = jnp.ones((b, t), bool) if mask_BT is None else jnp.asarray(mask_BT, bool)
    cache = None
    if decode:
      if self.reverse:
        raise ValueError('decode=True needs a forward (causal) layer, not reverse=True')
      initialised = self.has_variable('cache', 'carry')
      cache = self.variable('cache', 'carry', zero_carry, self.cell, b, self.hidden_dim)
      if initialised:
        carry = cache.value
      else:
        cache = None  # init: the cache keeps its zeros
    if carry is None:
      carry = zero_carry(self.cell, b, self.hidden_dim)
    xw_BTGH = cell.project(x_BTD)
    scan = nn.scan(_masked_step, variable_broadcast='params', split_rngs={'params': False},
                   in_axes=1, out_axes=1, reverse=self.reverse, unroll=self.unroll)
    carry, y_BTH = scan(cell, carry, (xw_BTGH, mask_BT))
    if cache is not None:
      cache.value = carry
    return carry, y_BTH.astype(self.dtype)


class Bidirectional(nn.Module):
  """A forward and a backward layer over the same input; outputs concatenated (B, T, 2H),
  final carries (forward after the last real token, backward after the first)."""
  cell: str = 'lstm'
  hidden_dim: int = 128
  kernel_init: Optional[Initializer] = None
  recurrent_init: Optional[Initializer] = None
  unroll: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, mask_BT=None):
    kw = dict(cell=self.cell, hidden_dim=self.hidden_dim, kernel_init=self.kernel_init,
              recurrent_init=self.recurrent_init, unroll=self.unroll, dtype=self.dtype,
              param_dtype=self.param_dtype)
    carry_f, y_f_BTH = Recurrent(**kw, name='forward')(x_BTD, mask_BT)
    carry_b, y_b_BTH = Recurrent(**kw, reverse=True, name='backward')(x_BTD, mask_BT)
    return (carry_f, carry_b), jnp.concatenate([y_f_BTH, y_b_BTH], axis=-1)


class Stack(nn.Module):
  """`num_layers` recurrent layers, each reading the previous one's outputs, with dropout
  between layers. Returns (per-layer final carries, top outputs (B, T, H or 2H))."""
  cell: str = 'lstm'
  hidden_dim: int = 128
  num_layers: int = 1
  bidirectional: bool = False
  dropout_rate: float = 0.0
  unroll: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, mask_BT=None, *, train: bool = False, decode: bool = False):
    if decode and self.bidirectional:
      raise ValueError('decode=True needs a unidirectional stack')
    kw = dict(cell=self.cell, hidden_dim=self.hidden_dim, unroll=self.unroll,
              dtype=self.dtype, param_dtype=self.param_dtype)
    carries = []
    for i in range(self.num_layers):
      if i:
        x_BTD = nn.Dropout(self.dropout_rate)(x_BTD, deterministic=not train)
      if self.bidirectional:
        carry, x_BTD = Bidirectional(**kw, name=f'layer_{i}')(x_BTD, mask_BT)
      else:
        carry, x_BTD = Recurrent(**kw, name=f'layer_{i}')(x_BTD, mask_BT, decode=decode)
      carries.append(carry)
    return carries, x_BTD


def _embed(vocab_size, dim, dtype, param_dtype):
  return nn.Embed(vocab_size, dim, dtype=dtype, param_dtype=param_dtype, name='embed',
                  embedding_init=_lp(nn.initializers.normal(0.1), ('vocab', 'embed')))


def _head(features, axes, dtype, param_dtype, name):
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=_lp(nn.initializers.lecun_normal(), axes),
                  bias_init=_lp(nn.initializers.zeros, axes[1:]))


class Model(nn.Module):
  """Recurrent language model: tokens (B, T) int -> next-token logits (B, T, V) float32.

  Causal by construction (unidirectional). `decode=True` keeps every layer's carry in the
  'cache' collection, so chunk-by-chunk calls equal one full call.
  """
  vocab_size: int = vocab.BYTE_VOCAB_SIZE
  cell: str = 'lstm'  # 'rnn' | 'lstm' | 'gru'
  embed_dim: int = 256
  hidden_dim: int = 512
  num_layers: int = 2
  dropout_rate: float = 0.0  # Zaremba et al.: 0.5 (medium), 0.65 (large)
  unroll: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, train: bool = False, decode: bool = False):
    x_BTD = _embed(self.vocab_size, self.embed_dim, self.dtype, self.param_dtype)(tokens_BT)
    x_BTD = nn.Dropout(self.dropout_rate)(x_BTD, deterministic=not train)
    _, y_BTH = Stack(self.cell, self.hidden_dim, self.num_layers, dropout_rate=self.dropout_rate,
                     unroll=self.unroll, dtype=self.dtype, param_dtype=self.param_dtype,
                     name='rnn')(x_BTD, train=train, decode=decode)
    y_BTH = nn.Dropout(self.dropout_rate)(y_BTH, deterministic=not train)
    logits_BTV = _head(self.vocab_size, ('embed', 'vocab'), self.dtype, self.param_dtype,
                       'head')(y_BTH)
    return logits_BTV.astype(jnp.float32)


class Tagger(nn.Module):
  """Bidirectional stacked RNN tagger: tokens (B, T) -> per-position tag logits (B, T, K)
  float32. `mask_BT` defaults to tokens != <pad>; padded positions get the bias only."""
  vocab_size: int = vocab.BYTE_VOCAB_SIZE
  num_tags: int = 2
  cell: str = 'lstm'
  embed_dim: int = 128
  hidden_dim: int = 128  # per direction
  num_layers: int = 2
  dropout_rate: float = 0.0
  unroll: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, mask_BT=None, train: bool = False):
    if mask_BT is None:
      mask_BT = tokens_BT != vocab.PAD
    x_BTD = _embed(self.vocab_size, self.embed_dim, self.dtype, self.param_dtype)(tokens_BT)
    x_BTD = nn.Dropout(self.dropout_rate)(x_BTD, deterministic=not train)
    _, y_BTH = Stack(self.cell, self.hidden_dim, self.num_layers, bidirectional=True,
                     dropout_rate=self.dropout_rate, unroll=self.unroll, dtype=self.dtype,
                     param_dtype=self.param_dtype, name='rnn')(x_BTD, mask_BT, train=train)
    y_BTH = nn.Dropout(self.dropout_rate)(y_BTH, deterministic=not train)
    logits_BTK = _head(self.num_tags, ('embed', 'classes'), self.dtype, self.param_dtype,
                       'head')(y_BTH)
    return logits_BTK.astype(jnp.float32)


# Named sizes for the LM: Zaremba et al. 2014's PTB word models (10k vocabulary, 2 LSTM
# layers) and a tiny one for tests.
VARIANTS = {
    'zaremba_small': dict(cell='lstm', embed_dim=200, hidden_dim=200, num_layers=2,
                          dropout_rate=0.0, vocab_size=10_000),
    'zaremba_medium': dict(cell='lstm', embed_dim=650, hidden_dim=650, num_layers=2,
                           dropout_rate=0.5, vocab_size=10_000),
    'zaremba_large': dict(cell='lstm', embed_dim=1500, hidden_dim=1500, num_layers=2,
                          dropout_rate=0.65, vocab_size=10_000),
}
TINY = dict(embed_dim=8, hidden_dim=12, num_layers=2)
