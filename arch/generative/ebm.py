"""Energy-based models of images, p(x) proportional to exp(-E(x)), trained by contrastive
divergence with Langevin MCMC and persistent chains (Hinton 2002; Tieleman 2008; the
recipe of Du & Mordatch 2019, "Implicit generation and generalization in energy-based
models", and Grathwohl et al. 2020, JEM) or by noise-contrastive estimation (Gutmann &
Hyvärinen 2010).

The energy network (`Model`): 3x3 convolutions with SiLU (smooth, so Langevin's input
gradients are smooth), strided to halve the resolution per width after the first, a sum
over positions and a linear map to one energy per image.

Langevin dynamics: x <- clip(x - step_size * dE/dx + noise * N(0, I), -1, 1) for
`langevin_steps` steps. With noise = sqrt(2 step_size) this is the unadjusted Langevin
algorithm at temperature 1; the papers decouple the two (a large step, small noise), and so
do the defaults here (JEM's step 1 and noise 0.01).

Contrastive divergence (`method='cd'`): loss = mean E(x_data) - mean E(x_model)
+ energy_reg * (mean E(x_data)^2 + mean E(x_model)^2), the model's samples x_model
treated as constants. They come from persistent chains: a buffer of `buffer_size` images
(the non-param collection 'chains', so it is loop state: checkpointed, restored, and seen
by the sampler). Each step continues the next B chains of the buffer (a cursor sweeps it),
each restarted from uniform noise with probability `reinit`, and writes them back. Under
parallelism='pmap' every replica continues its own slice of those rows and gathers the
others', so all replicas hold the same buffer.

NCE (`method='nce'`): the model's log-density is -E(x) - log Z with log Z a learned
scalar; a logistic classifier tells data from `nce_ratio` times as many draws of a noise
distribution q, with logit log p_model(x) - log(nce_ratio q(x)). q is a full-covariance
Gaussian fitted to the first (global) training batch the objective sees (shrunk towards the
identity by `nce_shrinkage` so it is well conditioned; the 'noise' collection, set once).

Samples (`sample`): Langevin from per-row starts, `sample_steps` steps (the sampler's
--steps): with `sample_init='chains'` (CD's default) row r continues buffer row
r mod buffer_size, as JEM samples; with 'q' (NCE's default) it starts from a draw of the
noise distribution; with 'noise' from uniform noise. Pixels map from [-1, 1] back to uint8.

Dimension key: B batch, N buffer rows, H W C image, D = H * W * C.
"""

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.generative import to_uint8, to_unit
from arch.images import labelled_images
from arch.task import PMAP_AXIS, ConfigError, Task, parse_options, row_keys, unconditional_rows

Dtype = Any
METHODS = ('cd', 'nce')


class Model(nn.Module):
  """Images (B, H, W, C) in [-1, 1] -> energies (B,)."""
  features: Sequence[int] = (32, 64, 128)  # the first at full resolution, then stride 2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    x = x_BHWC.astype(self.dtype)
    for i, f in enumerate(self.features):
      x = nn.silu(nn.Conv(f, (3, 3), strides=(1, 1) if i == 0 else (2, 2), dtype=self.dtype,
                          param_dtype=self.param_dtype, name=f'conv{i}')(x))
    energy = nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype,
                      name='energy')(x.sum((1, 2)))
    return energy[:, 0].astype(jnp.float32)


def langevin(energy_fn, x_BHWC, keys_B, steps: int, step_size: float, noise: float):
  """`steps` Langevin steps from x; row b's noise at step k from fold_in(keys_B[b], k)."""
  grad = jax.grad(lambda x: energy_fn(x).sum())

  def body(k, x):
    eps = jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, k), x.shape[1:]))(
        keys_B)
    return jnp.clip(x - step_size * grad(x) + noise * eps, -1.0, 1.0)

  return jax.lax.fori_loop(0, steps, body, x_BHWC)


def gaussian_logpdf(x_BD, mean_D, chol_DD):
  """log N(x; mean, L L^T) per row."""
  z = jax.scipy.linalg.solve_triangular(chol_DD, (x_BD - mean_D).T, lower=True).T
  d = x_BD.shape[-1]
  return (-0.5 * (z ** 2).sum(-1) - jnp.log(jnp.diag(chol_DD)).sum()
          - 0.5 * d * np.log(2 * np.pi))


