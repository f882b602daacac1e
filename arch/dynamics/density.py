"""Density estimation of 2-D points by exact maximum likelihood: the objective that trains a
continuous normalizing flow (FFJORD, arch/dynamics/cnf.py) and, on the same data, a
RealNVP of affine couplings over the coordinates (Dinh, Sohl-Dickstein & Bengio 2017), the
discrete flow FFJORD compares itself with.

The loss is the negative log-likelihood in nats per point, -log p(x) averaged over the
batch: for the CNF with Hutchinson's trace estimator (one probe per point, drawn from the
step's rng; `trace='exact'` trains on the exact trace instead), for RealNVP exact. The eval
metric `nll` is the exact negative log-likelihood of each test point (the CNF's exact
Jacobian trace), so the two models' numbers are comparable; the CNF also reports its
solver's `steps` per solve and the fraction of `failed` solves (over `max_steps`).

RealNVP here is the vector form of the image flow's coupling (arch/generative/flow.py):
y = b x + (1 - b)(x exp(s(b x)) + t(b x)) with the mask b keeping every other coordinate,
alternating from one coupling to the next (in 2-D each coupling keeps one coordinate and
moves the other); s and t come from one MLP (ReLU) whose last layer is zero-initialised, so
the untrained flow is the identity, and log-scale = learned per-coordinate scale * tanh(.).

Samples (`train.sample`) are `points` (B, 2): the CNF integrates base draws z ~ N(0, I) from
t = T back to 0, RealNVP applies its inverse.

Batches hold `point` (B, 2) float32: the config's `density` (a feature of the toy2d
dataset, train/datasets/toy2d.py) picked by `preprocess`.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.dynamics import cnf
from arch.generative.flow import std_normal_logpdf
from arch.task import ConfigError, Task, parse_options, row_keys, unconditional_rows

DIM = 2  # the toy densities' dimension
DENSITIES = ('moons', 'eight_gaussians', 'checkerboard', 'pinwheel')  # toy2d's features
TRACES = ('hutchinson', 'exact')


# ---------------------------------------------------------------------------- RealNVP


class VectorCoupling(nn.Module):
  """RealNVP's affine coupling over the coordinates of (B, D) points, mask by parity."""
  parity: int = 0
  hidden: tuple = (64, 64)

  @nn.compact
  def __call__(self, x_BD, inverse: bool = False):
    d = x_BD.shape[-1]
    b_D = jnp.asarray((np.arange(d) + self.parity) % 2 == 0, x_BD.dtype)  # 1: kept
    h = x_BD * b_D
    for i, width in enumerate(self.hidden):
      h = nn.relu(nn.Dense(width, name=f'dense{i}')(h))
    out = nn.Dense(2 * d, kernel_init=nn.initializers.zeros, name='out')(h)
    scale = self.param('scale', nn.initializers.ones, (d,))
    log_s = scale * jnp.tanh(out[:, :d]) * (1 - b_D)
    t = out[:, d:] * (1 - b_D)
    if inverse:
      return (x_BD - t) * jnp.exp(-log_s), -log_s.sum(-1)
    return x_BD * jnp.exp(log_s) + t, log_s.sum(-1)


class RealNVP(nn.Module):
  """A stack of vector couplings with alternating masks: x (B, D) <-> z ~ N(0, I)."""
  num_couplings: int = 8
  hidden: tuple = (64, 64)

  def setup(self):
    self.couplings = [VectorCoupling(i % 2, tuple(self.hidden))
                      for i in range(self.num_couplings)]

  def forward(self, x_BD):
    logdet = jnp.zeros(x_BD.shape[:1])
    for layer in self.couplings:
      x_BD, ld = layer(x_BD)
      logdet = logdet + ld
    return x_BD, logdet

  def inverse(self, z_BD):
    for layer in reversed(self.couplings):
      z_BD = layer(z_BD, inverse=True)[0]
    return z_BD

  def __call__(self, x_BD):
    return self.forward(x_BD)


# ---------------------------------------------------------------------------- objective


@dataclasses.dataclass(frozen=True)
class Options:
  """The density task's task_kwargs."""
  density: str = 'moons'     # a toy2d feature: moons | eight_gaussians | checkerboard | pinwheel
  trace: str = 'hutchinson'  # the CNF's training trace: 'hutchinson' | 'exact'
  noise: str = 'rademacher'  # Hutchinson's probes: 'rademacher' | 'gaussian'


