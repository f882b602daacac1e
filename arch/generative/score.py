"""Score-based generative models through SDEs (Song et al. 2021, "Score-based generative
modeling through stochastic differential equations"; NCSN: Song & Ermon 2019): denoising
score matching over a continuum of noise levels and the predictor-corrector sampler.

SDEs on t in [0, 1], x(0) the data in [-1, 1]:
- 've' (variance exploding, NCSN's continuous limit): dx = sqrt(d sigma^2 / dt) dw with
  sigma(t) = sigma_min (sigma_max / sigma_min)^t; x(t) | x(0) = N(x(0), sigma(t)^2 - sigma(0)^2)
  (sigma(t)^2 as the variance, as the paper's code does); prior N(0, sigma_max^2 I).
- 'vp' (variance preserving, DDPM's continuous limit): dx = -beta(t) x / 2 dt +
  sqrt(beta(t)) dw with beta(t) = beta_min + t (beta_max - beta_min); x(t) | x(0) =
  N(m(t) x(0), 1 - m(t)^2), m(t) = exp(-t^2 (beta_max - beta_min) / 4 - t beta_min / 2);
  prior N(0, I).

The score network is any denoiser of arch/generative/diffusion.py's interface (the diffusion
U-Net), called with the timestep 999 t (the U-Net's embedding range) and no label; its
output n(x, t) is the noise estimate, the score s(x, t) = -n(x, t) / std(t). Training
minimises E ||std(t) s(x(t), t) + z||^2 = E ||n - z||^2 with t ~ U[eps, 1] (denoising score
matching with the likelihood-agnostic weighting lambda(t) = std(t)^2).

The predictor-corrector sampler (the paper's Algorithm 1 for VE, 3 for VP) from the prior at
t = 1 down to t = eps over N steps: the predictor is the reverse-diffusion (Euler-Maruyama)
step of the reverse SDE dx = [f - g^2 s] dt + g dw; each of `corrector_steps` corrector
steps is Langevin MCMC at the new time with the step size 2 alpha (r ||z|| / ||s||)^2 set by
the signal-to-noise ratio r = `snr` (alpha = 1 for VE, 1 - beta(t) / N for VP). The norms
are per sample (the paper's code averages them over the batch, which would make a sample
depend on its batch). The last step returns the predictor's mean (no noise). Each row's
noise comes from fold_in(its row key, step).

Dimension key: B batch, H W C image, N sampler steps.
"""

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

import arch
from arch.generative import image_keys, to_uint8, to_unit
from arch.images import labelled_images
from arch.task import ConfigError, Task, parse_options, row_keys, unconditional_rows

SDES = ('ve', 'vp')


class SDE(NamedTuple):
  """An SDE's pieces as functions of t (B,) (and x): drift f(x, t), diffusion g(t), the
  perturbation kernel's mean factor and std, the prior's std, the corrector's alpha."""
  kind: str
  drift: Callable
  diffusion: Callable
  mean_factor: Callable
  std: Callable
  prior_std: float
  alpha: Callable  # (t, dt) -> the Langevin step's alpha


def ve_sde(sigma_min: float = 0.01, sigma_max: float = 10.0) -> SDE:
  log_ratio = math.log(sigma_max / sigma_min)
  sigma = lambda t: sigma_min * (sigma_max / sigma_min) ** t
  return SDE('ve', drift=lambda x, t: jnp.zeros_like(x),
             diffusion=lambda t: sigma(t) * math.sqrt(2 * log_ratio),
             mean_factor=lambda t: jnp.ones_like(t),
             std=lambda t: jnp.sqrt(jnp.maximum(sigma(t) ** 2 - sigma_min ** 2, 1e-12)),
             prior_std=sigma_max, alpha=lambda t, dt: jnp.ones_like(t))


def vp_sde(beta_min: float = 0.1, beta_max: float = 20.0) -> SDE:
  beta = lambda t: beta_min + t * (beta_max - beta_min)
  log_mean = lambda t: -0.25 * t ** 2 * (beta_max - beta_min) - 0.5 * t * beta_min
  return SDE('vp', drift=lambda x, t: -0.5 * _bcast(beta(t), x) * x,
             diffusion=lambda t: jnp.sqrt(beta(t)),
             mean_factor=lambda t: jnp.exp(log_mean(t)),
             std=lambda t: jnp.sqrt(-jnp.expm1(2 * log_mean(t))),
             prior_std=1.0, alpha=lambda t, dt: 1.0 - beta(t) * dt)


def _bcast(v_B, x):
  return v_B.reshape(-1, *[1] * (x.ndim - 1))


def _norm(x):
  return jnp.sqrt((x.reshape(x.shape[0], -1) ** 2).sum(-1))


