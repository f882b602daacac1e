"""Irregularly sampled trajectories: fit the observed window of each series, then
interpolate it and extrapolate past it (the latent-ODE experiment of Chen et al. 2018).

Config keys read: `model_name` and `model` (a latent-variable sequence model such as
arch/dynamics/ode.py's `Model`, called as `model(times, values, mask, query, query_mask,
eps) -> (prediction at the query times, (mean, log_std) of q(z0), solver steps)`, with a
`latent` field), and `task_kwargs`, the fields of `Options`. Batches hold `times` (B, N),
`values` (B, N, D), `mask` (B, N) (observed slots; padding is False), and for evaluation
`extrap_times` (B, M) and `extrap_values` (B, M, D), a held-out segment after the window.

Training maximises the ELBO with a Gaussian likelihood of fixed `obs_std`: the loss is
-ELBO per trajectory, sum over observed values of -log N(x; x_hat, obs_std^2) plus
KL(q(z0) || N(0, I)), with z0 = mean + std * eps sampled once per trajectory (eps from the
step's key over the global batch, so the loss does not depend on how it is sharded).
Evaluation decodes from z0 = mean at the observed times and the held-out times and reports,
as means over trajectories: `interp_mse` (observed times, against the noisy observations),
`extrap_mse` (the held-out segment), `loss` (-ELBO with z0 = mean), `kl`, `solver_steps`
(steps of every solve for a trajectory), and two model-free references for the held-out
segment: `extrap_mse_last` (hold the last observation) and `extrap_mse_linear` (continue the
line through the last two observations).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

import arch
from arch.task import ConfigError, Task, parse_options


@dataclasses.dataclass(frozen=True)
class Options:
  """The trajectory task's task_kwargs."""
  num_obs: int = 0        # N: observation slots per example
  num_extrap: int = 0     # M: held-out times per example
  data_dim: int = 2       # D
  obs_std: float = 0.1    # the likelihood's fixed noise scale


def last_two(times_BN, values_BND, mask_BN):
  """(t, x) of the last and the second-to-last observation of each example, ((B,), (B, D))
  each (the last one twice when there is only one)."""
  index_N = jnp.arange(mask_BN.shape[-1])
  last_B = jnp.max(jnp.where(mask_BN, index_N, 0), -1)
  prev_B = jnp.max(jnp.where(mask_BN & (index_N < last_B[:, None]), index_N, -1), -1)
  prev_B = jnp.where(prev_B < 0, last_B, prev_B)
  take = lambda a, i: jnp.take_along_axis(a, i.reshape((-1,) + (1,) * (a.ndim - 1)), 1)[:, 0]
  return ((take(times_BN, last_B), take(values_BND, last_B)),
          (take(times_BN, prev_B), take(values_BND, prev_B)))


def make(config) -> Task:
  opts = parse_options(Options, config)
  if opts.num_obs < 1 or opts.num_extrap < 0 or opts.data_dim < 1:
    raise ConfigError(f'task_kwargs.num_obs={opts.num_obs}, num_extrap={opts.num_extrap}, '
                      f'data_dim={opts.data_dim}: set them to the dataset\'s shapes')
  if opts.obs_std <= 0:
    raise ConfigError(f'task_kwargs.obs_std={opts.obs_std} must be positive')
  model = arch.model_from_config(config, data_dim=opts.data_dim)
  latent = model.latent
  log_norm = math.log(opts.obs_std) + 0.5 * math.log(2 * math.pi)

  def terms(pred, mean, logstd, values, mask):
    """Per example (B,): -log p(x | z0) and the MSE over the observed values, KL(q(z0) ||
    p(z0))."""
    m = mask.astype(jnp.float32)
    squared = (((pred - values) ** 2).sum(-1) * m).sum(-1)
    nll = 0.5 * squared / opts.obs_std ** 2 + m.sum(-1) * opts.data_dim * log_norm
    kl = 0.5 * jnp.sum(mean ** 2 + jnp.exp(2 * logstd) - 1 - 2 * logstd, -1)
    return nll, squared / (jnp.maximum(m.sum(-1), 1.0) * opts.data_dim), kl

  def loss(variables, batch, rng):
    times, values, mask = batch['times'], batch['values'], batch['mask']
    eps = jax.random.normal(rng, (times.shape[0], latent), jnp.float32)
    pred, (mean, logstd), steps = model.apply(variables, times, values, mask, times, mask, eps)
    nll, mse, kl = terms(pred, mean, logstd, values, mask)
    value = (nll + kl).mean()
    return value, ({'loss': value, 'kl': kl.mean(), 'mse': mse.mean(),
                    'solver_steps': steps.mean().astype(jnp.float32)}, {})

  def evaluate(variables, batch):
    """One solve per series to its observed and held-out times, from z0 = mean."""
    times, values, mask = batch['times'], batch['values'], batch['mask']
    n = times.shape[1]
    ext_t, ext_x = batch['extrap_times'], batch['extrap_values']
    query = jnp.concatenate([times, ext_t], 1)
    query_mask = jnp.concatenate([mask, jnp.ones(ext_t.shape, bool)], 1)
    pred, (mean, logstd), steps = model.apply(variables, times, values, mask, query, query_mask)
    nll, interp, kl = terms(pred[:, :n], mean, logstd, values, mask)
    out = {'loss': nll + kl, 'kl': kl, 'interp_mse': interp,
           'solver_steps': steps.astype(jnp.float32)}
    if opts.num_extrap:
      mse = lambda p: ((p - ext_x) ** 2).mean((-1, -2))
      (t1, x1), (t0, x0) = last_two(times, values, mask)
      velocity = (x1 - x0) / jnp.maximum(t1 - t0, 1e-6)[:, None]
      out.update(extrap_mse=mse(pred[:, n:]), extrap_mse_last=mse(x1[:, None]),
                 extrap_mse_linear=mse(x1[:, None] + velocity[:, None]
                                       * (ext_t - t1[:, None])[..., None]))
    return out

  def example_batch(batch_size):
    f32 = lambda *s: jax.ShapeDtypeStruct((batch_size,) + s, jnp.float32)
    n, m, d = opts.num_obs, opts.num_extrap, opts.data_dim
    return {'times': f32(n), 'values': f32(n, d),
            'mask': jax.ShapeDtypeStruct((batch_size, n), jnp.bool_),
            'extrap_times': f32(m), 'extrap_values': f32(m, d)}

  def init(rng, batch):
    return model.init({'params': rng}, batch['times'], batch['values'], batch['mask'],
                      batch['times'], batch['mask'])

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch)
