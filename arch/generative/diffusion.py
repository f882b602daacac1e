"""Denoising diffusion: DDPM (Ho et al. 2020, "Denoising diffusion probabilistic models")
trained on the simple loss, with Improved DDPM's cosine schedule and learned variances
(Nichol & Dhariwal 2021), v-prediction (Salimans & Ho 2022, "Progressive distillation"),
classifier-free guidance (Ho & Salimans 2022) and two samplers: DDPM's ancestral one and
DDIM (Song et al. 2021, "Denoising diffusion implicit models").

The denoiser interface (any network: the U-Net of arch/generative/diffusion_unet.py, a DiT).
The objective builds it with `arch.model_from_config(config, out_channels=...)` and calls

    net.apply(variables, x_BHWC, t_B, label_B, context_BSE, train=...) -> (B, H, W, O)

  x_BHWC       the noisy input x_t (float, H W C as configured: pixels or latents)
  t_B          the (float) timestep in [0, num_timesteps): the index of the ORIGINAL
               schedule, also when a sampler skips steps
  label_B      int32 class ids in [0, num_classes]; num_classes is the null class ("no
               label"): the network needs num_classes + 1 embedding rows. None when the
               network's `num_classes` is 0 (unconditional).
  context_BSE  cross-attention states (a text encoder's; batch['context'] when the batch
               has one), else None
  train        True in the training loss ('dropout' rng given)
  O            `out_channels`, which the objective sets: C for eps/v/x0 prediction, 2C with
               `variance='learned_range'` (the prediction, then the variance interpolant)

so a network needs the attributes `out_channels` and `num_classes` (the objective reads the
latter to decide whether it is class-conditional). Its output is cast to float32.

Forward process: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), abar_t = prod_{s<=t}
(1 - beta_s), t = 0..T-1. Schedules: 'linear', DDPM's betas 1e-4..0.02 over T = 1000,
scaled by 1000 / T for other T (as Improved DDPM does, so the end-point abar stays about
the same; clipped at 0.999, which only T < 50 reaches); 'cosine', abar(t) = f(t) / f(0), f(t) = cos((t / T + s) / (1 + s) * pi / 2)^2,
s = 0.008, betas clipped at 0.999. All schedule math is float64 numpy, stored float32.

Objective (`prediction`): the network predicts 'eps' (the noise), 'x0', or 'v' =
sqrt(abar) eps - sqrt(1 - abar) x_0; the loss is the MSE to that target at t uniform in
[0, T) (L_simple). `variance='learned_range'` adds Improved DDPM's L_vlb: the network's
extra channels give frac = (out + 1) / 2 and log sigma^2 = frac log beta_t + (1 - frac)
log beta~_t (beta~ the posterior variance, clipped at t = 0); loss = L_simple + lambda *
T * L_t with L_t the KL (bits/dim) between the posterior q(x_{t-1} | x_t, x_0) and the
model with its mean stopped from the gradient (the decoder NLL of 256-level pixels at
t = 0): lambda = `vlb_weight` = 0.001 is IDDPM's "divide by 1000". Fixed variances:
'fixed_small' (beta~, DDPM's choice on CIFAR) or 'fixed_large' (beta).

Classifier-free guidance: with a class-conditional network, training replaces each label
by the null class with probability `cfg_dropout`; sampling with guidance w uses
out_uncond + w * (out_cond - out_uncond) on the prediction channels (w = 1: conditional;
w = 0: unconditional; eps, x0 and v are affine in the output with weights summing to one
at a fixed x_t, so guiding any of them guides eps the same way). Unconditional samples of a
conditional model: w = 0.

Samplers (`sample`, one `lax.scan` over the steps): S steps visit the timesteps
round(linspace(0, T - 1, S)) from the last down (S = T: every step); the network's x_0
estimate is clipped to [-1, 1] (`clip_x0`; off for latents) and eps recomputed from it.
'ddim': x_{s} = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z with sigma =
eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s); 'ddpm': ancestral,
x_s ~ q(x_s | x_t, x0) on the respaced schedule (beta_t = 1 - abar_t / abar_s: Improved
DDPM's respacing) with the configured variance. DDIM with eta = 1 is DDPM with
'fixed_small'. The last step returns x0. Options (keyword, static): steps, sampler, eta,
guidance; their defaults come from the config (`config.sample.steps`, `.sampler`, `.eta`,
`.guidance` where the config sets them; else T steps of DDIM, eta 0, guidance 1).
Randomness: row r's key is fold_in(rng, row_ids[r]) (`row_keys`); x_T from its first
split, step i's noise from fold_in(second split, i).

Data: `make` trains on batch['image'] uint8 (B, H, W, C) mapped to [-1, 1]; samples are
clipped and mapped back to uint8 (no rounding to the data's levels). `evaluate` reports per
example `loss` (the training MSE at a timestep and noise that are a fixed function of the
image, so evals compare across steps) and `bits_per_dim`, a one-timestep unbiased estimate
of the variational bound of 256-level pixels (T * L_t + L_T with t and noise as above,
L_0 the discretized decoder NLL), with the configured variance. `build` is the same
objective over any x0 space (latent diffusion: encode/decode through a frozen VAE).

Config: `config.task = 'generative.diffusion'`; task_kwargs: `Options` (input_size (H, W),
channels, clip_x0, and the noise process's `ProcessOptions`: num_timesteps (1000),
schedule, prediction, variance, cfg_dropout (0.1 when conditional), vlb_weight).

Dimension key: B batch, H W C image (or latent), T timesteps, S sampler steps, O network
output channels.
"""

