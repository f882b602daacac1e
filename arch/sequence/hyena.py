"""Hyena: the long-convolution language model of Poli et al. 2023, "Hyena Hierarchy: Towards
Larger Convolutional Language Models".

A GPT-style stack (the paper's section 4.3, HazyResearch/safari's ConvLMHeadModel) with the
attention of every block replaced by the Hyena operator: x + Hyena(LN(x)), x + MLP(LN(x))
(GELU, tanh form), a final LayerNorm and a head tied to the embedding. No positions: order
comes from the causal convolutions.

The Hyena operator of order N (the paper's algorithm 3): an input projection to N + 1 widths
D, each passed through a short causal depthwise convolution (kernel 3, with bias), gives the
gates x_1 .. x_N and the value v; then, with implicit long filters h_n and z_1 = v,

  z_{n+1} = x_n * (h_n conv z_n + b_n z_n),   y = out_proj(z_{N+1}),

where conv is the causal convolution over time of length L and b_n a per-channel skip (the
filter's "bias", a learned D of the reference code's fftconv). The long convolutions run by
FFT, zero-padded to 2L so that the product of spectra is a linear, not circular, convolution
(O(L log L)); `conv='direct'` runs them as the explicit causal sum over lags (O(L^2), the
same numbers to float tolerance; cached decoding uses it). `recurrence='official'` is the
reference code's HyenaOperator instead: the same N + 1 projections with N - 1 long
filters, z_{n+1} = h_n conv (x_n * z_n) + b_n (x_n * z_n) for n < N and y = x_N * z_N (its
order 2 is H3's shape, q * (h conv (k * v)), the short convolution standing in for the
first filter). The gates are stored in the projection in the reference code's order (the
last gate first, v last).

The implicit filter (section 3.3, appendix A): h(t) = FFN(PositionalEncoding(t)) * Window(t)
with, over the grid t = 0 .. max_length - 1,
- PositionalEncoding: [t / (max_length - 1), cos(2 pi f_k t / max_length),
  -sin(2 pi f_k t / max_length)] for K = (E - 1) / 2 bands f_k = linspace(1e-4, K - 1, K);
  E = `pos_dim` (odd); learned from that start, as in the reference Pile configs;
- FFN: Linear(E, F), sin, `filter_depth` x (Linear(F, F), sin), Linear(F, N D) without bias,
  where sin(a) = sin(w * a) with one learned frequency per unit w (F,), shared by all the
  FFN's sines and started at `sin_freq` (14 in the Pile configs);
- Window: exp(-|delta_c| t / (max_length - 1)) per output channel c, the rates spaced
  linearly from log(target) / slow to log(target) / fast (0.3 and 1.5 of the length to decay
  to target 1e-2): fixed, not learned. Channel c = d N + n is filter n's channel d, so each
  filter spans all the rates.
The filter depends on the position only (not the input), so one FFN evaluation serves the
whole batch; `max_length` fixes the grid, so a shorter input sees the same h(0..T-1).

Initialisation, the reference code's (GPT-2's through its _init_weights): every Linear,
including the filter's FFN, normal(0.02) with zero biases; out_proj and the MLP's second
matrix normal(0.02 / sqrt(2 layers)); the short convolution PyTorch's Conv1d default
(uniform +-1/sqrt(3)); the skips b normal(1); the embedding normal(0.02). (The reference
code exempts the filter's FFN from weight decay; archzoo's loop decays every parameter.)

Measured (configs/hyena_pydoc.py, 2026-12-06, 2-core CPU shared with other jobs): the cpu
variant (4 layers, width 256, 3.30 M parameters) reaches 1.225 validation nats/byte on the
pydoc bytes in 600 steps, against GPT's 1.381 and RWKV-4's 1.194 on the same schedule; its
training step took 1.1x GPT's under the same load (train.bench), the direct convolution's
1.2x the FFT's at T = 128.

The published size: the paper's Hyena-153M on the Pile (Table 4.3: "153M"), the reference
code's configs/experiment/pile/hyena.yaml: D 864, 18 layers, MLP 2 D, order 2 (official
recurrence), F 64, E 33, w 14, l_max 2048, vocabulary 50257 padded to 50264 (a multiple of
8). Summing the shapes of that module tree (the positional table, learned at the optimizer's
rate there, is a parameter (2048, 33) per layer; t and the window rates are buffers) gives
153,700,416, and this file's '153m' variant has exactly that many; the number is derived
from the reference code's module definitions, not read from a published table (the paper
rounds it) nor counted by running the PyTorch code.

Cached decoding: with decode=True each operator keeps in the 'cache' collection 'short'
(B, 2, (N + 1) D), the short convolution's last inputs, and 'history' (B, S, N', D), the
inputs of its N' long convolutions at every position so far, S the length of the buffer
`init(..., decode=True)` was given (at most max_length), and the model a position counter.
A chunk of any length (the sampler's prompt) or one token writes its inputs into the history
and sums the filter over it (the direct form at the chunk's positions): O(S D) a token a
layer, with no approximation. Created as zeros and advanced by every later call; every leaf
but the scalar counter has the batch first, so beam search reorders them as it does a KV
cache. The interface is gpt.Model's: `Model(...)(tokens_BT, *, train, decode)` -> logits
(B, T, V) float32.

Dimension key: B batch, T length, S cached length, L filter length, D width, C (N + 1) D
projected width, N order, E positional features, F filter FFN width, V vocabulary.
"""

