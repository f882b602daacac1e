"""Mamba: the selective state-space language model of Gu & Dao 2023, "Mamba: Linear-Time
Sequence Modeling with Selective State Spaces".

Each layer is x + Mixer(RMSNorm(x)); the mixer (the paper's figure 3) projects the input to
two branches of width E = expand * D. One branch runs a causal depthwise convolution
(width K, with bias), SiLU, then the selective SSM (S6, algorithm 2): per position, an
x_proj gives a rank-R step size and the input-dependent B and C (N each); the step size goes
through dt_proj (with bias) and softplus to delta (E). With A = -exp(A_log) (E, N), the
zero-order-hold discretisation the paper simplifies to

  h_t = exp(delta_t A) * h_{t-1} + delta_t B_t x_t,   y_t = C_t h_t + D * x_t.

The other branch gates: out_proj(y * SiLU(z)). A final RMSNorm, and the head is tied to the
embedding (as Hugging Face's MambaForCausalLM). No positions: order comes from the scan.

Initialisation, the paper's section 3.6 and appendix, and its reference code: A_log =
log(1..N) in every channel (S4D-real), D = 1, the dt_proj bias the inverse softplus of a
step size drawn log-uniform in [dt_min, dt_max] = [1e-3, 1e-1] (floored at 1e-4), the
dt_proj kernel uniform in +-R^-1/2; the other kernels PyTorch's default uniform in
+-fan_in^-1/2, out_proj's divided by sqrt(layers) (prenorm-residual rescaling), the
embedding normal(0.02).

Hugging Face's state-spaces/mamba-130m-hf (D 768, 24 layers, vocabulary 50280, N 16, K 4,
expand 2, R = ceil(768 / 16) = 48) has 129,135,360 parameters; the names here are its:
embeddings, layers_{i}/{norm, mixer/{in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj}},
norm_f. Kernels are stored (in, out) as flax's Dense; conv1d's kernel is (K, E)
(HF's (E, 1, K)).

Two scans compute the same recurrence (`scan=`): 'sequential', a `lax.scan` over time that
discretises inside the step (memory B*E*N per step), and 'parallel', `lax.associative_scan`
over the pairs (a_t, b_t) = (exp(delta_t A), delta_t B_t x_t) with (a, b) . (a', b') =
(a a', a' b + b'), which holds all (B, T, E, N) at once (the accelerator path, log T depth).
Measured 2026-12-06 on this 2-core CPU, loaded by other jobs (load average 6-8, so the
times vary run to run), on the cpu variant's shapes (batch 32, T 128, E 512, N 16; one
layer's scan under jit, median of 5, in two runs): forward sequential 43-60 ms, parallel
725-991 ms; forward+backward sequential 467-729 ms, parallel 1,785-2,449 ms. So
'sequential' is the default: the faster on CPU.

Its backward, ~10x its forward under autodiff, is where Mamba's CPU step went; the
sequential scan now has a hand-written gradient (`_adjoint_scan`, a `jax.custom_vjp`): the
forward keeps the state entering each step (T*B*E*N floats, 134 MB a layer of the cpu
variant) and the backward is one reverse-time `lax.scan` of the adjoint that forms every
input's gradient inside the step, with the state laid out (B, N, E). Equal to autodiff of
the plain scan (`_sequential_scan`) to 1e-10 in float64 (tests/test_mamba.py). Measured
2026-12-07, the same shapes, median of 5, autodiff -> adjoint in one script each: fwd+bwd
670-683 -> 351-359 ms at load 4; 1,476 -> 922 ms at load 9 (forward 43 -> 27 ms), where a
whole cpu-variant training step went 12.1 -> 8.0 s (GPT's cpu step 4.6 s in that script);
1.8-1.9 -> 1.0-1.1 s wall and 570-580 -> 370 ms of CPU time at load 15. The sums over N
as adds of slices, dA kept per batch row until the end and dB, dC as einsums then took
another fifth off (CPU time 396 -> 320 ms, 8 alternating runs, load 11). At load 12-13 the
whole step measured 26.8 -> 23.6 s against GPT's 7.9 s: under heavy sharing Mamba's many
small loop steps lose more than GPT's few large matmuls. Tried and not faster: the
gradients formed after the reverse scan as (T, B, N, E)-wide reductions (2-3x slower), the
(B, E, N) layout with einsums, unrolling 2 or 4 steps. A custom_vjp has no forward-mode
derivative (`jax.jvp`); 'parallel' or `_sequential_scan` give one.

Cached decoding: with decode=True each mixer keeps in the 'cache' collection 'conv_state'
(B, K-1, E), the last K-1 inputs of the convolution, and 'ssm_state' (B, E, N), the state h;
created as zeros by `init(..., decode=True)` and advanced by every later call, for a chunk of
any length (the sampler's prompt) or one token. Every leaf has the batch first, so beam
search reorders them as it does a KV cache. The interface is gpt.Model's:
`Model(...)(tokens_BT, *, train, decode)` -> logits (B, T, V) float32.

Dimension key: B batch, T length, D width, E inner width (expand * D), N state size,
R step-size rank, K convolution width, V vocabulary.
"""

