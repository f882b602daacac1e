"""RWKV-4: the linear-attention recurrent language model of Peng et al. 2023, "RWKV:
Reinventing RNNs for the Transformer Era".

The embedding goes through a LayerNorm (ln0, kept in block 0 as Hugging Face's
RwkvForCausalLM does), then each block is x + TimeMix(LN(x)), x + ChannelMix(LN(x)); a final
LayerNorm and an untied head. No positions: order comes from the token shift and the decay.

Token shift: each mix reads x_t and x_{t-1} (zeros before the first token) through a
per-channel interpolation, mix(mu) = mu * x_t + (1 - mu) * x_{t-1}.

TimeMix (the paper's equations 11-16): r, k, v = W_r mix(mu_r), W_k mix(mu_k), W_v mix(mu_v)
(no biases); with a per-channel decay w = -exp(time_decay) < 0 and bonus u = time_first,

  wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
          / (sum_{i<t} e^{(t-1-i) w + k_i}     + e^{u + k_t}),

and the output W_o (sigmoid(r) * wkv). As a recurrence over (a, b), the two sums, a_t =
e^w a_{t-1} + e^{k_t} v_t (b the same with 1 for v); to stay finite the state is kept as
(a, b, p), the true sums being a e^p and b e^p, and every exponent is shifted by the largest
one in play (the running-max trick of the paper's official kernels). The empty state is
a = b = 0, p = -inf; since b >= 1 once a token has been seen, a cache of zeros (how the LM
task's sampler makes one) is read as the empty state.

ChannelMix: sigmoid(W_r mix(mu_r)) * W_v relu(W_k mix(mu_k))^2.

Two forms of the WKV (`wkv=`), the same numbers to float tolerance: 'sequential', a
`lax.scan` over time of the stable recurrence, and 'chunked', which for chunks of
`chunk_size` positions computes every output of a chunk at once from the chunk's log-weights
(an L x L lower-triangular table per channel, plus the carried state's), shifted by their
maximum, and scans only over chunks (T / L steps; memory B * L * L * A a chunk). Neither was
timed here; 'sequential' is the default.

Initialisation, the official RWKV-4 training code's: the embedding small (the paper's
section 3.4, normal with stddev 1e-4, then ln0); time_decay in layer l of L channel h of A
-5 + 8 (h / (A - 1))^(0.7 + 1.3 l / (L - 1)); time_first log(0.3) plus a zigzag 0, 0.5, -0.5
over channels; the mixes mu = (i / D)^(1 - l / L) (value's plus 0.3 l / (L - 1), receptance's
exponent halved in the time-mix); time-mix key, receptance, output and channel-mix
receptance, value zero; other matrices orthogonal with gain sqrt(out / in) when out > in,
the head's times 0.5.

Hugging Face's RWKV/rwkv-4-169m-pile (D 768, 12 layers, vocabulary 50277, A 768, F 3072,
untied head) has 169,342,464 parameters; the names here are its: embeddings,
blocks_{i}/{pre_ln (block 0 only), ln1, ln2, attention/{time_decay, time_first,
time_mix_key, time_mix_value, time_mix_receptance, key, value, receptance, output},
feed_forward/{time_mix_key, time_mix_receptance, key, receptance, value}}, ln_out, head.
Kernels are stored (in, out) as flax's Dense; the mixes are (D,) (HF's (1, 1, D)).

Cached decoding: with decode=True each block keeps in the 'cache' collection
attention/{shift (B, D), a, b, p (B, A)} and feed_forward/shift (B, D): the last normalised
input of each mix and the WKV state. Created as zeros by `init(..., decode=True)` and
advanced by every later call, for a chunk of any length (the sampler's prompt) or one token;
every leaf has the batch first, so beam search reorders them as it does a KV cache. The
interface is gpt.Model's: `Model(...)(tokens_BT, *, train, decode)` -> logits (B, T, V)
float32.

Dimension key: B batch, T length, D width, A attention (WKV) width, F channel-mix hidden
width, V vocabulary, L chunk length.
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.layers.embed import norm, token_embed

Dtype = Any
FORMS = ('sequential', 'chunked')
EMPTY_P = -1e38  # the exponent of an empty state (finite, so that p + w stays a number)


def _empty_state(b: int, a: int):
  zeros = jnp.zeros((b, a), jnp.float32)
  return zeros, zeros, jnp.full((b, a), EMPTY_P, jnp.float32)


def _sequential_wkv(w_A, u_A, k_BTA, v_BTA, state):
  """The stable recurrence as a `lax.scan` over time."""
  def step(carry, kv):
    a_BA, b_BA, p_BA = carry
    k_BA, v_BA = kv
    # Output: the state plus the current token with its bonus u.
    q_BA = jnp.maximum(p_BA, u_A + k_BA)
    old_BA, new_BA = jnp.exp(p_BA - q_BA), jnp.exp(u_A + k_BA - q_BA)
    y_BA = (old_BA * a_BA + new_BA * v_BA) / (old_BA * b_BA + new_BA)
    # Update: the state decays by e^w, the current token enters without the bonus.
    q_BA = jnp.maximum(p_BA + w_A, k_BA)
    old_BA, new_BA = jnp.exp(p_BA + w_A - q_BA), jnp.exp(k_BA - q_BA)
    return (old_BA * a_BA + new_BA * v_BA, old_BA * b_BA + new_BA, q_BA), y_BA
  state, y_TBA = jax.lax.scan(step, state, (jnp.swapaxes(k_BTA, 0, 1),
                                            jnp.swapaxes(v_BTA, 0, 1)))
  return jnp.swapaxes(y_TBA, 0, 1), state


def _chunk_wkv(w_A, u_A, k_BLA, v_BLA, state):
  """One chunk all at once: every output from its log-weights, and the state after it."""
  a_BA, b_BA, p_BA = state
  n = k_BLA.shape[1]
  t = jnp.arange(n)
  lag_LL = t[:, None] - 1 - t[None, :]  # (output t, input i): decays between them
  past_BLLA = jnp.maximum(lag_LL, 0)[None, :, :, None] * w_A + k_BLA[:, None]
  now_BL1A = (u_A + k_BLA)[:, :, None]
  logw_BLLA = jnp.where((lag_LL >= 0)[None, :, :, None], past_BLLA,
                        jnp.where((lag_LL == -1)[None, :, :, None], now_BL1A, -jnp.inf))
  logs_BLA = p_BA[:, None] + t[None, :, None] * w_A  # the carried state, decayed t steps
  m_BLA = jnp.maximum(logw_BLLA.max(axis=2), logs_BLA)
  e_BLLA = jnp.exp(logw_BLLA - m_BLA[:, :, None])
  es_BLA = jnp.exp(logs_BLA - m_BLA)
  num_BLA = jnp.einsum('btia,bia->bta', e_BLLA, v_BLA) + es_BLA * a_BA[:, None]
  den_BLA = e_BLLA.sum(axis=2) + es_BLA * b_BA[:, None]
  # The state after the chunk: input i has decayed n - 1 - i steps, the old state n.
  end_BLA = (n - 1 - t)[None, :, None] * w_A + k_BLA
  ends_BA = p_BA + n * w_A
  q_BA = jnp.maximum(ends_BA, end_BLA.max(axis=1))
  e_BLA, es_BA = jnp.exp(end_BLA - q_BA[:, None]), jnp.exp(ends_BA - q_BA)
  state = (es_BA * a_BA + (e_BLA * v_BLA).sum(1), es_BA * b_BA + e_BLA.sum(1), q_BA)
  return num_BLA / den_BLA, state


def _chunked_wkv(w_A, u_A, k_BTA, v_BTA, state, chunk: int):
  """A `lax.scan` over whole chunks of `chunk` positions, then the remainder as one chunk."""
  b, t, a = k_BTA.shape
  whole = t // chunk * chunk
  ys = []
  if whole:
    to_chunks = lambda x: jnp.moveaxis(x[:, :whole].reshape(b, -1, chunk, a), 1, 0)
    step = lambda s, kv: _chunk_wkv(w_A, u_A, *kv, s)[::-1]
    state, y_CBLA = jax.lax.scan(step, state, (to_chunks(k_BTA), to_chunks(v_BTA)))
    ys.append(jnp.moveaxis(y_CBLA, 0, 1).reshape(b, whole, a))
  if whole < t:
    y_BRA, state = _chunk_wkv(w_A, u_A, k_BTA[:, whole:], v_BTA[:, whole:], state)
    ys.append(y_BRA)
  return jnp.concatenate(ys, axis=1), state


def wkv(w_A, u_A, k_BTA, v_BTA, state=None, *, form: str = 'sequential', chunk: int = 16):
  """RWKV-4's WKV with decay w (< 0) and bonus u, from `state` = (a, b, p) (B, A) each
  (empty if None; an all-zero state is empty too). Returns (wkv (B, T, A), the state after
  the last position), in float32."""
  if form not in FORMS:
    raise ValueError(f'unknown wkv form {form!r}; valid: {", ".join(FORMS)}')
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  w_A, u_A, k_BTA, v_BTA = map(f32, (w_A, u_A, k_BTA, v_BTA))
  if state is None:
    state = _empty_state(k_BTA.shape[0], k_BTA.shape[2])
  else:
    a_BA, b_BA, p_BA = map(f32, state)
    state = a_BA, b_BA, jnp.where(b_BA == 0, EMPTY_P, p_BA)
  if form == 'sequential':
    return _sequential_wkv(w_A, u_A, k_BTA, v_BTA, state)
  return _chunked_wkv(w_A, u_A, k_BTA, v_BTA, state, chunk)


def token_shift(x_BTD, prev_BD=None):
  """x_{t-1} at every t: `prev_BD` (the previous call's last input; zeros if None) at t = 0."""
  b, _, d = x_BTD.shape
  prev_BD = jnp.zeros((b, d), x_BTD.dtype) if prev_BD is None else prev_BD.astype(x_BTD.dtype)
  return jnp.concatenate([prev_BD[:, None], x_BTD[:, :-1]], axis=1)


def _cache(module: nn.Module, decode: bool, **shapes):
  """The module's 'cache' variables {name: variable}, created as zeros; None where there
  is nothing to read or advance (not decoding, or `init` creating the cache)."""
  if not decode:
    return None
  initialised = module.has_variable('cache', next(iter(shapes)))
  variables = {name: module.variable('cache', name, jnp.zeros, shape, jnp.float32)
               for name, shape in shapes.items()}
  return variables if initialised else None


# --- the official code's initialisation, as functions of (layer, number of layers) -------

def _ratios(layer: int, num_layers: int):
  """(l / (L - 1): 0 to 1 over the blocks, 1 - l / L: 1 to almost 0)."""
  return layer / max(num_layers - 1, 1), 1.0 - layer / num_layers


def mix_init(layer: int, num_layers: int, power: float = 1.0, offset: float = 0.0):
  """mu_i = (i / D)^(power * (1 - l / L)) + offset * l / (L - 1)."""
  up, down = _ratios(layer, num_layers)
  def init(key, shape, dtype=jnp.float32):
    del key
    x = jnp.arange(shape[0], dtype=jnp.float32) / shape[0]
    return (x ** (power * down) + offset * up).astype(dtype)
  return init


def decay_init(layer: int, num_layers: int):
  """time_decay_h = -5 + 8 (h / (A - 1))^(0.7 + 1.3 l / (L - 1)): fast to slow decays."""
  up, _ = _ratios(layer, num_layers)
  def init(key, shape, dtype=jnp.float32):
    del key
    h = jnp.arange(shape[0], dtype=jnp.float32) / max(shape[0] - 1, 1)
    return (-5.0 + 8.0 * h ** (0.7 + 1.3 * up)).astype(dtype)
  return init


def first_init(key, shape, dtype=jnp.float32):
  """time_first = log(0.3) + 0.5 * (0, 1, -1, 0, 1, -1, ...)."""
  del key
  zigzag = ((jnp.arange(shape[0]) + 1) % 3 - 1).astype(jnp.float32) * 0.5
  return (math.log(0.3) + zigzag).astype(dtype)


def orthogonal(scale: float = 1.0):
  """Orthogonal, with gain sqrt(out / in) for a widening (in, out) kernel, times `scale`."""
  def init(key, shape, dtype=jnp.float32):
    gain = math.sqrt(shape[1] / shape[0]) if shape[1] > shape[0] else 1.0
    return nn.initializers.orthogonal(gain * scale)(key, shape, dtype)
  return init


class _Mix(nn.Module):
  """Shared by the two mixes: the token-shift interpolations and bias-free projections."""
  layer: int = 0
  num_layers: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def mix(self, name, x_BTD, prev_BTD, **init):
    mu_D = self.param(name, nn.with_logical_partitioning(
        mix_init(self.layer, self.num_layers, **init), ('embed',)), (x_BTD.shape[-1],),
        self.param_dtype).astype(self.dtype)
    return x_BTD * mu_D + prev_BTD * (1 - mu_D)

  def dense(self, features, axes, name, zero=False):
    init = nn.initializers.zeros if zero else orthogonal()
    return nn.Dense(features, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                    kernel_init=nn.with_logical_partitioning(init, axes), name=name)


class TimeMix(_Mix):
  """attention: the WKV over token-shifted receptance, key and value; (B, T, D) -> same."""
  attention_dim: int = 768  # A
  wkv: str = 'sequential'  # or 'chunked'
  chunk_size: int = 16  # L, for 'chunked'

  @nn.compact
  def __call__(self, x_BTD, *, decode: bool = False):
    b, _, d = x_BTD.shape
    a = self.attention_dim
    lp = nn.with_logical_partitioning
    cache = _cache(self, decode, shift=(b, d), a=(b, a), b=(b, a), p=(b, a))
    x_BTD = x_BTD.astype(self.dtype)
    prev_BTD = token_shift(x_BTD, None if cache is None else cache['shift'].value)
    k_BTA = self.dense(a, ('embed', 'mlp'), 'key', zero=True)(
        self.mix('time_mix_key', x_BTD, prev_BTD))
    v_BTA = self.dense(a, ('embed', 'mlp'), 'value')(
        self.mix('time_mix_value', x_BTD, prev_BTD, offset=0.3))
    r_BTA = self.dense(a, ('embed', 'mlp'), 'receptance', zero=True)(
        self.mix('time_mix_receptance', x_BTD, prev_BTD, power=0.5))
    decay_A = self.param('time_decay', lp(decay_init(self.layer, self.num_layers), ('mlp',)),
                         (a,), self.param_dtype)
    first_A = self.param('time_first', lp(first_init, ('mlp',)), (a,), self.param_dtype)
    state = None if cache is None else tuple(cache[n].value for n in 'abp')
    y_BTA, state = wkv(-jnp.exp(decay_A.astype(jnp.float32)), first_A, k_BTA, v_BTA, state,
                       form=self.wkv, chunk=self.chunk_size)
    if cache is not None:
      cache['shift'].value = x_BTD[:, -1].astype(jnp.float32)
      for name, value in zip('abp', state):
        cache[name].value = value
    y_BTA = nn.sigmoid(r_BTA) * y_BTA.astype(self.dtype)
    return self.dense(d, ('mlp', 'embed'), 'output', zero=True)(y_BTA)


class ChannelMix(_Mix):
  """feed_forward: sigmoid(receptance) * value(relu(key)^2), token-shifted; (B, T, D) -> same."""
  ffn_dim: int = 3072  # F

  @nn.compact
  def __call__(self, x_BTD, *, decode: bool = False):
    b, _, d = x_BTD.shape
    cache = _cache(self, decode, shift=(b, d))
    x_BTD = x_BTD.astype(self.dtype)
    prev_BTD = token_shift(x_BTD, None if cache is None else cache['shift'].value)
    if cache is not None:
      cache['shift'].value = x_BTD[:, -1].astype(jnp.float32)
    h_BTF = jnp.square(nn.relu(self.dense(self.ffn_dim, ('embed', 'mlp'), 'key')(
        self.mix('time_mix_key', x_BTD, prev_BTD))))
    r_BTD = self.dense(d, ('embed', None), 'receptance', zero=True)(
        self.mix('time_mix_receptance', x_BTD, prev_BTD))
    return nn.sigmoid(r_BTD) * self.dense(d, ('mlp', 'embed'), 'value', zero=True)(h_BTF)


class Block(nn.Module):
  """blocks_{i}: (ln0 in block 0), x + TimeMix(LN(x)), x + ChannelMix(LN(x))."""
  layer: int
  num_layers: int
  attention_dim: int
  ffn_dim: int
  wkv: str = 'sequential'
  chunk_size: int = 16
  dropout_rate: float = 0.0
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, *, train: bool = False, decode: bool = False):
    ln = lambda name: norm('layer', self.norm_eps, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=name)
    drop = lambda h: nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    common = dict(layer=self.layer, num_layers=self.num_layers, dtype=self.dtype,
                  param_dtype=self.param_dtype)
    if self.layer == 0:
      x_BTD = drop(ln('pre_ln')(x_BTD).astype(jnp.float32))
    h_BTD = TimeMix(**common, attention_dim=self.attention_dim, wkv=self.wkv,
                    chunk_size=self.chunk_size, name='attention')(ln('ln1')(x_BTD),
                                                                   decode=decode)
    x_BTD = x_BTD + drop(h_BTD).astype(jnp.float32)
    h_BTD = ChannelMix(**common, ffn_dim=self.ffn_dim, name='feed_forward')(
        ln('ln2')(x_BTD), decode=decode)
    return x_BTD + drop(h_BTD).astype(jnp.float32)


