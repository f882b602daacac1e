"""Liquid time-constant networks (LTC; Hasani, Lechner, Amini, Rus & Grosu 2021, "Liquid
time-constant networks", AAAI) and closed-form continuous-time networks (CfC; Hasani,
Lechner, Amini, Liebenwein, Ray, Tschaikowski, Teschl & Rus 2022, "Closed-form
continuous-time neural networks", Nature Machine Intelligence), and a classifier of
irregularly sampled sequences over either of them or over an LSTM baseline.

LTC. Each of H neurons is a leaky membrane driven by conductance-based synapses from the
other neurons (recurrent, H x H) and from the D inputs (sensory, D x H), the paper's
eq. 1, dx/dt = -[1/tau + f(x, I)] x + f(x, I) A, written per neuron i as

  c_i dv_i/dt = g_i (e_i - v_i) + sum_j w_ji s(v_j; mu_ji, sigma_ji) (E_ji - v_i)
                                + sum_d w'_di s(u_d; mu'_di, sigma'_di) (E'_di - v_i)

with s(v; mu, sigma) = sigmoid(sigma (v - mu)) and u = a * I + b (the affine input map):
the leak time constant tau_i = c_i / g_i, the synaptic drive f = sum w s / c and the
reversal potentials E playing A (the leak's resting potential e is a bias the paper's form
has as well, once the leak is written as a synapse). The conductances c, g, w, w' are
softplus of raw parameters (plus MIN_POSITIVE), so every time constant, c / g and the
state-dependent c / (g + sum w s), is positive for any parameter value; they start
uniform in the reference code's ranges (c 0.4-0.6, g 0.001-1, w 0.001-1, sigma 3-8,
mu 0.3-0.8, e -0.2-0.2), E at +1 or -1 (excitatory with probability 2/3).

Its solver is the paper's fused step (eq. 3), a semi-implicit Euler step that treats the
decay implicitly and the synaptic drive explicitly:

  v(t + h) = [v + (h / c) (g e + sum w s E)] / [1 + (h / c) (g + sum w s)]

unfolded `ode_unfolds` times (6, as the reference) per input step with h = elapsed / unfolds,
so the elapsed time of each step enters the solver. The new state is a convex combination
of v, e and the E's, so it stays within their range for any step size, and zero elapsed
time leaves it unchanged. The sensory terms depend on the input only and are computed for
all steps before the scan. Each step is rematerialised in the backward pass: storing the
(B, H, H) synapse activations of every unfold made XLA:CPU's scan gradient 586 ms a step
against 155 ms with remat (B 128, T 16, H 32, 6 unfolds; 2 cores at load 11, 2026-12-06).

CfC. The closed-form approximation of such dynamics (the paper's eq. 10): a backbone
z = lecun_tanh(W [I, x] + b) (lecun_tanh(u) = 1.7159 tanh(0.666 u); `backbone_layers`
deep) and heads g, h (tanh) and f read z, and after elapsed time t

  x(t) = sigmoid(-f t) * g + (1 - sigmoid(-f t)) * h          ('default')

where f t is the reference code's affine f_a t + f_b (time_a and time_b heads; f_b = 0 is
the paper's form): the gate is a learned, input-dependent time constant, and no ODE is
solved. 'no_gate' is x = g + (1 - sigmoid(-f t)) * h; 'pure' is the direct solution of the
LTC with a constant drive (the paper's eq. 5), x(t) = -A exp(-t (|w_tau| + |f|)) f + A.

LSTM baseline: the LSTM of arch/sequence/rnn.py with the elapsed time as an extra input
feature (the "augmented LSTM" of the papers' tables).

Padding: where the mask is False a step leaves the state unchanged, so the classifier reads
the state after each sequence's last real event. Inputs are `values` (B, T, D), the elapsed
time before each step `gaps` (B, T) (times `time_scale`), `mask` (B, T).

Measured on the event-based bit-stream XOR (train/datasets/events.py): configs/liquid_seq.py.

Dimension key: B batch, T time, D input features, S synapse sources (D or H), H neurons,
U backbone units, K classes.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.sequence import rnn

Dtype = Any
MIN_POSITIVE = 1e-6  # floor of the softplus-constrained conductances

# Initial ranges of the reference implementation (Lechner & Hasani's ncps).
INIT_RANGES = {'gleak': (0.001, 1.0), 'vleak': (-0.2, 0.2), 'cm': (0.4, 0.6),
               'w': (0.001, 1.0), 'sigma': (3.0, 8.0), 'mu': (0.3, 0.8)}


def positive(raw):
  """The constrained value of a conductance or capacitance: softplus(raw) + MIN_POSITIVE."""
  return jax.nn.softplus(raw) + MIN_POSITIVE


def _uniform(lo, hi, through_softplus=False):
  """Initializer: uniform in [lo, hi]; with `through_softplus`, the raw value whose
  `positive` is uniform in [lo, hi]."""
  def init(key, shape, dtype=jnp.float32):
    y = jax.random.uniform(key, shape, jnp.float32, lo, hi)
    if through_softplus:
      y = y - MIN_POSITIVE
      y = y + jnp.log(-jnp.expm1(-y))  # softplus^-1(y) = log(exp(y) - 1), stably
    return y.astype(dtype)
  return init


def _polarity(key, shape, dtype=jnp.float32):
  """Reversal potentials: +1 (excitatory) with probability 2/3, else -1 (inhibitory)."""
  return jnp.where(jax.random.uniform(key, shape) < 1 / 3, -1.0, 1.0).astype(dtype)


def lecun_tanh(x):
  return 1.7159 * jnp.tanh(0.666 * x)


def synapses(v_BS, w_SH, mu_SH, sigma_SH, erev_SH):
  """The synaptic drive of S sources onto H neurons: (sum_s w s E, sum_s w s), (B, H) each,
  with s = sigmoid(sigma (v_s - mu)) and w already positive."""
  act_BSH = w_SH * jax.nn.sigmoid(sigma_SH * (v_BS[..., :, None] - mu_SH))
  return (act_BSH * erev_SH).sum(-2), act_BSH.sum(-2)


def fused_step(v_BH, num_BH, den_BH, cm_H, gleak_H, vleak_H, h_B):
  """One fused semi-implicit Euler step of c dv/dt = g (e - v) + num - den v over time
  h (B,) (the paper's eq. 3)."""
  r_BH = h_B[:, None] / cm_H
  return (v_BH + r_BH * (gleak_H * vleak_H + num_BH)) / (1.0 + r_BH * (gleak_H + den_BH))


def _lp(init, axes):
  return nn.with_logical_partitioning(init, axes)


class Sensory(nn.Module):
  """The LTC's input synapses: inputs (..., D) -> (sum w' s' E', sum w' s') (..., H) each,
  after the affine input map u = a * I + b."""
  hidden_dim: int
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD):
    d, h = x_BTD.shape[-1], self.hidden_dim
    p = lambda name, init, shape, axes: jnp.asarray(
        self.param(name, _lp(init, axes), shape, self.param_dtype), jnp.float32)
    a_D = p('input_w', nn.initializers.ones, (d,), (None,))
    b_D = p('input_b', nn.initializers.zeros, (d,), (None,))
    w_DH = positive(p('w', _uniform(*INIT_RANGES['w'], True), (d, h), (None, 'mlp')))
    mu_DH = p('mu', _uniform(*INIT_RANGES['mu']), (d, h), (None, 'mlp'))
    sigma_DH = p('sigma', _uniform(*INIT_RANGES['sigma']), (d, h), (None, 'mlp'))
    erev_DH = p('erev', _polarity, (d, h), (None, 'mlp'))
    u = x_BTD.astype(jnp.float32) * a_D + b_D
    return synapses(u, w_DH, mu_DH, sigma_DH, erev_DH)