import functools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.layers.embed import norm, token_embed

Dtype = Any
SCANS = ('sequential', 'parallel')


def _sequential_scan(x_BTE, delta_BTE, A_EN, B_BTN, C_BTN, h_BEN, unroll: int = 1):
  """The recurrence as a plain `lax.scan` over time, discretised inside the step, whose
  gradient is autodiff's (the reference `_adjoint_scan`'s gradient is tested against)."""
  def step(h_BEN, inputs):
    x_BE, delta_BE, B_BN, C_BN = inputs
    h_BEN = (jnp.exp(delta_BE[:, :, None] * A_EN) * h_BEN
             + (delta_BE * x_BE)[:, :, None] * B_BN[:, None, :])
    return h_BEN, jnp.einsum('ben,bn->be', h_BEN, C_BN)
  time_major = [jnp.swapaxes(a, 0, 1) for a in (x_BTE, delta_BTE, B_BTN, C_BTN)]
  h_BEN, y_TBE = jax.lax.scan(step, h_BEN, time_major, unroll=unroll)
  return jnp.swapaxes(y_TBE, 0, 1), h_BEN


# The same scan with a hand-written gradient: autodiff of the scan above stores a stack of
# every intermediate and runs a backward ~10x its forward on XLA:CPU. Here the forward
# keeps only the state entering each step, h_{t-1}, and the backward is one reverse-time
# scan of the adjoint g_t = dL/dh_t = a_{t+1} g_{t+1} + dy_t C_t (a_t = exp(delta_t A),
# b_t = delta_t x_t B_t), which forms each step's gradients as it goes:
# da_t = g_t h_{t-1}, db_t = g_t, dC_t = sum_e dy_t h_t, dh_0 = a_1 g_1. Inside, the state
# is (B, N, E), the inner width last: XLA:CPU vectorises the wide axis.

def _forward_NE(x_TBE, delta_TBE, A_NE, B_TBN, C_TBN, h_BNE, unroll):
  """Time-major scan: (y (T, B, E), h_T (B, N, E), h_{t-1} for every t (T, B, N, E))."""
  def step(h_BNE, inputs):
    x_BE, delta_BE, B_BN, C_BN = inputs
    new_BNE = (jnp.exp(delta_BE[:, None, :] * A_NE) * h_BNE
               + (delta_BE * x_BE)[:, None, :] * B_BN[:, :, None])
    return new_BNE, ((new_BNE * C_BN[:, :, None]).sum(1), h_BNE)
  h_BNE, (y_TBE, prev_TBNE) = jax.lax.scan(step, h_BNE, (x_TBE, delta_TBE, B_TBN, C_TBN),
                                           unroll=unroll)
  return y_TBE, h_BNE, prev_TBNE


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _adjoint_scan_NE(x_TBE, delta_TBE, A_NE, B_TBN, C_TBN, h_BNE, unroll):
  y_TBE, h_BNE, _ = _forward_NE(x_TBE, delta_TBE, A_NE, B_TBN, C_TBN, h_BNE, unroll)
  return y_TBE, h_BNE


def _adjoint_scan_fwd(x_TBE, delta_TBE, A_NE, B_TBN, C_TBN, h_BNE, unroll):
  y_TBE, h_BNE, prev_TBNE = _forward_NE(x_TBE, delta_TBE, A_NE, B_TBN, C_TBN, h_BNE, unroll)
  return (y_TBE, h_BNE), (x_TBE, delta_TBE, A_NE, B_TBN, C_TBN, prev_TBNE)


def _sum_N(a_BNE):
  """The sum over N as N - 1 adds of slices: fuses with its operands into one loop, where a
  `reduce` (a YNNPACK call on XLA:CPU) needs them written out first."""
  return functools.reduce(jnp.add, [a_BNE[:, i] for i in range(a_BNE.shape[1])])