def make(config) -> Task:
  """`config.task = 'dynamics.density'`, `config.model_name = 'dynamics.cnf'` (FFJORD) or
  `'dynamics.density:RealNVP'`; task_kwargs: `Options`. Train metric `loss` (NLL, nats);
  eval `nll` per point (exact)."""
  opts = parse_options(Options, config)
  if opts.density not in DENSITIES:
    raise ConfigError(f'unknown task_kwargs.density {opts.density!r}; valid: '
                      f'{", ".join(DENSITIES)}')
  if opts.trace not in TRACES:
    raise ConfigError(f'unknown task_kwargs.trace {opts.trace!r}; valid: {", ".join(TRACES)}')
  if opts.noise not in cnf.NOISES:
    raise ConfigError(f'unknown task_kwargs.noise {opts.noise!r}; valid: '
                      f'{", ".join(cnf.NOISES)}')
  model = arch.model_from_config(config)
  if isinstance(model, cnf.CNF):
    try:
      cnf.check(model)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    if config.get('parallelism') == 'pmap' and model.adjoint == 'recursive':
      # Measured (jax 0.10.2, diffrax 0.7.2, equinox 0.13.8): the backward pass of the
      # checkpointed while loop fails its closure-conversion check inside pmap's shard_map.
      raise ConfigError("the CNF's adjoint='recursive' does not run under "
                        "parallelism='pmap'; use parallelism='jit' (the same numbers) or "
                        "model.adjoint='backsolve'")
  elif not isinstance(model, RealNVP):
    raise ConfigError(f'the density objective needs a flow over points; config.model_name '
                      f'is {config.model_name!r}; valid: dynamics.cnf, '
                      f'dynamics.density:RealNVP')
  continuous = isinstance(model, cnf.CNF)

  def preprocess(example):
    return {'point': np.asarray(example[opts.density], np.float32)}

  def init(rng, batch):
    if continuous:
      return model.init(rng, jnp.zeros(()), jnp.zeros((DIM,), jnp.float32))
    return model.init(rng, jnp.zeros((batch['point'].shape[0], DIM), jnp.float32),
                      method='forward')

  def realnvp_log_prob(variables, x_BD):
    z, logdet = model.apply(variables, x_BD, method='forward')
    return std_normal_logpdf(z) + logdet

  def loss(variables, batch, rng):
    x = batch['point']
    if not continuous:
      value = -realnvp_log_prob(variables, x).mean()
      return value, ({'loss': value}, {})
    e = None if opts.trace == 'exact' else cnf.probe(rng, x.shape, opts.noise)
    log_p, _, steps, ok = cnf.batch_log_prob(model, variables['params'], x, e)
    value = -log_p.mean()
    metrics = {'loss': value, 'steps': steps.mean(), 'failed': 1.0 - ok.mean()}
    return value, (metrics, {})

  def evaluate(variables, batch):
    x = batch['point']
    if not continuous:
      return {'nll': -realnvp_log_prob(variables, x)}
    log_p, _, steps, ok = cnf.batch_log_prob(model, variables['params'], x)
    return {'nll': -log_p, 'steps': steps.astype(jnp.float32),
            'failed': 1.0 - ok.astype(jnp.float32)}

  def sample(variables, batch, rng, *, row_ids, temperature=1.0, **unused):
    del batch, unused  # one unconditional sample per row
    z = jax.vmap(lambda k: jax.random.normal(k, (DIM,)))(row_keys(rng, row_ids))
    z = z * temperature
    if not continuous:
      return {'points': model.apply(variables, z, method='inverse')}
    return {'points': cnf.batch_flow(model, variables['params'], z, model.time_length,
                                     0.0)[0]}

  return Task(init=init, loss=loss, evaluate=evaluate, preprocess=preprocess,
              example_batch=lambda n: {'point': jax.ShapeDtypeStruct((n, DIM), jnp.float32)},
              sample=sample, prompt_batch=unconditional_rows)


Model = RealNVP  # 'dynamics.density' names the vector RealNVP; the CNF is 'dynamics.cnf'
TINY_REALNVP = dict(num_couplings=4, hidden=(8,))
