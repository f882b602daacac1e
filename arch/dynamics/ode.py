"""Neural ODEs (Chen, Rubanova, Bettencourt & Duvenaud 2018, "Neural Ordinary Differential
Equations") and latent ODEs for irregularly sampled series (Rubanova, Chen & Duvenaud 2019,
"Latent ODEs for Irregularly-Sampled Time Series"), solved with diffrax.

A Neural ODE defines a state by dz/dt = f(z, t; theta), f an MLP (`VectorField`), and
computes z at any times with an adaptive solver (`odeint`: Tsit5 or Dopri5, step sizes from
a PID controller on the local error estimate with tolerances rtol / atol, at most max_steps
steps). The network is applied functionally: its parameters are an explicit pytree handed
to diffrax through `args`, so the solver and its adjoint see them as inputs (a bound flax
submodule called inside the solve would leak tracers). Two ways to differentiate:

  gradient='direct'   discretise-then-optimise: reverse mode through the solver's own steps
                      (diffrax.RecursiveCheckpointAdjoint, checkpointed); the exact
                      gradient of the computed solution.
  gradient='adjoint'  optimise-then-discretise, the paper's continuous adjoint
                      (diffrax.BacksolveAdjoint): z, a = dL/dz and dL/dtheta solved
                      backwards in time as one augmented ODE; memory independent of the
                      number of steps, the gradient accurate to the solver's tolerance.

The latent ODE (`Model`, the paper's section 5.1): a recognition network reads the
observations (t_i, x_i), i = 1..K, backwards in time and gives q(z0) = N(mu, sigma^2) at
t = 0; z0 (a sample in training, mu in evaluation) is solved forward to every query time
and a decoder MLP maps z(t) to the data. The objective (arch/dynamics/trajectory.py) is the
ELBO, sum_i log N(x_i; dec(z(t_i)), obs_std^2) - KL(q(z0) || N(0, I)). The recognition
network is a GRU fed (x_i, t_i, gap to the next observation) (`encoder='rnn'`, as the Neural
ODE paper) or an ODE-RNN (`encoder='odernn'`, Rubanova et al.): between observations its
hidden state follows a second Neural ODE backwards in time, and the GRU updates it at each
observation; after the first observation it is carried back to t = 0. `dynamics='rnn'`
swaps the latent ODE for the papers' baseline: a GRU started from z0 whose input is the gap
between consecutive query times (a discrete recurrence that sees time only as an input).

Padding (slots with `mask` False) is skipped by every recurrent step and left out of the
loss; a padded slot's time is replaced by the last observed time before it, so whatever a
padded slot holds changes nothing.

Two ways to solve a batch: each series its own solve to its own times (`grid_step=0`, a
vmap of adaptive solves), or, where every time lies on a shared grid (the spirals' dense
grid), the whole batch as one ODE system of B x L states saved at the grid points and read
by index (`grid_step > 0`). The second takes the steps of the batch's hardest series, but
the continuous adjoint then solves backwards through G grid segments once for the batch,
with one parameter adjoint, instead of N segments per series, each with its own parameter
adjoint: on the spirals' batch of 64 a loss-and-gradient evaluation took 8-9 s per series
and 60-170 ms with the grid (discretise-then-optimise: 16-33 ms and 8-23 ms). Measured
numbers: configs/ode_spiral.py.

Dimension key:
  B: batch   N: observation slots   M: query times   L: latent   H: hidden   D: data
"""

import functools

import diffrax
import flax.linen as nn
import jax
import jax.numpy as jnp

SOLVERS = {'tsit5': diffrax.Tsit5, 'dopri5': diffrax.Dopri5}
GRADIENTS = ('direct', 'adjoint')
ENCODERS = ('rnn', 'odernn')
DYNAMICS = ('ode', 'rnn')