def _adjoint_scan_bwd(unroll, residuals, cotangents):
  x_TBE, delta_TBE, A_NE, B_TBN, C_TBN, prev_TBNE = residuals
  dy_TBE, dh_BNE = cotangents  # dh: the gradient of the last state h_T

  def step(carry, inputs):
    ag_BNE, dA_BNE = carry  # a_{t+1} g_{t+1}; dA summed over later steps, not yet over B
    x_BE, delta_BE, B_BN, C_BN, dy_BE, prev_BNE = inputs
    a_BNE = jnp.exp(delta_BE[:, None, :] * A_NE)
    u_BE = delta_BE * x_BE
    h_BNE = a_BNE * prev_BNE + u_BE[:, None, :] * B_BN[:, :, None]  # recomputed h_t
    g_BNE = ag_BNE + dy_BE[:, None, :] * C_BN[:, :, None]
    s_BNE = g_BNE * prev_BNE * a_BNE  # da_t * a_t: d/d(delta_t A) of exp
    gB_BE = _sum_N(g_BNE * B_BN[:, :, None])  # d/du_t
    ddelta_BE = _sum_N(s_BNE * A_NE) + gB_BE * x_BE
    dA_BNE = dA_BNE + s_BNE * delta_BE[:, None, :]
    dB_BN = jnp.einsum('bne,be->bn', g_BNE, u_BE)
    dC_BN = jnp.einsum('bne,be->bn', h_BNE, dy_BE)
    return (a_BNE * g_BNE, dA_BNE), (gB_BE * delta_BE, ddelta_BE, dB_BN, dC_BN)

  (dh0_BNE, dA_BNE), (dx_TBE, ddelta_TBE, dB_TBN, dC_TBN) = jax.lax.scan(
      step, (dh_BNE, jnp.zeros_like(dh_BNE)),
      (x_TBE, delta_TBE, B_TBN, C_TBN, dy_TBE, prev_TBNE), reverse=True, unroll=unroll)
  return dx_TBE, ddelta_TBE, dA_BNE.sum(0), dB_TBN, dC_TBN, dh0_BNE


_adjoint_scan_NE.defvjp(_adjoint_scan_fwd, _adjoint_scan_bwd)


def _adjoint_scan(x_BTE, delta_BTE, A_EN, B_BTN, C_BTN, h_BEN, unroll: int = 1):
  """`_sequential_scan`'s values with the reverse-time adjoint scan as its gradient."""
  tm = lambda a: jnp.swapaxes(a, 0, 1)  # (B, T, ...) <-> (T, B, ...), (E, N) <-> (N, E)
  y_TBE, h_BNE = _adjoint_scan_NE(tm(x_BTE), tm(delta_BTE), A_EN.T, tm(B_BTN), tm(C_BTN),
                                  jnp.swapaxes(h_BEN, 1, 2), unroll)
  return tm(y_TBE), jnp.swapaxes(h_BNE, 1, 2)


def _combine(left, right):
  """Composition of two steps h -> a h + b: first `left`, then `right`."""
  a_l, b_l = left
  a_r, b_r = right
  return a_l * a_r, a_r * b_l + b_r


def _parallel_scan(x_BTE, delta_BTE, A_EN, B_BTN, C_BTN, h_BEN):
  """The recurrence as an associative scan over all (B, T, E, N) steps at once."""
  a_BTEN = jnp.exp(delta_BTE[..., None] * A_EN)
  b_BTEN = (delta_BTE * x_BTE)[..., None] * B_BTN[:, :, None, :]
  b_BTEN = b_BTEN.at[:, 0].add(a_BTEN[:, 0] * h_BEN)  # the carried-in state enters step 0
  _, h_BTEN = jax.lax.associative_scan(_combine, (a_BTEN, b_BTEN), axis=1)
  return jnp.einsum('bten,btn->bte', h_BTEN, C_BTN), h_BTEN[:, -1]


def selective_scan(x_BTE, delta_BTE, A_EN, B_BTN, C_BTN, D_E, h_BEN=None, *,
                   scan: str = 'sequential', unroll: int = 1):
  """S6: h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t, y_t = C_t h_t + D x_t, from h_BEN
  (zeros if None). Returns (y (B, T, E), the last state h_T (B, E, N)), in float32."""
  if scan not in SCANS:
    raise ValueError(f'unknown scan {scan!r}; valid: {", ".join(SCANS)}')
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  x_BTE, delta_BTE, A_EN, B_BTN, C_BTN = map(f32, (x_BTE, delta_BTE, A_EN, B_BTN, C_BTN))
  b, _, e = x_BTE.shape
  h_BEN = jnp.zeros((b, e, A_EN.shape[1]), jnp.float32) if h_BEN is None else f32(h_BEN)
  if scan == 'sequential':
    y_BTE, h_BEN = _adjoint_scan(x_BTE, delta_BTE, A_EN, B_BTN, C_BTN, h_BEN, unroll)
  else:
    y_BTE, h_BEN = _parallel_scan(x_BTE, delta_BTE, A_EN, B_BTN, C_BTN, h_BEN)
  return y_BTE + f32(D_E) * x_BTE, h_BEN


