"""Continuous normalizing flow: FFJORD (Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud
2019, "FFJORD: Free-form continuous dynamics for scalable reversible generative models"),
on the Neural ODE's instantaneous change of variables (Chen et al. 2018).

A time-conditioned network f(t, z) moves a data point x = z(0) to z(T) along
dz/dt = f(t, z); the log-density changes as d log p(z(t)) / dt = -tr(df/dz), so

  log p(x) = log N(z(T); 0, I) + int_0^T tr(df/dz(t, z(t))) dt.

Both are solved together as one augmented ODE over [z, delta] with delta(0) = 0 and
d delta / dt = -tr(df/dz): log p(x) = log N(z(T)) - delta(T). Sampling draws z ~ N(0, I)
and integrates dz/dt = f from T back to 0.

The trace: training uses Hutchinson's estimator tr(A) = E[e^T A e] with one probe e per
example (Rademacher or standard Gaussian), drawn once per solve and fixed along it, so the
whole integral is estimated without bias; e^T (df/dz) e is one Jacobian-vector product
(forward mode, one extra network pass). Evaluation computes the exact trace from the full
Jacobian (`jax.jacfwd`: D tangents, cheap for 2-D data), which makes the test
log-likelihood exact up to the solver's tolerance.

The network is FFJORD's concat-squash MLP: each layer is
(W x + b) * sigmoid(W_g t + b_g) + w_b t, a linear map of the state gated and shifted by
the time, with tanh between layers (FFJORD's toy configuration is 64-64-64).

The solver is diffrax's adaptive Tsit5 (or Dopri5) with a PID step-size controller, its
steps bounded by `max_steps`; the network's parameters are the solve's `args` and the module
is applied functionally inside the vector field (a bound module inside `diffeqsolve` leaks
tracers). Each example is solved on its own (the solve is vmapped), so its step sizes,
error control, and hence its log-likelihood do not depend on the rest of the batch or on how
the batch is sharded over devices. Gradients are discretise-then-optimise (backpropagation
through the solver, diffrax's RecursiveCheckpointAdjoint) or the continuous adjoint
(BacksolveAdjoint: the adjoint ODE solved backwards, as in the papers).

The objective and the comparison with RealNVP on the same 2-D densities are in
arch/dynamics/density.py. Measured (configs/cnf_2d.py, 2026-12-06, 2-core CPU): on 8
Gaussians the 64-64-64 CNF reached an exact test NLL of 2.862 nats in 2,000 steps (the true
density's: 2.832) against RealNVP's 3.037, at about 9 solver steps per solve; on the
checkerboard (entropy 3.466) 3.843 against RealNVP's 3.728, neither converged. Under
`parallelism='pmap'` only the 'backsolve' adjoint runs: the backward pass of diffrax's
checkpointed while loop fails equinox's closure-conversion check inside pmap's shard_map
(jax 0.10.2, diffrax 0.7.2, equinox 0.13.8); 'jit' runs both.

Dimension key: B batch, D data dimensions (2), H hidden width.
"""

from typing import Optional

import diffrax
import flax.linen as nn
import jax
import jax.numpy as jnp

SOLVERS = {'tsit5': diffrax.Tsit5, 'dopri5': diffrax.Dopri5}
ADJOINTS = ('recursive', 'backsolve')
NOISES = ('rademacher', 'gaussian')
ACTIVATIONS = {'tanh': jnp.tanh, 'softplus': nn.softplus, 'elu': nn.elu}


class ConcatSquash(nn.Module):
  """FFJORD's concat-squash layer: (W x + b) * sigmoid(W_g t + b_g) + w_b t."""
  features: int

  @nn.compact
  def __call__(self, t, x_D):
    t_1 = jnp.reshape(t, (1,)).astype(x_D.dtype)
    gate = nn.sigmoid(nn.Dense(self.features, name='gate')(t_1))
    shift = nn.Dense(self.features, use_bias=False, name='shift')(t_1)
    return nn.Dense(self.features, name='linear')(x_D) * gate + shift


class CNF(nn.Module):
  """FFJORD's vector field f(t, z) for one example (D,) and how its ODE is solved."""
  hidden: tuple = (64, 64, 64)
  activation: str = 'tanh'  # or 'softplus', 'elu' (smooth: the solver needs it)
  time_length: float = 1.0  # T: data at t = 0, the N(0, I) base at t = T
  solver: str = 'tsit5'     # or 'dopri5'
  rtol: float = 1e-5
  atol: float = 1e-5
  max_steps: int = 1000     # per solve; a solve that needs more is reported as failed
  adjoint: str = 'recursive'  # gradients: 'recursive' (through the solver) | 'backsolve'

  @nn.compact
  def __call__(self, t, z_D):
    act = ACTIVATIONS[self.activation]
    h = z_D
    for i, width in enumerate(self.hidden):
      h = act(ConcatSquash(width, name=f'layer{i}')(t, h))
    return ConcatSquash(z_D.shape[-1], name=f'layer{len(self.hidden)}')(t, h)