def pc_sample(score_fn, sde: SDE, keys_B, shape, *, steps: int, snr: float = 0.16,
              corrector_steps: int = 1, eps: float = 1e-3):
  """Predictor-corrector samples (B, *shape) of score_fn(x, t_B) -> score, row b's noise
  from keys_B[b]. Each of the N steps runs the corrector at t, then the predictor from t to
  t - (1 - eps) / N, as the paper's code orders them; the last predictor's mean is returned."""
  b = keys_B.shape[0]

  def normal(k):
    return jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, k), shape))(keys_B)

  dt = (1.0 - eps) / steps
  per_step = corrector_steps + 1

  def step(carry, i):
    x, _ = carry
    t = jnp.full((b,), 1.0 - i * dt)
    for j in range(corrector_steps):  # Langevin at t, step size from the target snr
      s = score_fn(x, t)
      z = normal(1 + i * per_step + j)
      size = 2 * sde.alpha(t, dt) * (snr * _norm(z) / jnp.maximum(_norm(s), 1e-12)) ** 2
      x = x + _bcast(size, x) * s + _bcast(jnp.sqrt(2 * size), x) * z
    # reverse-diffusion (Euler-Maruyama) step of dx = [f - g^2 s] dt + g dw, t -> t - dt
    g = _bcast(sde.diffusion(t), x)
    mean = x - (sde.drift(x, t) - g ** 2 * score_fn(x, t)) * dt
    x = mean + g * math.sqrt(dt) * normal(1 + i * per_step + corrector_steps)
    return (x, mean), None

  x_T = sde.prior_std * normal(0)
  (_, mean), _ = jax.lax.scan(step, (x_T, x_T), jnp.arange(steps))
  return mean


@dataclasses.dataclass(frozen=True)
class Options:
  """The score model's task_kwargs."""
  input_size: tuple = (8, 8)  # (H, W)
  channels: int = 1
  sde: str = 've'  # 've' | 'vp'
  sigma_min: float = 0.01  # ve
  sigma_max: float = 10.0  # ve
  beta_min: float = 0.1  # vp
  beta_max: float = 20.0  # vp
  eps: float = 1e-5  # the smallest t in training


def make(config) -> Task:
  """`config.task = 'generative.score'`, `config.model_name` a denoiser (e.g.
  'generative.diffusion_unet'); task_kwargs: `Options`. Sampler defaults from
  `config.sample`: steps, snr, corrector_steps. Train metric `loss`; eval per example
  `loss` (at a timestep and noise fixed by the image)."""
  opts = parse_options(Options, config)
  input_size = tuple(opts.input_size)
  channels = int(opts.channels)
  kind = opts.sde
  if kind not in SDES:
    raise ConfigError(f'unknown task_kwargs.sde {kind!r}; valid: {", ".join(SDES)}')
  sde = (ve_sde(float(opts.sigma_min), float(opts.sigma_max))
         if kind == 've' else
         vp_sde(float(opts.beta_min), float(opts.beta_max)))
  t_min = float(opts.eps)
  net = arch.model_from_config(config, out_channels=channels)
  if getattr(net, 'num_classes', 0):
    raise ConfigError('the score model is unconditional: set the network\'s num_classes=0')
  shape = (*input_size, channels)
  s = config.get('sample') or {}
  defaults = dict(steps=int(s.get('steps', 0) or 1000), snr=float(s.get('snr', 0.16)),
                  corrector_steps=int(s.get('corrector_steps', 1)))

  def images(batch):
    if tuple(batch['image'].shape[1:]) != shape:
      raise ValueError(f'images of shape {tuple(batch["image"].shape[1:])}; the task is '
                       f'built for {shape} (task_kwargs input_size, channels)')
    return to_unit(batch['image'])

  def noise_estimate(variables, x, t_B, train=False, rng=None):
    return net.apply(variables, x, 999.0 * t_B, None, None, train=train,
                     rngs={'dropout': rng} if train else None).astype(jnp.float32)

  def init(rng, batch):
    x = jnp.zeros((batch['image'].shape[0], *shape))
    return net.init({'params': rng, 'dropout': rng}, x, jnp.zeros((x.shape[0],)), None, None,
                    train=False)

  def dsm(variables, x0, t_B, z, train=False, rng=None):
    x_t = _bcast(sde.mean_factor(t_B), x0) * x0 + _bcast(sde.std(t_B), x0) * z
    err = noise_estimate(variables, x_t, t_B, train, rng) - z
    return (err ** 2).mean((1, 2, 3))

  def loss(variables, batch, rng):
    x0 = images(batch)
    k_t, k_z, k_drop = jax.random.split(rng, 3)
    t = jax.random.uniform(k_t, (x0.shape[0],), minval=t_min, maxval=1.0)
    value = dsm(variables, x0, t, jax.random.normal(k_z, x0.shape), True, k_drop).mean()
    return value, ({'loss': value}, {})

  def evaluate(variables, batch):
    x0 = images(batch)
    keys = jax.vmap(jax.random.split)(image_keys(batch['image']))
    t = jax.vmap(lambda k: jax.random.uniform(k, (), minval=t_min, maxval=1.0))(keys[:, 0])
    z = jax.vmap(lambda k: jax.random.normal(k, shape))(keys[:, 1])
    return {'loss': dsm(variables, x0, t, z)}

  def sample(variables, batch, rng, *, row_ids, steps=None, snr=None, corrector_steps=None,
             **unused):
    """{'images': (B, H, W, C) uint8} by the predictor-corrector sampler."""
    del batch, unused
    score = lambda x, t: -noise_estimate(variables, x, t) / _bcast(sde.std(t), x)
    x = pc_sample(score, sde, row_keys(rng, row_ids), shape,
                  steps=steps or defaults['steps'],
                  snr=defaults['snr'] if snr is None else snr,
                  corrector_steps=(defaults['corrector_steps'] if corrector_steps is None
                                   else corrector_steps))
    return {'images': to_uint8(x)}

  return Task(init=init, loss=loss, evaluate=evaluate,
              example_batch=lambda n: labelled_images(n, input_size, channels),
              sample=sample, prompt_batch=unconditional_rows)