import dataclasses
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.generative import image_keys, to_uint8, to_unit  # noqa: F401 (re-exported)
from arch.images import labelled_images
from arch.task import ConfigError, Task, class_rows, parse_options, row_keys

SCHEDULES = ('linear', 'cosine')
PREDICTIONS = ('eps', 'v', 'x0')
VARIANCES = ('fixed_small', 'fixed_large', 'learned_range')
SAMPLERS = ('ddim', 'ddpm')


# ------------------------------------------------------------------------ schedules


def beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
  """betas (T,) float64 of the 'linear' or 'cosine' schedule."""
  t = num_timesteps
  if name == 'linear':
    scale = 1000.0 / t
    return np.minimum(np.linspace(scale * 1e-4, scale * 0.02, t, dtype=np.float64), 0.999)
  if name == 'cosine':
    s = 0.008
    f = lambda u: np.cos((u / t + s) / (1 + s) * np.pi / 2) ** 2
    abar = f(np.arange(t + 1, dtype=np.float64)) / f(0.0)
    return np.minimum(1.0 - abar[1:] / abar[:-1], 0.999)
  raise ConfigError(f'unknown schedule {name!r}; valid: {", ".join(SCHEDULES)}')


def alphas_cumprod(betas) -> np.ndarray:
  return np.cumprod(1.0 - np.asarray(betas, np.float64))


def sampler_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
  """The S timesteps a sampler visits, ascending: round(linspace(0, T-1, S)), distinct."""
  if not 1 <= steps <= num_timesteps:
    raise ConfigError(f'sampler steps must be in [1, {num_timesteps}], got {steps}')
  return np.round(np.linspace(0, num_timesteps - 1, steps)).astype(np.int64)


class Spaced(NamedTuple):
  """Per sampler step i (ascending timesteps), float32: abar at t_i and at the previous
  visited step (1 before the first), and the respaced log beta, log beta~ (clipped)."""
  t: jnp.ndarray
  abar: jnp.ndarray
  abar_prev: jnp.ndarray
  log_beta: jnp.ndarray
  log_beta_tilde: jnp.ndarray