Model = CNF  # 'dynamics.cnf'


def check(model: CNF):
  """Raises ValueError naming the valid choices for a bad solver, adjoint or activation."""
  for name, valid in (('solver', SOLVERS), ('adjoint', ADJOINTS),
                      ('activation', ACTIVATIONS)):
    if getattr(model, name) not in valid:
      raise ValueError(f'CNF.{name} {getattr(model, name)!r}; valid: {", ".join(valid)}')
  if not model.time_length > 0 or model.max_steps < 1:
    raise ValueError(f'CNF needs time_length > 0 and max_steps >= 1, got '
                     f'{model.time_length} and {model.max_steps}')


# ---------------------------------------------------------------------------- traces


def exact_trace(fn, z_D):
  """(fn(z), tr(d fn / dz)) from the full Jacobian (D forward-mode tangents)."""
  return fn(z_D), jnp.trace(jax.jacfwd(fn)(z_D))


def hutchinson_trace(fn, z_D, e_D):
  """(fn(z), e^T (d fn / dz) e): Hutchinson's unbiased estimate of the trace for a probe e
  with E[e e^T] = I, from one Jacobian-vector product."""
  f, jvp = jax.jvp(fn, (z_D,), (e_D,))
  return f, jnp.vdot(e_D, jvp)


def probe(rng, shape, noise: str = 'rademacher'):
  """Hutchinson probes: +-1 with equal odds, or standard normal."""
  if noise == 'rademacher':
    return jax.random.rademacher(rng, shape, jnp.float32)
  if noise == 'gaussian':
    return jax.random.normal(rng, shape)
  raise ValueError(f'unknown Hutchinson noise {noise!r}; valid: {", ".join(NOISES)}')


# ---------------------------------------------------------------------------- solves


def _solve(model: CNF, field, y0, t0, t1, args):
  """One example's adaptive solve of dy/dt = field(t, y, args) from t0 to t1:
  (y(t1), number of steps, success)."""
  adjoint = (diffrax.BacksolveAdjoint() if model.adjoint == 'backsolve'
             else diffrax.RecursiveCheckpointAdjoint())
  sol = diffrax.diffeqsolve(
      diffrax.ODETerm(field), SOLVERS[model.solver](), t0, t1, None, y0, args=args,
      stepsize_controller=diffrax.PIDController(rtol=model.rtol, atol=model.atol),
      adjoint=adjoint, max_steps=model.max_steps, throw=False)
  y1 = jax.tree.map(lambda y: y[-1], sol.ys)
  return y1, sol.stats['num_steps'], sol.result == diffrax.RESULTS.successful


def std_normal_logpdf(z_D):
  return -0.5 * jnp.sum(z_D ** 2 + jnp.log(2 * jnp.pi), axis=-1)


def log_prob(model: CNF, params, x_D, e_D: Optional[jax.Array] = None):
  """log p(x) of one example (D,): the exact trace, or Hutchinson's with probe e_D.
  Returns (log p(x), z(T), solver steps, success)."""

  def field(t, y, args):
    params, e = args
    fn = lambda z: model.apply({'params': params}, t, z)
    f, tr = exact_trace(fn, y[0]) if e is None else hutchinson_trace(fn, y[0], e)
    return f, -tr

  y0 = (x_D, jnp.zeros((), x_D.dtype))
  (z, delta), steps, ok = _solve(model, field, y0, 0.0, model.time_length, (params, e_D))
  return std_normal_logpdf(z) - delta, z, steps, ok


def flow(model: CNF, params, z_D, t0: float, t1: float):
  """z(t1) from z(t0) = z_D along dz/dt = f(t, z), without the density: (z(t1), steps,
  success). Sampling is flow(model, params, base point, T, 0)."""

  def field(t, z, params):
    return model.apply({'params': params}, t, z)

  return _solve(model, field, z_D, t0, t1, params)


def batch_log_prob(model: CNF, params, x_BD, e_BD=None):
  """`log_prob` of every row (each its own solve): ((B,), (B, D), (B,), (B,))."""
  if e_BD is None:
    return jax.vmap(lambda x: log_prob(model, params, x))(x_BD)
  return jax.vmap(lambda x, e: log_prob(model, params, x, e))(x_BD, e_BD)


def batch_flow(model: CNF, params, z_BD, t0: float, t1: float):
  return jax.vmap(lambda z: flow(model, params, z, t0, t1))(z_BD)


TINY = dict(hidden=(8, 8), rtol=1e-4, atol=1e-4, max_steps=200)