@dataclasses.dataclass(frozen=True)
class Options:
  """The EBM's task_kwargs (the module docstring says what each does)."""
  input_size: tuple = (8, 8)  # (H, W)
  channels: int = 1
  method: str = 'cd'  # 'cd' | 'nce'
  langevin_steps: int = 20  # per training step (cd)
  step_size: float = 1.0  # Langevin's gradient step ...
  noise: float = 0.01  # ... and noise scale
  energy_reg: float = 1.0  # cd: weight of the squared energies
  buffer_size: int = 2048  # cd: persistent chains
  reinit: float = 0.05  # cd: a chain's chance to restart from noise each step
  data_noise: float = 0.005  # Gaussian noise added to data images, as the papers do
  nce_ratio: int = 1  # nce: noise draws per data image
  nce_shrinkage: float = 0.1  # nce: q's covariance shrunk towards the identity
  sample_steps: int = 100  # Langevin steps of `sample` (the sampler's --steps overrides)
  sample_init: Optional[str] = None  # 'chains' (cd) | 'q' (nce) | 'noise'; None: the method's


def make(config) -> Task:
  """`config.task = 'generative.ebm'`, `config.model_name = 'generative.ebm'` (the energy network);
  task_kwargs: `Options`. Train metrics: `loss`, cd: `e_data`, `e_model` (mean energies);
  nce: `accuracy`. Eval per test image: `energy`, and for nce its log-density bound
  `nll` (nats, with the learned log Z)."""
  opts = parse_options(Options, config)
  input_size = tuple(opts.input_size)
  channels = int(opts.channels)
  method = opts.method
  if method not in METHODS:
    raise ConfigError(f'unknown task_kwargs.method {method!r}; valid: {", ".join(METHODS)}')
  steps = int(opts.langevin_steps)
  step_size, noise = float(opts.step_size), float(opts.noise)
  energy_reg = float(opts.energy_reg)
  buffer_size = int(opts.buffer_size)
  reinit = float(opts.reinit)
  data_noise = float(opts.data_noise)
  nce_ratio = int(opts.nce_ratio)
  shrinkage = float(opts.nce_shrinkage)
  sample_steps = int(opts.sample_steps)
  sample_init = opts.sample_init
  if sample_init is None:
    sample_init = 'chains' if method == 'cd' else 'q'
  if sample_init not in ('chains', 'noise', 'q') or (
      sample_init != 'noise' and sample_init != {'cd': 'chains', 'nce': 'q'}[method]):
    raise ConfigError(f"task_kwargs.sample_init {sample_init!r}: 'noise', 'chains' "
                      f"(method='cd': its persistent chains) or 'q' (method='nce': draws of "
                      f"its noise distribution)")
  if method == 'cd' and config.batch_size > buffer_size:
    raise ConfigError(f'task_kwargs.buffer_size ({buffer_size}) must hold a batch '
                      f'({config.batch_size})')
  axis = PMAP_AXIS if config.get('parallelism') == 'pmap' else None
  net = arch.model_from_config(config)
  shape = (*input_size, channels)
  dims = int(np.prod(shape))

  def images(batch):
    image = batch['image']
    if image.shape[1:] != shape:
      raise ValueError(f'images are {image.shape[1:]}; the EBM is configured for {shape} '
                       f'(task_kwargs input_size, channels)')
    return to_unit(image)

  def uniform(rng, n):
    return jax.random.uniform(rng, (n, *shape), minval=-1.0, maxval=1.0)

  def init(rng, batch):
    variables = dict(net.init(rng, jnp.zeros((1, *shape))))
    if method == 'cd':
      variables['chains'] = {'buffer': uniform(jax.random.fold_in(rng, 1), buffer_size),
                             'cursor': jnp.zeros((), jnp.int32)}
    else:
      variables['params'] = {**variables['params'], 'log_z': jnp.zeros(())}
      variables['noise'] = {'mean': jnp.zeros((dims,)), 'chol': jnp.eye(dims),
                            'ready': jnp.zeros((), jnp.bool_)}
    return variables

  def energy(variables, x):
    params = {k: v for k, v in variables['params'].items() if k != 'log_z'}
    return net.apply({'params': params}, x)

  def cd_loss(variables, batch, rng):
    x = images(batch)
    b = x.shape[0]
    k_data, k_reinit, k_start, k_chain = jax.random.split(rng, 4)
    x = jnp.clip(x + data_noise * jax.random.normal(k_data, x.shape), -1.0, 1.0)
    buffer, cursor = variables['chains']['buffer'], variables['chains']['cursor']
    replica = jax.lax.axis_index(axis) if axis else 0
    rows = (cursor + replica * b + jnp.arange(b)) % buffer_size
    restart = jax.random.uniform(k_reinit, (b,)) < reinit
    start = jnp.where(restart[:, None, None, None], uniform(k_start, b), buffer[rows])
    frozen = jax.lax.stop_gradient(variables)
    neg = langevin(lambda v: energy(frozen, v), start, jax.random.split(k_chain, b), steps,
                   step_size, noise)
    neg = jax.lax.stop_gradient(neg)
    e_data, e_model = energy(variables, x), energy(variables, neg)
    loss = (e_data.mean() - e_model.mean()
            + energy_reg * ((e_data ** 2).mean() + (e_model ** 2).mean()))
    if axis:  # every replica writes all replicas' chains: the buffers stay identical
      neg = jax.lax.all_gather(neg, axis).reshape(-1, *shape)
      rows = jax.lax.all_gather(rows, axis).reshape(-1)
    chains = {'buffer': buffer.at[rows].set(neg),
              'cursor': (cursor + neg.shape[0]) % buffer_size}
    return loss, ({'loss': loss, 'e_data': e_data.mean(), 'e_model': e_model.mean()},
                  {'chains': chains})

  def fit_noise(variables, x_BD):
    """The noise collection, fitted to x the first time (then left as it is); under pmap to
    all replicas' rows (one replica's few rows, one under a batch of 8 on 8 devices, give no
    covariance), so every replica fits the same q as jit does on the global batch."""
    if axis:
      x_BD = jax.lax.all_gather(x_BD, axis).reshape(-1, dims)
    mean = x_BD.mean(0)
    cov = jnp.cov(x_BD, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * jnp.eye(dims) * jnp.trace(cov) / dims
    fitted = {'mean': mean, 'chol': jnp.linalg.cholesky(cov), 'ready': jnp.ones((), jnp.bool_)}
    old = variables['noise']
    return jax.tree.map(lambda f, o: jnp.where(old['ready'], o, f), fitted, old)

  def log_density(variables, x):
    return -energy(variables, x) - variables['params']['log_z']

  def nce_loss(variables, batch, rng):
    x = images(batch)
    b = x.shape[0]
    k_data, k_noise = jax.random.split(rng)
    x = jnp.clip(x + data_noise * jax.random.normal(k_data, x.shape), -1.0, 1.0)
    q = jax.lax.stop_gradient(fit_noise(variables, x.reshape(b, dims)))
    eps = jax.random.normal(k_noise, (b * nce_ratio, dims))
    y_BD = q['mean'] + eps @ q['chol'].T
    logit = lambda v: (log_density(variables, v.reshape(-1, *shape))
                       - gaussian_logpdf(v, q['mean'], q['chol']) - np.log(nce_ratio))
    l_data, l_noise = logit(x.reshape(b, dims)), logit(y_BD)
    loss = (optax.sigmoid_binary_cross_entropy(l_data, 1.0).mean()
            + nce_ratio * optax.sigmoid_binary_cross_entropy(l_noise, 0.0).mean())
    accuracy = ((l_data > 0).mean() + nce_ratio * (l_noise < 0).mean()) / (1 + nce_ratio)
    return loss, ({'loss': loss, 'accuracy': accuracy}, {'noise': q})

  def evaluate(variables, batch):
    x = images(batch)
    out = {'energy': energy(variables, x)}
    if method == 'nce':
      out['nll'] = -log_density(variables, x)
    return out

  def sample(variables, batch, rng, *, row_ids, steps: int = 0, temperature: float = 1.0,
             **unused):
    """{'images': (B, H, W, C) uint8}: `steps` (default task_kwargs.sample_steps)
    Langevin steps per row, its noise scaled by `temperature`."""
    del batch, unused
    keys = jax.vmap(jax.random.split)(row_keys(rng, row_ids))  # (B, 2): start, chain
    if sample_init == 'chains':
      start = variables['chains']['buffer'][row_ids % buffer_size]
    elif sample_init == 'q':
      q = variables['noise']
      start = jax.vmap(lambda k: q['mean'] + q['chol'] @ jax.random.normal(k, (dims,)))(
          keys[:, 0]).reshape(-1, *shape)
      start = jnp.clip(start, -1.0, 1.0)
    else:
      start = jax.vmap(lambda k: uniform(k, 1)[0])(keys[:, 0])
    x = langevin(lambda v: energy(variables, v), start, keys[:, 1], steps or sample_steps,
                 step_size, noise * temperature)
    return {'images': to_uint8(x)}

  return Task(init=init, loss=cd_loss if method == 'cd' else nce_loss, evaluate=evaluate,
              example_batch=lambda n: labelled_images(n, input_size, channels),
              sample=sample, prompt_batch=unconditional_rows)