def torch_uniform(bound: Optional[float] = None, divide: float = 1.0):
  """Uniform in +-bound / divide; bound defaults to fan_in^-1/2 (PyTorch's Linear and Conv
  default, fan_in the first axis of the kernel's shape here)."""
  def init(key, shape, dtype=jnp.float32):
    limit = (shape[0] ** -0.5 if bound is None else bound) / divide
    return jax.random.uniform(key, shape, dtype, -limit, limit)
  return init


def dt_bias_init(dt_min: float = 1e-3, dt_max: float = 1e-1, dt_floor: float = 1e-4):
  """softplus^-1(dt), dt log-uniform in [dt_min, dt_max] and at least dt_floor: so that
  softplus(dt_proj bias) starts as the paper's step sizes."""
  def init(key, shape, dtype=jnp.float32):
    u = jax.random.uniform(key, shape, jnp.float32)
    dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = jnp.maximum(dt, dt_floor)
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)  # x + log(1 - e^-x) = log(e^x - 1)
  return init


def s4d_real_init(key, shape, dtype=jnp.float32):
  """A_log (E, N) = log(1, 2, ..., N) in every channel, so A = -(1..N) (S4D-real)."""
  del key
  return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[1] + 1, dtype=jnp.float32)),
                          shape).astype(dtype)


class CausalConv(nn.Module):
  """Depthwise convolution over time, valid padding: (B, K - 1 + T, E) -> (B, T, E),
  out_t = bias + sum_j kernel[j] * in_{t + j}. Fed K - 1 past inputs, it is causal."""
  width: int  # K
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, padded_BTE):
    k, e = self.width, padded_BTE.shape[-1]
    t = padded_BTE.shape[1] - k + 1
    lp = nn.with_logical_partitioning
    # PyTorch's Conv1d default: fan_in = K (one input channel per group).
    kernel_KE = self.param('kernel', lp(torch_uniform(k ** -0.5), (None, 'mlp')), (k, e),
                           self.param_dtype).astype(self.dtype)
    bias_E = self.param('bias', lp(torch_uniform(k ** -0.5), ('mlp',)), (e,),
                        self.param_dtype).astype(self.dtype)
    padded_BTE = padded_BTE.astype(self.dtype)
    return bias_E + sum(padded_BTE[:, j:j + t] * kernel_KE[j] for j in range(k))


class Mixer(nn.Module):
  """The Mamba block (figure 3): (B, T, D) -> (B, T, D)."""
  inner_dim: int
  state_dim: int = 16
  conv_width: int = 4
  dt_rank: int = 48
  scan: str = 'sequential'
  unroll: int = 1
  dt_min: float = 1e-3
  dt_max: float = 1e-1
  dt_floor: float = 1e-4
  out_divide: float = 1.0  # sqrt(layers): the prenorm-residual rescaling of out_proj
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def dense(self, features, axes, name, *, kernel_init=None, use_bias=False, bias_init=None):
    lp = nn.with_logical_partitioning
    return nn.Dense(features, use_bias=use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                    name=name, kernel_init=lp(kernel_init or torch_uniform(), axes),
                    bias_init=lp(bias_init or nn.initializers.zeros, axes[1:]))

  @nn.compact
  def __call__(self, x_BTD, *, decode: bool = False):
    b, t, d = x_BTD.shape
    e, n, k, r = self.inner_dim, self.state_dim, self.conv_width, self.dt_rank
    lp = nn.with_logical_partitioning
    xz_BT2E = self.dense(2 * e, ('embed', 'mlp'), 'in_proj')(x_BTD)
    x_BTE, z_BTE = jnp.split(xz_BT2E, 2, axis=-1)

    conv_state = ssm_state = None
    if decode:
      initialised = self.has_variable('cache', 'conv_state')
      conv_state = self.variable('cache', 'conv_state', jnp.zeros, (b, k - 1, e), x_BTE.dtype)
      ssm_state = self.variable('cache', 'ssm_state', jnp.zeros, (b, e, n), jnp.float32)
      if not initialised:  # init: the cache keeps its zeros
        conv_state = ssm_state = None

    past_BKE = (jnp.zeros((b, k - 1, e), x_BTE.dtype) if conv_state is None
                else conv_state.value.astype(x_BTE.dtype))
    padded_BTE = jnp.concatenate([past_BKE, x_BTE], axis=1)  # (B, K - 1 + T, E)
    if conv_state is not None:
      conv_state.value = padded_BTE[:, t:]
    x_BTE = nn.silu(CausalConv(k, dtype=self.dtype, param_dtype=self.param_dtype,
                               name='conv1d')(padded_BTE))

    dbc_BTF = self.dense(r + 2 * n, ('mlp', None), 'x_proj')(x_BTE)
    dt_BTR, B_BTN, C_BTN = jnp.split(dbc_BTF, [r, r + n], axis=-1)
    delta_BTE = nn.softplus(self.dense(
        e, (None, 'mlp'), 'dt_proj', kernel_init=torch_uniform(r ** -0.5), use_bias=True,
        bias_init=dt_bias_init(self.dt_min, self.dt_max, self.dt_floor))(dt_BTR)
        .astype(jnp.float32))
    A_log_EN = self.param('A_log', lp(s4d_real_init, ('mlp', None)), (e, n), self.param_dtype)
    D_E = self.param('D', lp(nn.initializers.ones, ('mlp',)), (e,), self.param_dtype)
    y_BTE, h_BEN = selective_scan(
        x_BTE, delta_BTE, -jnp.exp(A_log_EN.astype(jnp.float32)), B_BTN, C_BTN, D_E,
        None if ssm_state is None else ssm_state.value, scan=self.scan, unroll=self.unroll)
    if ssm_state is not None:
      ssm_state.value = h_BEN
    y_BTE = y_BTE.astype(self.dtype) * nn.silu(z_BTE)
    return self.dense(d, ('mlp', 'embed'), 'out_proj',
                      kernel_init=torch_uniform(divide=self.out_divide))(y_BTE)