def spaced(abar_T: np.ndarray, timesteps: np.ndarray) -> Spaced:
  """The schedule restricted to `timesteps` (Improved DDPM's respacing), float32 arrays."""
  abar = np.asarray(abar_T, np.float64)[timesteps]
  prev = np.concatenate([[1.0], abar[:-1]])
  beta = 1.0 - abar / prev
  beta_tilde = beta * (1.0 - prev) / (1.0 - abar)
  # beta~ is 0 at the first step: its log is clipped to the next step's, as IDDPM does.
  clipped = np.concatenate([beta_tilde[1:2] if len(beta) > 1 else beta[:1], beta_tilde[1:]])
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return Spaced(f32(timesteps), f32(abar), f32(prev), f32(np.log(beta)), f32(np.log(clipped)))


# --------------------------------------------------------------- the Gaussian algebra
# `abar` arguments broadcast against x: (B, 1, ..., 1) or scalars.


def q_sample(x0, eps, abar):
  """x_t ~ q(x_t | x_0) = sqrt(abar) x0 + sqrt(1 - abar) eps."""
  return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * eps


def target(x0, eps, abar, prediction: str):
  """What the network learns to output: eps, x0, or v = sqrt(abar) eps - sqrt(1-abar) x0."""
  if prediction == 'eps':
    return eps
  if prediction == 'x0':
    return x0
  if prediction == 'v':
    return jnp.sqrt(abar) * eps - jnp.sqrt(1.0 - abar) * x0
  raise ConfigError(f'unknown prediction {prediction!r}; valid: {", ".join(PREDICTIONS)}')


def eps_from_x0(x_t, x0, abar):
  return (x_t - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)


def to_x0_eps(out, x_t, abar, prediction: str):
  """(x0, eps) the network's prediction means at x_t."""
  if prediction == 'eps':
    return (x_t - jnp.sqrt(1.0 - abar) * out) / jnp.sqrt(abar), out
  if prediction == 'x0':
    return out, eps_from_x0(x_t, out, abar)
  if prediction == 'v':
    return (jnp.sqrt(abar) * x_t - jnp.sqrt(1.0 - abar) * out,
            jnp.sqrt(1.0 - abar) * x_t + jnp.sqrt(abar) * out)
  raise ConfigError(f'unknown prediction {prediction!r}; valid: {", ".join(PREDICTIONS)}')


def posterior(x_t, x0, abar, abar_prev):
  """q(x_prev | x_t, x0) = N(mean, var) for the step from abar to abar_prev (any spacing:
  beta = 1 - abar / abar_prev); var = beta~ = beta (1 - abar_prev) / (1 - abar)."""
  beta = 1.0 - abar / abar_prev
  mean = (jnp.sqrt(abar_prev) * beta / (1.0 - abar) * x0
          + jnp.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar) * x_t)
  return mean, beta * (1.0 - abar_prev) / (1.0 - abar)


def ddpm_step(x_t, x0, abar, abar_prev, noise, log_var=None):
  """DDPM's ancestral step: the posterior mean plus noise of the model's variance
  (default beta~, 'fixed_small'); none at the last step (abar_prev = 1)."""
  mean, var = posterior(x_t, x0, abar, abar_prev)
  std = jnp.sqrt(var) if log_var is None else jnp.exp(0.5 * log_var)
  return mean + jnp.where(abar_prev < 1.0, std, 0.0) * noise


def ddim_step(x_t, x0, eps, abar, abar_prev, eta, noise):
  """DDIM's step (Song et al. eq. 12) from abar to abar_prev with sigma scaled by eta."""
  var = eta ** 2 * (1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev)
  direction = jnp.sqrt(jnp.maximum(1.0 - abar_prev - var, 0.0)) * eps
  return jnp.sqrt(abar_prev) * x0 + direction + jnp.sqrt(var) * noise


def guided(out_cond, out_uncond, guidance, channels: int):
  """Classifier-free guidance on the first `channels` (the prediction); the remaining ones
  (a learned variance) are the conditional output's."""
  pred = out_uncond[..., :channels] + guidance * (out_cond[..., :channels]
                                                  - out_uncond[..., :channels])
  return jnp.concatenate([pred, out_cond[..., channels:]], axis=-1)