import functools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arch.layers.attention import token_positions
from arch.layers.embed import Mlp, norm, token_embed
from arch.sequence.mamba import CausalConv

Dtype = Any
CONVS = ('fft', 'direct')
RECURRENCES = ('paper', 'official')


def _check(name, value, valid):
  if value not in valid:
    raise ValueError(f'unknown {name} {value!r}; valid: {", ".join(valid)}')


def num_long_filters(order: int, recurrence: str) -> int:
  """N long convolutions (the paper) or N - 1 (the reference code)."""
  return order if recurrence == 'paper' else order - 1


def fft_causal_conv(u_BTD, h_TD, bias_D):
  """y_t = sum_{s <= t} h_{t - s} u_s + bias u_t by FFT over 2T points (no wrap-around)."""
  t = u_BTD.shape[1]
  n = 2 * t
  u_BTD, h_TD = jnp.asarray(u_BTD, jnp.float32), jnp.asarray(h_TD[:t], jnp.float32)
  spectrum_BKD = jnp.fft.rfft(u_BTD, n=n, axis=1) * jnp.fft.rfft(h_TD, n=n, axis=0)
  return jnp.fft.irfft(spectrum_BKD, n=n, axis=1)[:, :t] + bias_D * u_BTD


def direct_causal_conv(u_BSD, h_LD, bias_D, start=0, length: Optional[int] = None):
  """The same convolution summed over lags, at positions start .. start + length - 1 of the
  input u (positions 0 .. S - 1; those after an output's position are never read). `start`
  may be traced; h needs S rows or more."""
  s = u_BSD.shape[1]
  length = s if length is None else length
  u_BSD = jnp.asarray(u_BSD, jnp.float32)
  lag_TS = (start + jnp.arange(length))[:, None] - jnp.arange(s)[None, :]
  h_TSD = jnp.where((lag_TS >= 0)[..., None],
                    jnp.asarray(h_LD, jnp.float32)[jnp.clip(lag_TS, 0, s - 1)], 0.0)
  now_BTD = jax.lax.dynamic_slice_in_dim(u_BSD, start, length, axis=1)
  return jnp.einsum('tsd,bsd->btd', h_TSD, u_BSD) + bias_D * now_BTD