def odeint(field, params, z0, ts, *, t0=0.0, solver='tsit5', rtol=1e-3, atol=1e-3,
           max_steps=256, gradient='direct'):
  """(z(ts) (M, ...), accepted + rejected steps) of dz/dt = field(params, z, t), z(t0) = z0,
  for non-decreasing ts >= t0: one adaptive solve, differentiated by `gradient`."""
  if solver not in SOLVERS:
    raise ValueError(f'unknown solver {solver!r}; valid: {", ".join(SOLVERS)}')
  if gradient not in GRADIENTS:
    raise ValueError(f'unknown gradient {gradient!r}; valid: {", ".join(GRADIENTS)}')
  controller = diffrax.PIDController(rtol=rtol, atol=atol)
  if gradient == 'direct':
    adjoint = diffrax.RecursiveCheckpointAdjoint()
  else:  # the backward augmented solve uses the same solver and tolerances
    adjoint = diffrax.BacksolveAdjoint(solver=SOLVERS[solver](), stepsize_controller=controller)
  solution = diffrax.diffeqsolve(
      diffrax.ODETerm(lambda t, z, p: field(p, z, t)), SOLVERS[solver](), t0, ts[-1], None,
      z0, args=params, saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller,
      adjoint=adjoint, max_steps=max_steps)
  return solution.ys, solution.stats['num_steps']


def observed_times(times_BN, mask_BN):
  """Each padded slot takes the last observed time before it (0 before any), so the times
  never decrease and a padded slot's own time is never read."""
  seen_BN = jax.lax.cummax(jnp.where(mask_BN, times_BN, -jnp.inf), axis=times_BN.ndim - 1)
  return jnp.where(jnp.isfinite(seen_BN), seen_BN, 0.0)


class VectorField(nn.Module):
  """f(z, t): an MLP with ELU hidden layers (smooth, as adaptive solvers want)."""
  hidden: int = 64
  depth: int = 2
  time_input: bool = False  # False: autonomous dynamics dz/dt = f(z)

  @nn.compact
  def __call__(self, z_L, t):
    h = z_L
    if self.time_input:
      h = jnp.concatenate([h, jnp.broadcast_to(t, z_L.shape[:-1] + (1,))], -1)
    for i in range(self.depth):
      h = nn.elu(nn.Dense(self.hidden, name=f'hidden_{i}')(h))
    return nn.Dense(z_L.shape[-1], name='out')(h)


def _functional(parent, name, module, *example):
  """(params, apply) of `module` as a pure function: its parameters are the explicit pytree
  `parent`'s param `name`, and apply(params, *inputs) closes over no bound module."""
  params = parent.param(name, lambda rng: module.init(rng, *example)['params'])
  return params, lambda p, *inputs: module.apply({'params': p}, *inputs)