class Model(nn.Module):
  """RWKV-4 language model: tokens (B, T) int -> next-token logits (B, T, V) float32."""
  vocab_size: int = 50277
  num_layers: int = 12
  embed_dim: int = 768
  attention_dim: Optional[int] = None  # A; default D
  ffn_dim: Optional[int] = None  # F; default 4 D
  wkv: str = 'sequential'  # or 'chunked' (parallel within chunks of chunk_size)
  chunk_size: int = 16
  dropout_rate: float = 0.0  # RWKV-4 has none; on ln0's output and each branch's output
  norm_eps: float = 1e-5
  init_stddev: float = 1e-4  # the embedding's: the paper's small init
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, train: bool = False, decode: bool = False):
    if self.wkv not in FORMS:
      raise ValueError(f'unknown wkv form {self.wkv!r}; valid: {", ".join(FORMS)}')
    d = self.embed_dim
    x_BTD = token_embed(self.vocab_size, d, self.init_stddev, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='embeddings')(tokens_BT)
    x_BTD = x_BTD.astype(jnp.float32)  # the residual stream stays float32
    for i in range(self.num_layers):
      x_BTD = Block(i, self.num_layers, self.attention_dim or d, self.ffn_dim or 4 * d,
                    self.wkv, self.chunk_size, self.dropout_rate, self.norm_eps,
                    dtype=self.dtype, param_dtype=self.param_dtype, name=f'blocks_{i}')(
                        x_BTD, train=train, decode=decode)
    x_BTD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='ln_out')(x_BTD)
    head = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype,
                    param_dtype=self.param_dtype, name='head',
                    kernel_init=nn.with_logical_partitioning(orthogonal(0.5),
                                                             ('embed', 'vocab')))
    return head(x_BTD.astype(self.dtype)).astype(jnp.float32)


# Hugging Face's RWKV/rwkv-4-169m-pile (RwkvConfig: hidden_size, num_hidden_layers,
# attention_hidden_size and intermediate_size default to D and 4 D).
VARIANTS = {
    '169m': dict(num_layers=12, embed_dim=768),
}
TINY = dict(num_layers=2, embed_dim=32)