class Layer(nn.Module):
  """layers_{i}: Mixer(RMSNorm(x)); the caller adds the residual."""
  mixer: Callable[..., Mixer]  # Mixer with everything but its name
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, *, decode: bool = False):
    x_BTD = norm('rms', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='norm')(x_BTD)
    return self.mixer(name='mixer')(x_BTD, decode=decode)


class Model(nn.Module):
  """Mamba language model: tokens (B, T) int -> next-token logits (B, T, V) float32."""
  vocab_size: int = 50280
  num_layers: int = 24
  embed_dim: int = 768
  state_dim: int = 16  # N
  conv_width: int = 4  # K
  expand: int = 2  # E = expand * D
  dt_rank: Optional[int] = None  # R; default ceil(D / 16)
  scan: str = 'sequential'  # or 'parallel' (associative scan: the accelerator path)
  unroll: int = 1  # time steps per iteration of the sequential scan
  dt_min: float = 1e-3
  dt_max: float = 1e-1
  dropout_rate: float = 0.0  # Mamba has none; on the embedding and each mixer's output
  norm_eps: float = 1e-5
  init_stddev: float = 0.02  # the embedding's
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, *, train: bool = False, decode: bool = False):
    if self.scan not in SCANS:
      raise ValueError(f'unknown scan {self.scan!r}; valid: {", ".join(SCANS)}')
    embed = token_embed(self.vocab_size, self.embed_dim, self.init_stddev, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='embeddings')
    x_BTD = embed(tokens_BT).astype(jnp.float32)  # the residual stream stays float32
    x_BTD = nn.Dropout(self.dropout_rate)(x_BTD, deterministic=not train)
    mixer = functools.partial(
        Mixer, self.expand * self.embed_dim, self.state_dim, self.conv_width,
        self.dt_rank or math.ceil(self.embed_dim / 16), scan=self.scan, unroll=self.unroll,
        dt_min=self.dt_min, dt_max=self.dt_max, out_divide=math.sqrt(self.num_layers),
        dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.num_layers):
      h_BTD = Layer(mixer, self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                    name=f'layers_{i}')(x_BTD, decode=decode)
      h_BTD = nn.Dropout(self.dropout_rate)(h_BTD, deterministic=not train)
      x_BTD = x_BTD + h_BTD.astype(jnp.float32)
    x_BTD = norm('rms', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='norm_f')(x_BTD)
    return embed.attend(x_BTD.astype(self.dtype)).astype(jnp.float32)


# Hugging Face's state-spaces/mamba-130m-hf (MambaConfig: hidden_size, num_hidden_layers,
# state_size, conv_kernel, expand; time_step_rank 'auto' = ceil(768 / 16) = 48).
VARIANTS = {
    '130m': dict(num_layers=24, embed_dim=768, state_dim=16, conv_width=4, expand=2),
}
TINY = dict(num_layers=2, embed_dim=32, state_dim=4, conv_width=4, expand=2)