class LTCCell(nn.Module):
  """A liquid time-constant cell: `sensory(x)` for all steps, then per step
  `(v, (num, den), elapsed) -> v'` by `ode_unfolds` fused solver steps. State float32."""
  hidden_dim: int
  ode_unfolds: int = 6
  param_dtype: Dtype = jnp.float32

  def setup(self):
    h = self.hidden_dim
    p = lambda name, init, shape, axes: self.param(name, _lp(init, axes), shape,
                                                   self.param_dtype)
    self.sensory = Sensory(h, self.param_dtype)
    self.gleak = p('gleak', _uniform(*INIT_RANGES['gleak'], True), (h,), ('mlp',))
    self.vleak = p('vleak', _uniform(*INIT_RANGES['vleak']), (h,), ('mlp',))
    self.cm = p('cm', _uniform(*INIT_RANGES['cm'], True), (h,), ('mlp',))
    self.w = p('w', _uniform(*INIT_RANGES['w'], True), (h, h), (None, 'mlp'))
    self.mu = p('mu', _uniform(*INIT_RANGES['mu']), (h, h), (None, 'mlp'))
    self.sigma = p('sigma', _uniform(*INIT_RANGES['sigma']), (h, h), (None, 'mlp'))
    self.erev = p('erev', _polarity, (h, h), (None, 'mlp'))

  def constants(self) -> dict:
    """The constrained parameters, float32: cm, gleak, w positive; vleak, mu, sigma, erev."""
    f = lambda a: jnp.asarray(a, jnp.float32)
    return {'cm': positive(f(self.cm)), 'gleak': positive(f(self.gleak)),
            'vleak': f(self.vleak), 'w': positive(f(self.w)), 'mu': f(self.mu),
            'sigma': f(self.sigma), 'erev': f(self.erev)}

  def time_constants(self, v_BH=None, sensory_den_BH=None):
    """The leak time constants c / g (H,); with a state, the liquid (state- and
    input-dependent) ones c / (g + sum w s + sum w' s') (B, H)."""
    k = self.constants()
    if v_BH is None:
      return k['cm'] / k['gleak']
    _, den_BH = synapses(v_BH, k['w'], k['mu'], k['sigma'], k['erev'])
    if sensory_den_BH is not None:
      den_BH = den_BH + sensory_den_BH
    return k['cm'] / (k['gleak'] + den_BH)

  def __call__(self, v_BH, sensory, elapsed_B):
    num_s_BH, den_s_BH = sensory
    k = self.constants()
    h_B = elapsed_B.astype(jnp.float32) / self.ode_unfolds
    for _ in range(self.ode_unfolds):
      num_BH, den_BH = synapses(v_BH, k['w'], k['mu'], k['sigma'], k['erev'])
      v_BH = fused_step(v_BH, num_BH + num_s_BH, den_BH + den_s_BH, k['cm'], k['gleak'],
                        k['vleak'], h_B)
    return v_BH