def positional_features(length: int, dim: int) -> np.ndarray:
  """The filter's input (length, dim): normalised time, then cos and -sin of K = (dim - 1)
  / 2 bands (the real and imaginary parts of exp(-i 2 pi f t / length))."""
  if dim < 3 or dim % 2 == 0:
    raise ValueError(f'the positional features need an odd dim >= 3, got {dim}')
  bands = (dim - 1) // 2
  t = np.arange(length, dtype=np.float64)
  f = np.linspace(1e-4, bands - 1, bands)
  angle = 2 * np.pi * f[None] * t[:, None] / length
  normalised = np.linspace(0.0, 1.0, length)[:, None]
  return np.concatenate([normalised, np.cos(angle), -np.sin(angle)], 1).astype(np.float32)


def decay_window(length: int, channels: int, fast: float = 0.3, slow: float = 1.5,
                 target: float = 1e-2) -> np.ndarray:
  """exp(-rate_c t) (length, channels) over t = linspace(0, 1, length): channel 0 reaches
  `target` at t = slow, the last at t = fast, the rates linear in between."""
  rates = np.abs(np.linspace(math.log(target) / slow, math.log(target) / fast, channels))
  t = np.linspace(0.0, 1.0, length)[:, None]
  return np.exp(-t * rates[None]).astype(np.float32)


class ImplicitFilter(nn.Module):
  """filter: the N' long filters h (N', L, D) and skips b (N', D) of one operator."""
  channels: int  # D
  num_filters: int  # N'
  max_length: int
  pos_dim: int = 33  # E
  filter_dim: int = 64  # F ("filter_order" in the reference code)
  filter_depth: int = 2  # inner Linear + sin layers
  sin_freq: float = 14.0  # w
  decay_fast: float = 0.3
  decay_slow: float = 1.5
  decay_target: float = 1e-2
  modulate: bool = True  # False: no window (the FFN alone; for tests)
  init_stddev: float = 0.02
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, length: int):
    lp = nn.with_logical_partitioning
    d, n = self.channels, self.num_filters
    table = lambda key, shape, dtype: jnp.asarray(positional_features(*shape), dtype)
    z_LE = self.param('pos_emb', lp(table, (None, None)), (self.max_length, self.pos_dim),
                      self.param_dtype)[:length].astype(jnp.float32)
    freq_F = self.param('freq', lp(nn.initializers.constant(self.sin_freq), (None,)),
                        (self.filter_dim,), self.param_dtype).astype(jnp.float32)
    dense = lambda features, axes, name, bias=True: nn.Dense(
        features, use_bias=bias, param_dtype=self.param_dtype, name=name,
        kernel_init=lp(nn.initializers.normal(self.init_stddev), axes),
        bias_init=lp(nn.initializers.zeros, axes[1:]))
    h_LF = jnp.sin(freq_F * dense(self.filter_dim, (None, None), 'fc_in')(z_LE))
    for i in range(self.filter_depth):
      h_LF = jnp.sin(freq_F * dense(self.filter_dim, (None, None), f'fc_hidden_{i}')(h_LF))
    h_LC = dense(d * n, (None, 'mlp'), 'fc_out', bias=False)(h_LF)
    if self.modulate:
      window = decay_window(self.max_length, d * n, self.decay_fast, self.decay_slow,
                            self.decay_target)
      h_LC = h_LC * window[:length]
    bias_C = self.param('bias', lp(nn.initializers.normal(1.0), ('mlp',)), (d * n,),
                        self.param_dtype).astype(jnp.float32)
    # Channel c = d * N' + n: filter n's channel d (the reference code's '(v o)' layout).
    return (jnp.moveaxis(h_LC.reshape(length, d, n), 2, 0), bias_C.reshape(d, n).T)