def model_log_variance(v_raw, log_beta, log_beta_tilde):
  """Improved DDPM's learned range: frac = (v + 1) / 2 between log beta~ and log beta."""
  frac = (v_raw + 1.0) / 2.0
  return frac * log_beta + (1.0 - frac) * log_beta_tilde


def log_variance(variance: str, sched: Spaced, i, v_raw=None):
  """log sigma^2 of p(x_prev | x_t) at sampler step(s) i: 'fixed_small' beta~,
  'fixed_large' beta (beta~ at the first step, as IDDPM), 'learned_range' from v_raw."""
  if variance == 'learned_range':
    return model_log_variance(v_raw, sched.log_beta[i], sched.log_beta_tilde[i])
  if variance == 'fixed_large':
    return jnp.where(i == 0, sched.log_beta_tilde[i], sched.log_beta[i])
  return sched.log_beta_tilde[i]


# ------------------------------------------------------------------------------ bound


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, nats."""
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def _std_normal_cdf(x):
  return 0.5 * (1.0 + jax.scipy.special.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(x0, mean, log_scale):
  """log P(x0) of 256-level pixels x0 in [-1, 1] (bins of width 2/255, the end bins
  open-ended) under N(mean, e^{2 log_scale}), elementwise (Ho et al.'s decoder)."""
  centred = x0 - mean
  inv = jnp.exp(-log_scale)
  cdf_plus = _std_normal_cdf(inv * (centred + 1.0 / 255))
  cdf_minus = _std_normal_cdf(inv * (centred - 1.0 / 255))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_sf_minus = jnp.log(jnp.maximum(1.0 - cdf_minus, 1e-12))
  log_delta = jnp.log(jnp.maximum(cdf_plus - cdf_minus, 1e-12))
  return jnp.where(x0 < -0.999, log_cdf_plus, jnp.where(x0 > 0.999, log_sf_minus, log_delta))


def mean_dims(x_BHWC):
  return x_BHWC.reshape(x_BHWC.shape[0], -1).mean(-1)


def vlb_term(x0, x_t, x0_model, log_var, abar, abar_prev, is_first):
  """L_t in bits/dim per example (B,): KL(q(x_prev | x_t, x0) || p(x_prev | x_t)) with
  p's mean from the model's x0, or the decoder NLL of x0 where `is_first` (t = 0)."""
  mean_q, var_q = posterior(x_t, x0, abar, abar_prev)
  mean_p, _ = posterior(x_t, x0_model, abar, abar_prev)
  log_var_q = jnp.log(jnp.maximum(var_q, 1e-20))
  kl = mean_dims(normal_kl(mean_q, log_var_q, mean_p, log_var))
  nll = -mean_dims(discretized_gaussian_log_likelihood(x0, mean_p, 0.5 * log_var))
  return jnp.where(is_first, nll, kl) / math.log(2.0)


def prior_bits(x0, abar_last):
  """L_T = KL(q(x_{T-1} | x0) || N(0, I)) in bits/dim per example (B,)."""
  mean, var = jnp.sqrt(abar_last) * x0, 1.0 - abar_last
  return mean_dims(normal_kl(mean, jnp.log(var), 0.0, 0.0)) / math.log(2.0)


# -------------------------------------------------------------------------- objective


@dataclasses.dataclass(frozen=True)
class ProcessOptions:
  """The noise process and its loss: the task_kwargs of every diffusion objective, pixel
  (`Options`), latent (ldm.py) and video (video_dit.py)."""
  num_timesteps: int = 1000  # T
  schedule: str = 'linear'  # of the betas: SCHEDULES
  prediction: str = 'eps'  # the network's target: PREDICTIONS
  variance: str = 'fixed_small'  # VARIANCES; 'learned_range' adds the bound to the loss
  # the labels dropped (to the null class) for classifier-free guidance; None: 0.1 for a
  # class-conditional network, else 0
  cfg_dropout: Optional[float] = None
  vlb_weight: float = 0.001  # the bound's weight with a learned variance


@dataclasses.dataclass(frozen=True)
class Options(ProcessOptions):
  """Pixel-space diffusion's task_kwargs."""
  input_size: tuple = (8, 8)  # (H, W)
  channels: int = 1
  clip_x0: bool = True  # the sampler clips its x0 estimates to [-1, 1]


def _check(o: ProcessOptions):
  if int(o.num_timesteps) < 2:
    raise ConfigError(f'task_kwargs.num_timesteps must be >= 2, got {int(o.num_timesteps)}')
  for key, valid in (('schedule', SCHEDULES), ('prediction', PREDICTIONS),
                     ('variance', VARIANCES)):
    if getattr(o, key) not in valid:
      raise ConfigError(f'unknown task_kwargs.{key} {getattr(o, key)!r}; valid: '
                        f'{", ".join(valid)}')


def sampler_defaults(config, num_timesteps: int) -> dict:
  """The sampler options a config sets in `config.sample` (steps 0 = T)."""
  s = config.get('sample') or {}
  return dict(steps=int(s.get('steps', 0) or num_timesteps), sampler=s.get('sampler', 'ddim'),
              eta=float(s.get('eta', 0.0)), guidance=float(s.get('guidance', 1.0)))


def build(config, o: ProcessOptions, *, shape, to_x0: Callable, from_x0: Callable,
          noise_key: Callable, example_batch: Callable, clip_x0: bool,
          init_extra: Optional[Callable] = None, extra_collections: tuple = (),
          null_context: Optional[Callable] = None) -> Task:
  """The diffusion objective with the noise process `o` (the task's parsed options) over
  any x0 space of `shape` (H, W, C), or (T, H, W, C) for video, or any other rank; the
  network gets x_t of shape (B, *shape):

  to_x0(variables, batch, rng) -> x0 (B, *shape) float32 (rng: a key in training, e.g.
  for a posterior draw; None in eval, which must be a fixed function of the batch); from_x0(variables, x0) -> the
  samples {'images': ...}; noise_key(batch) -> (B,) keys for eval's fixed timestep and
  noise; example_batch(n) -> the batch shapes; init_extra(rng, batch) -> the variable
  collections named `extra_collections`, which are not the network's (e.g. a frozen VAE's
  {'vae': ...}, filled by the loop from `config.frozen`; the network never sees them); clip_x0:
  whether the sampler clips x0 to [-1, 1] (pixels; latents are not in [-1, 1]);
  null_context(variables, b) -> the (B, ...) context of the empty prompt, which guidance
  contrasts with a batch's 'context' (text-to-image; class-conditional networks contrast
  the label with the null class instead).
  """
  _check(o)
  c = shape[-1]
  big_t, prediction, variance = int(o.num_timesteps), o.prediction, o.variance
  learned = variance == 'learned_range'
  clip = clip_x0
  vlb_weight = float(o.vlb_weight)
  model = arch.model_from_config(config, out_channels=2 * c if learned else c)
  num_classes = int(getattr(model, 'num_classes', 0) or 0)
  cfg_dropout = o.cfg_dropout
  cfg_dropout = (0.1 if num_classes else 0.0) if cfg_dropout is None else float(cfg_dropout)
  if not 0.0 <= cfg_dropout < 1.0:
    raise ConfigError(f'task_kwargs.cfg_dropout must be in [0, 1), got {cfg_dropout}')
  betas = beta_schedule(o.schedule, big_t)
  abar_T = alphas_cumprod(betas)
  full = spaced(abar_T, np.arange(big_t))
  defaults = sampler_defaults(config, big_t)

  def labels(batch, rng=None):
    if not num_classes:
      return None
    label = batch['label'].astype(jnp.int32)
    if rng is not None and cfg_dropout > 0:
      drop = jax.random.bernoulli(rng, cfg_dropout, label.shape)
      label = jnp.where(drop, num_classes, label)
    return label

  def apply(variables, x_t, t_B, label, batch, train=False, rng=None):
    out = model.apply({k: v for k, v in variables.items() if k not in extra_collections},
                      x_t, t_B.astype(jnp.float32), label, batch.get('context'), train=train,
                      rngs={'dropout': rng} if train else None)
    return out.astype(jnp.float32)

  def init(rng, batch):
    k_model, k_extra = jax.random.split(rng)
    b = jax.tree.leaves(batch)[0].shape[0]
    x = jnp.zeros((b, *shape), jnp.float32)
    label = jnp.zeros((b,), jnp.int32) if num_classes else None
    variables = dict(model.init({'params': k_model, 'dropout': k_model}, x,
                                jnp.zeros((b,), jnp.float32), label, batch.get('context'),
                                train=False))
    if init_extra is not None:
      variables.update(init_extra(k_extra, batch))
    return variables

  def terms(variables, batch, t_B, eps, train, rng=None):
    """(L_simple (B,), L_t bits/dim (B,) or None) at timesteps t_B with noise eps."""
    x0 = to_x0(variables, batch, None if rng is None else jax.random.fold_in(rng, 1))
    idx = t_B.reshape(-1, *[1] * len(shape))  # broadcasts against x0 (B, *shape)
    abar, abar_prev = full.abar[idx], full.abar_prev[idx]
    x_t = q_sample(x0, eps, abar)
    k_drop, k_net = (None, None) if rng is None else jax.random.split(rng)
    out = apply(variables, x_t, t_B, labels(batch, k_drop), batch, train, k_net)
    pred = out[..., :c]
    mse = mean_dims((pred - target(x0, eps, abar, prediction)) ** 2)
    log_var = log_variance(variance, full, idx, out[..., c:])
    # The bound trains only the variance: the mean's gradient comes from L_simple.
    x0_model = to_x0_eps(jax.lax.stop_gradient(pred), x_t, abar, prediction)[0]
    vlb = vlb_term(x0, x_t, x0_model, log_var, abar, abar_prev, t_B == 0)
    return mse, vlb, x0

  def loss(variables, batch, rng):
    x0_shape = (jax.tree.leaves(batch)[0].shape[0], *shape)
    k_t, k_eps, k_net = jax.random.split(rng, 3)
    t_B = jax.random.randint(k_t, x0_shape[:1], 0, big_t)
    eps = jax.random.normal(k_eps, x0_shape)
    mse, vlb, _ = terms(variables, batch, t_B, eps, True, k_net)
    value = mse.mean()
    metrics = {'mse': value}
    if learned:
      metrics['vlb'] = vlb.mean() * big_t
      value = value + vlb_weight * big_t * vlb.mean()
    metrics['loss'] = value
    # The other collections (a frozen first stage) go back unchanged: the loop's state is
    # whatever non-param variables the loss returns.
    return value, (metrics, {k: variables[k] for k in extra_collections})

  def evaluate(variables, batch):
    keys = noise_key(batch)
    t_B = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 0), (), 0, big_t))(keys)
    eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), shape))(keys)
    mse, vlb, x0 = terms(variables, batch, t_B, eps, False)
    bpd = big_t * vlb + prior_bits(x0, full.abar[-1])
    if learned:
      mse = mse + vlb_weight * big_t * vlb  # the training loss's definition
    return {'loss': mse, 'bits_per_dim': bpd}

  def prompt_batch(prompts, num_samples):
    return class_rows(prompts, num_samples, num_classes)

  def denoise(variables, x_t, t_B, label, batch, null, guidance):
    """The network's guided output eps_u + s (eps_c - eps_u) at x_t, the unconditional
    eps_u given the null class or the context `null` (None: no null context; one network
    call at s = 0 or 1)."""
    if (label is None and null is None) or guidance == 1.0:
      return apply(variables, x_t, t_B, label, batch)
    null_label = None if label is None else jnp.full_like(label, num_classes)
    null = batch if null is None else null
    if guidance == 0.0:
      return apply(variables, x_t, t_B, null_label, null)
    cat = lambda a, b: None if a is None else jnp.concatenate([a, b])
    both = apply(variables, cat(x_t, x_t), cat(t_B, t_B), cat(label, null_label),
                 jax.tree.map(cat, batch, null))
    return guided(both[:len(x_t)], both[len(x_t):], guidance, c)

  def sample(variables, batch, rng, *, row_ids, steps=None, sampler=None, eta=None,
             guidance=None, **unused):
    """{'images': ...} after `steps` steps of `sampler` (defaults: the config's)."""
    del unused  # e.g. the driver's temperature
    steps = int(steps or defaults['steps'])
    sampler = sampler or defaults['sampler']
    eta = defaults['eta'] if eta is None else float(eta)
    guidance = defaults['guidance'] if guidance is None else float(guidance)
    if sampler not in SAMPLERS:
      raise ConfigError(f'unknown sampler {sampler!r}; valid: {", ".join(SAMPLERS)}')
    sched = spaced(abar_T, sampler_timesteps(big_t, steps))
    b = row_ids.shape[0]
    label = batch['label'].astype(jnp.int32) if num_classes else None
    extra = {k: v for k, v in batch.items() if k == 'context'}
    null = ({'context': null_context(variables, b)}
            if null_context is not None and extra and guidance != 1.0 else None)
    splits = jax.vmap(jax.random.split)(row_keys(rng, row_ids))
    k_init, k_steps = splits[:, 0], splits[:, 1]
    x_T = jax.vmap(lambda k: jax.random.normal(k, shape))(k_init)

    def step(x_t, i):
      t_B = jnp.full((b,), sched.t[i])
      abar, abar_prev = sched.abar[i], sched.abar_prev[i]
      out = denoise(variables, x_t, t_B, label, extra, null, guidance)
      x0, eps = to_x0_eps(out[..., :c], x_t, abar, prediction)
      if clip:
        x0 = jnp.clip(x0, -1.0, 1.0)
        eps = eps_from_x0(x_t, x0, abar)
      noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), shape))(k_steps)
      if sampler == 'ddim':
        return ddim_step(x_t, x0, eps, abar, abar_prev, eta, noise), None
      log_var = log_variance(variance, sched, i, out[..., c:])
      return ddpm_step(x_t, x0, abar, abar_prev, noise, log_var), None

    x0, _ = jax.lax.scan(step, x_T, jnp.arange(steps - 1, -1, -1))
    return from_x0(variables, x0)

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              sample=sample, prompt_batch=prompt_batch)


def make(config) -> Task:
  """Pixel-space diffusion of uint8 images batch['image'] (B, H, W, C) (and batch['label']
  for a class-conditional network). Train metrics `loss` (and `mse`, `vlb` with a learned
  variance); eval per example `loss` and `bits_per_dim`."""
  o = parse_options(Options, config)
  input_size, channels = tuple(o.input_size), int(o.channels)
  shape = (*input_size, channels)

  def to_x0(variables, batch, rng=None):
    del variables, rng
    if tuple(batch['image'].shape[1:]) != shape:
      raise ValueError(f'images of shape {tuple(batch["image"].shape[1:])}; the task is built '
                       f'for {shape} (task_kwargs input_size, channels)')
    return to_unit(batch['image'])

  return build(config, o, shape=shape, to_x0=to_x0,
               from_x0=lambda variables, x0: {'images': to_uint8(x0)},
               noise_key=lambda batch: image_keys(batch['image']),
               example_batch=lambda n: labelled_images(n, input_size, channels),
               clip_x0=bool(o.clip_x0))