def _fan_in_bias(fan_in):
  """PyTorch's default Linear bias, uniform in +-1/sqrt(fan_in), which the reference keeps
  (it re-initialises only the kernels, Glorot-uniform)."""
  bound = 1.0 / max(fan_in, 1) ** 0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


def _dense(features, name, fan_in, axes=('embed', 'mlp'), dtype=jnp.float32,
           param_dtype=jnp.float32):
  return nn.Dense(features, name=name, dtype=dtype, param_dtype=param_dtype,
                  kernel_init=_lp(nn.initializers.xavier_uniform(), axes),
                  bias_init=_lp(_fan_in_bias(fan_in), axes[1:]))


class CfCCell(nn.Module):
  """A closed-form continuous-time cell: (x (B, H), input (B, D), elapsed (B,)) -> x'."""
  hidden_dim: int
  backbone_units: int = 64
  backbone_layers: int = 1
  mode: str = 'default'  # 'default' | 'no_gate' | 'pure'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def heads(self, x_BH, i_BD):
    """The backbone and heads: {'ff1', 'ff2', 'time_a', 'time_b'} (B, H) float32 before
    their nonlinearities ('ff1' only in 'pure' mode)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    z = jnp.concatenate([i_BD.astype(jnp.float32), x_BH], -1)
    for i in range(self.backbone_layers):
      z = lecun_tanh(_dense(self.backbone_units, f'backbone_{i}', z.shape[-1], **kw)(z))
    names = ('ff1',) if self.mode == 'pure' else ('ff1', 'ff2', 'time_a', 'time_b')
    return {n: _dense(self.hidden_dim, n, z.shape[-1], **kw)(z).astype(jnp.float32)
            for n in names}

  @nn.compact
  def __call__(self, x_BH, i_BD, elapsed_B):
    if self.mode not in ('default', 'no_gate', 'pure'):
      raise ValueError(f"unknown CfC mode {self.mode!r}; valid: 'default', 'no_gate', 'pure'")
    out = self.heads(x_BH, i_BD)
    t_B1 = elapsed_B.astype(jnp.float32)[:, None]
    if self.mode == 'pure':
      w_tau_H = self.param('w_tau', _lp(nn.initializers.zeros, ('mlp',)),
                           (self.hidden_dim,), self.param_dtype)
      a_H = self.param('A', _lp(nn.initializers.ones, ('mlp',)), (self.hidden_dim,),
                       self.param_dtype)
      f_BH = out['ff1']
      return -a_H * jnp.exp(-t_B1 * (jnp.abs(w_tau_H) + jnp.abs(f_BH))) * f_BH + a_H
    g_BH, h_BH = jnp.tanh(out['ff1']), jnp.tanh(out['ff2'])
    # 1 - sigmoid(-f t) with f t = f_a t + f_b
    gate_BH = jax.nn.sigmoid(out['time_a'] * t_B1 + out['time_b'])
    if self.mode == 'no_gate':
      return g_BH + gate_BH * h_BH
    return g_BH * (1.0 - gate_BH) + gate_BH * h_BH


def _masked_step(cell, x_BH, inputs):
  """One scan step of a continuous-time cell; where the mask is False the state stays."""
  drive, elapsed_B, m_B = inputs
  new_BH = cell(x_BH, drive, elapsed_B)
  new_BH = jnp.where(m_B[:, None], new_BH, x_BH)
  return new_BH, new_BH


def _scan(cell, x0_BH, drive, elapsed_BT, mask_BT, remat=False):
  step = nn.remat(_masked_step) if remat else _masked_step
  scan = nn.scan(step, variable_broadcast='params', split_rngs={'params': False},
                 in_axes=1, out_axes=1)
  return scan(cell, x0_BH, (drive, elapsed_BT, mask_BT))


class LTC(nn.Module):
  """An LTC layer over time: (values (B, T, D), elapsed (B, T), mask) -> final state,
  states (B, T, H)."""
  hidden_dim: int = 32
  ode_unfolds: int = 6
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, elapsed_BT, mask_BT):
    cell = LTCCell(self.hidden_dim, self.ode_unfolds, self.param_dtype, name='cell')
    drive = cell.sensory(x_BTD)  # ((B, T, H), (B, T, H)), before the scan
    v0_BH = jnp.zeros((x_BTD.shape[0], self.hidden_dim), jnp.float32)
    return _scan(cell, v0_BH, drive, elapsed_BT, mask_BT, remat=True)


class CfC(nn.Module):
  """A CfC layer over time: (values (B, T, D), elapsed (B, T), mask) -> final state,
  states (B, T, H)."""
  hidden_dim: int = 32
  backbone_units: int = 64
  backbone_layers: int = 1
  mode: str = 'default'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, elapsed_BT, mask_BT):
    cell = CfCCell(self.hidden_dim, self.backbone_units, self.backbone_layers, self.mode,
                   self.dtype, self.param_dtype, name='cell')
    x0_BH = jnp.zeros((x_BTD.shape[0], self.hidden_dim), jnp.float32)
    return _scan(cell, x0_BH, x_BTD, elapsed_BT, mask_BT)


class Model(nn.Module):
  """Classifier of irregularly sampled sequences: (values (B, T, D), gaps (B, T), mask
  (B, T)) -> logits (B, K) float32, from the state after the last real step of an LTC, a
  CfC or an LSTM (which reads the elapsed time as one more input feature)."""
  cell: str = 'cfc'  # 'ltc' | 'cfc' | 'lstm'
  hidden_dim: int = 32
  num_classes: int = 2
  ode_unfolds: int = 6  # ltc: fused solver steps per input step
  backbone_units: int = 64  # cfc
  backbone_layers: int = 1  # cfc
  cfc_mode: str = 'default'  # cfc: 'default' | 'no_gate' | 'pure'
  time_scale: float = 1.0  # elapsed time = gaps * time_scale
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, values_BTD, gaps_BT, mask_BT=None, *, train: bool = False):
    del train  # no dropout
    b, t = gaps_BT.shape
    mask_BT = jnp.ones((b, t), bool) if mask_BT is None else jnp.asarray(mask_BT, bool)
    elapsed_BT = gaps_BT.astype(jnp.float32) * self.time_scale
    values_BTD = values_BTD.astype(jnp.float32)
    if self.cell == 'ltc':
      state_BH, _ = LTC(self.hidden_dim, self.ode_unfolds, self.param_dtype, name='ltc')(
          values_BTD, elapsed_BT, mask_BT)
    elif self.cell == 'cfc':
      state_BH, _ = CfC(self.hidden_dim, self.backbone_units, self.backbone_layers,
                        self.cfc_mode, self.dtype, self.param_dtype, name='cfc')(
          values_BTD, elapsed_BT, mask_BT)
    elif self.cell == 'lstm':
      x_BTD = jnp.concatenate([values_BTD, elapsed_BT[..., None]], -1)
      carry, _ = rnn.Recurrent('lstm', self.hidden_dim, dtype=self.dtype,
                               param_dtype=self.param_dtype, name='lstm')(x_BTD, mask_BT)
      state_BH = carry['h']
    else:
      raise ValueError(f"unknown cell {self.cell!r}; valid: 'ltc', 'cfc', 'lstm'")
    logits_BK = _dense(self.num_classes, 'head', self.hidden_dim, ('mlp', 'classes'),
                       self.dtype, self.param_dtype)(state_BH)
    return logits_BK.astype(jnp.float32)


TINY = dict(hidden_dim=8, ode_unfolds=3, backbone_units=8)