class HyenaOperator(nn.Module):
  """mixer: the Hyena operator of order N; (B, T, D) -> (B, T, D)."""
  order: int = 2  # N
  recurrence: str = 'paper'  # or 'official' (N - 1 long filters, the reference code's)
  max_length: int = 2048
  short_width: int = 3
  conv: str = 'fft'  # or 'direct'
  filter_fn: Callable[..., ImplicitFilter] = ImplicitFilter  # all fields but the sizes
  init_stddev: float = 0.02
  out_init_stddev: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def dense(self, features, axes, stddev, name):
    lp = nn.with_logical_partitioning
    return nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                    kernel_init=lp(nn.initializers.normal(stddev), axes),
                    bias_init=lp(nn.initializers.zeros, axes[1:]))

  @nn.compact
  def __call__(self, x_BTD, *, start=0, decode: bool = False):
    _check('recurrence', self.recurrence, RECURRENCES)
    _check('conv', self.conv, CONVS)
    b, t, d = x_BTD.shape
    n, k = self.order, self.short_width
    filters = num_long_filters(n, self.recurrence)
    if filters < 1:
      raise ValueError(f'order {n} leaves no long filter ({self.recurrence} recurrence)')

    short = history = None
    if decode:
      initialised = self.has_variable('cache', 'short')
      short = self.variable('cache', 'short', jnp.zeros, (b, k - 1, (n + 1) * d), jnp.float32)
      history = self.variable('cache', 'history', jnp.zeros, (b, t, filters, d), jnp.float32)
      if not initialised:  # init: the cache keeps its zeros
        short = history = None

    u_BTC = self.dense((n + 1) * d, ('embed', 'mlp'), self.init_stddev, 'in_proj')(x_BTD)
    past_BKC = (jnp.zeros((b, k - 1, (n + 1) * d), u_BTC.dtype) if short is None
                else short.value.astype(u_BTC.dtype))
    padded_BTC = jnp.concatenate([past_BKC, u_BTC], axis=1)
    if short is not None:
      short.value = padded_BTC[:, t:].astype(jnp.float32)
    u_BTC = CausalConv(k, dtype=self.dtype, param_dtype=self.param_dtype,
                       name='short_filter')(padded_BTC)
    *gates, v_BTD = [g.astype(jnp.float32) for g in jnp.split(u_BTC, n + 1, axis=-1)]

    length = t if history is None else history.value.shape[1]
    h_NLD, bias_ND = self.filter_fn(d, filters, self.max_length, name='filter')(length)
    inputs = []
    for i in range(filters):
      gate_BTD = gates[n - 1 - i]  # x_{i+1}: the gates are stored last first
      z_BTD = v_BTD if self.recurrence == 'paper' else gate_BTD * v_BTD
      if history is not None:
        past_BSD = jax.lax.dynamic_update_slice_in_dim(history.value[:, :, i], z_BTD, start,
                                                       axis=1)
        inputs.append(past_BSD)
        y_BTD = direct_causal_conv(past_BSD, h_NLD[i], bias_ND[i], start, t)
      elif self.conv == 'fft':
        y_BTD = fft_causal_conv(z_BTD, h_NLD[i], bias_ND[i])
      else:
        y_BTD = direct_causal_conv(z_BTD, h_NLD[i], bias_ND[i])
      v_BTD = gate_BTD * y_BTD if self.recurrence == 'paper' else y_BTD
    if self.recurrence == 'official':
      v_BTD = gates[0] * v_BTD
    if history is not None:
      history.value = jnp.stack(inputs, axis=2)
    return self.dense(d, ('mlp', 'embed'), self.out_init_stddev, 'out_proj')(
        v_BTD.astype(self.dtype))


class Block(nn.Module):
  """layers_{i}: x + Hyena(LN(x)), then x + MLP(LN(x))."""
  mixer: Callable[..., HyenaOperator]  # HyenaOperator with everything but its name
  mlp_dim: int
  dropout_rate: float = 0.0
  norm_eps: float = 1e-5
  init_stddev: float = 0.02
  out_init_stddev: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, *, start=0, train: bool = False, decode: bool = False):
    ln = lambda name: norm('layer', self.norm_eps, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=name)
    drop = lambda h: nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    h_BTD = self.mixer(name='mixer')(ln('norm1')(x_BTD), start=start, decode=decode)
    x_BTD = x_BTD + drop(h_BTD).astype(jnp.float32)
    h_BTD = Mlp(self.mlp_dim, 'gelu_tanh', init_stddev=self.init_stddev,
                out_init_stddev=self.out_init_stddev, dtype=self.dtype,
                param_dtype=self.param_dtype, name='mlp')(ln('norm2')(x_BTD))
    return x_BTD + drop(h_BTD).astype(jnp.float32)