class Model(nn.Module):
  """Latent ODE: recognition RNN / ODE-RNN -> q(z0) -> Neural ODE -> decoder MLP."""
  data_dim: int = 2
  latent: int = 4
  hidden: int = 64           # the vector fields' hidden width
  depth: int = 2             # the vector fields' hidden layers
  rnn_hidden: int = 32       # the recognition GRU's state (and the baseline GRU's)
  decoder_hidden: int = 32
  encoder: str = 'rnn'       # or 'odernn'
  dynamics: str = 'ode'      # or 'rnn': a GRU over the query-time gaps (the baseline)
  solver: str = 'tsit5'      # or 'dopri5'
  gradient: str = 'direct'   # or 'adjoint'
  rtol: float = 1e-3
  atol: float = 1e-3
  max_steps: int = 256       # per solve; more raises an error (the loop keeps the checkpoint)
  # > 0: the batch's latent ODE is one system (B x L) solved once, saved at t = k grid_step,
  # k < grid_size, and every query time is read at its nearest grid point (query times on a
  # shared grid, as the spirals'); 0: each series is its own solve to its own times.
  grid_step: float = 0.0
  grid_size: int = 0

  def _ode(self, field, params, z0, ts):
    return odeint(field, params, z0, ts, solver=self.solver, rtol=self.rtol, atol=self.atol,
                  max_steps=self.max_steps, gradient=self.gradient)

  @nn.compact
  def __call__(self, times_BN, values_BND, mask_BN, query_BM, query_mask_BM, eps_BL=None):
    """-> (prediction (B, M, D) at the query times, q(z0)'s mean and log std (B, L), solver
    steps per example (B,)). eps_BL: N(0, I) noise for z0 = mean + std * eps (None: z0 =
    mean)."""
    if self.encoder not in ENCODERS or self.dynamics not in DYNAMICS:
      raise ValueError(f'encoder={self.encoder!r}, dynamics={self.dynamics!r}; valid: '
                       f'{ENCODERS}, {DYNAMICS}')
    times_BN = observed_times(times_BN, mask_BN)
    query_BM = observed_times(query_BM, query_mask_BM)
    h0_H = jnp.zeros((self.rnn_hidden,), jnp.float32)
    gru = nn.GRUCell(self.rnn_hidden)
    enc_p, enc_gru = _functional(self, 'encoder_gru', gru, h0_H,
                                 jnp.zeros((self.data_dim + 2,), jnp.float32))
    if self.encoder == 'odernn':
      back_p, back_f = _functional(self, 'encoder_field', VectorField(self.hidden, self.depth),
                                   h0_H, 0.0)

    def backwards(h_H, gap):
      """The ODE-RNN's state carried `gap` back in time: s in [0, 1], dh/ds = -gap f(h)."""
      field = lambda p, h, s: -p[1] * back_f(p[0], h, s)
      hs, steps = self._ode(field, (back_p, gap), h_H, jnp.ones((1,), jnp.float32))
      return hs[0], steps

    def encode(x_ND, t_N, m_N):
      gap_N = jnp.concatenate([t_N[1:] - t_N[:-1], jnp.zeros((1,), t_N.dtype)])

      def step(carry, inputs):
        h_H, steps = carry
        x_D, t, gap, m = inputs
        if self.encoder == 'odernn':
          h_H, n = backwards(h_H, gap)
          steps = steps + jnp.where(m, n, 0)
        new_H, _ = enc_gru(enc_p, h_H, jnp.concatenate([x_D, t[None], gap[None]]))
        return (jnp.where(m, new_H, carry[0]), steps), None

      (h_H, steps), _ = jax.lax.scan(step, (h0_H, jnp.zeros((), jnp.int32)),
                                     (x_ND, t_N, gap_N, m_N), reverse=True)
      if self.encoder == 'odernn':  # from the first observation back to t = 0
        first = jnp.where(m_N.any(), jnp.min(jnp.where(m_N, t_N, jnp.inf)), 0.0)
        h_H, n = backwards(h_H, first)
        steps = steps + n
      return h_H, steps

    h_BH, steps_B = jax.vmap(encode)(values_BND.astype(jnp.float32), times_BN, mask_BN)
    stats_BL = nn.Dense(2 * self.latent, name='posterior')(h_BH)
    mean_BL, logstd_BL = jnp.split(stats_BL, 2, -1)
    z0_BL = mean_BL if eps_BL is None else mean_BL + jnp.exp(logstd_BL) * eps_BL

    if self.dynamics == 'ode':
      field_p, field_f = _functional(self, 'field', VectorField(self.hidden, self.depth),
                                     jnp.zeros((self.latent,), jnp.float32), 0.0)
      if self.grid_step > 0:  # one solve, stopped at the batch's last query time
        grid_K = jnp.minimum(self.grid_step * jnp.arange(self.grid_size, dtype=jnp.float32),
                             jnp.max(query_BM))
        z_KBL, dec_steps = self._ode(field_f, field_p, z0_BL, grid_K)
        index_BM = jnp.clip(jnp.round(query_BM / self.grid_step).astype(jnp.int32), 0,
                            self.grid_size - 1)
        z_BML = z_KBL[index_BM, jnp.arange(z0_BL.shape[0])[:, None]]
        steps_B = steps_B + dec_steps
      else:
        z_BML, dec_steps_B = jax.vmap(functools.partial(self._ode, field_f, field_p))(
            z0_BL, query_BM)
        steps_B = steps_B + dec_steps_B
    else:
      dec_p, dec_gru = _functional(self, 'decoder_gru', gru, h0_H,
                                   jnp.zeros((1,), jnp.float32))
      g0_BH = jnp.tanh(nn.Dense(self.rnn_hidden, name='decoder_init')(z0_BL))

      def unroll(g_H, q_M, m_M):
        gap_M = q_M - jnp.concatenate([jnp.zeros((1,), q_M.dtype), q_M[:-1]])

        def step(g_H, inputs):
          gap, m = inputs
          new_H, _ = dec_gru(dec_p, g_H, gap[None])
          g_H = jnp.where(m, new_H, g_H)
          return g_H, g_H

        return jax.lax.scan(step, g_H, (gap_M, m_M))[1]

      z_BML = jax.vmap(unroll)(g0_BH, query_BM, query_mask_BM)
    h = nn.relu(nn.Dense(self.decoder_hidden, name='decoder_hidden')(z_BML))
    return nn.Dense(self.data_dim, name='decoder_out')(h), (mean_BL, logstd_BL), steps_B