class Model(nn.Module):
  """Hyena language model: tokens (B, T) int -> next-token logits (B, T, V) float32."""
  vocab_size: int = 50264
  num_layers: int = 18
  embed_dim: int = 864
  mlp_dim: Optional[int] = None  # default 4 D (the Pile configs: 2 D)
  order: int = 2  # N
  recurrence: str = 'paper'  # or 'official' (the reference code's N - 1 long filters)
  max_length: int = 2048  # the filter grid, the longest input accepted
  conv: str = 'fft'  # or 'direct' (the explicit causal sum; O(T^2))
  short_width: int = 3
  pos_dim: int = 33  # E, odd
  filter_dim: int = 64  # F
  filter_depth: int = 2
  sin_freq: float = 14.0
  decay_fast: float = 0.3
  decay_slow: float = 1.5
  decay_target: float = 1e-2
  dropout_rate: float = 0.0  # on each branch's output
  embed_dropout_rate: Optional[float] = None  # default dropout_rate (the Pile configs: 0.1)
  norm_eps: float = 1e-5
  init_stddev: float = 0.02
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, train: bool = False, decode: bool = False):
    _check('recurrence', self.recurrence, RECURRENCES)
    _check('conv', self.conv, CONVS)
    b, t = tokens_BT.shape
    if t > self.max_length:
      raise ValueError(f'sequence length {t} exceeds max_length {self.max_length}')
    start = token_positions(self, b, t, decode)[0, 0]
    embed = token_embed(self.vocab_size, self.embed_dim, self.init_stddev, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='embeddings')
    x_BTD = embed(tokens_BT).astype(jnp.float32)  # the residual stream stays float32
    embed_drop = self.dropout_rate if self.embed_dropout_rate is None else self.embed_dropout_rate
    x_BTD = nn.Dropout(embed_drop)(x_BTD, deterministic=not train)
    out_init = self.init_stddev / math.sqrt(2 * self.num_layers)
    filt = functools.partial(
        ImplicitFilter, pos_dim=self.pos_dim, filter_dim=self.filter_dim,
        filter_depth=self.filter_depth, sin_freq=self.sin_freq, decay_fast=self.decay_fast,
        decay_slow=self.decay_slow, decay_target=self.decay_target,
        init_stddev=self.init_stddev, param_dtype=self.param_dtype)
    mixer = functools.partial(
        HyenaOperator, self.order, self.recurrence, self.max_length, self.short_width,
        self.conv, filt, init_stddev=self.init_stddev, out_init_stddev=out_init,
        dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.num_layers):
      x_BTD = Block(mixer, self.mlp_dim or 4 * self.embed_dim, self.dropout_rate,
                    self.norm_eps, self.init_stddev, out_init, dtype=self.dtype,
                    param_dtype=self.param_dtype, name=f'layers_{i}')(
                        x_BTD, start=start, train=train, decode=decode)
    x_BTD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='ln_f')(x_BTD)
    return embed.attend(x_BTD.astype(self.dtype)).astype(jnp.float32)


# The reference code's configs/experiment/pile/hyena.yaml (d_model 864, n_layer 18,
# d_inner 2 * 864, order 2, filter_order 64, emb_dim 33, w 14, l_max 2048, embed_dropout
# 0.1, resid_dropout 0, vocabulary 50257 padded to a multiple of 8).
VARIANTS = {
    '153m': dict(num_layers=18, embed_dim=864, mlp_dim=1728, order=2, recurrence='official',
                 max_length=2048, pos_dim=33, filter_dim=64, sin_freq=14.0,
                 embed_dropout_rate=0.1),
}
TINY = dict(num_layers=2, embed_dim=32, mlp_dim=64, max_length=32, pos_dim=5,
            filter_dim=16)
