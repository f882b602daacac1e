"""Autoencoders and variational autoencoders: the deterministic autoencoder, the VAE
(Kingma & Welling 2014, "Auto-encoding variational Bayes") with beta-VAE's weight on the
KL term (Higgins et al. 2017), and the objective of Stable Diffusion's KL autoencoder
(Rombach et al. 2022; the network is arch/generative/autoencoder_kl.py).

Networks expose `encode(x_BHWC) -> (mean, logvar)` (logvar None for a deterministic
autoencoder) and `decode(z) -> out_BHWO`, x in [-1, 1]. `ConvVAE` (this module's `Model`)
is a small conv net for the 8x8 digits: conv3x3, then one stride-2 conv3x3 per entry of
`features` (8x8 -> 4x4 -> 2x2), a hidden dense layer and dense heads to the mean and
log-variance of a `latent_dim` Gaussian; the decoder mirrors it with nearest-neighbour
upsampling and conv3x3s. `stochastic=False` drops the log-variance head: the plain
autoencoder, whose code is used as is (no noise, no KL).

The objective: -ELBO = E_q[-log p(x|z)] + beta KL(q(z|x) || N(0, I)) per image (nats),
one reparameterised draw z = mean + exp(logvar / 2) eps per example in training, the KL in
closed form. beta = 1 is the VAE, beta > 1 beta-VAE, a small beta SD's KL autoencoder;
for the autoencoder the loss is the reconstruction term alone. Likelihoods p(x|z)
(task_kwargs.likelihood; the objective sets the network's `out_channels` to match):
  categorical  (default) one softmax over `levels` grey levels per pixel. The digits have
               17 levels (round(k * 255 / 16)), so with levels=17 this is an exact discrete
               likelihood of the stored 8-bit image: -ELBO and the IWAE bound are upper
               bounds on -log P(image) in nats, comparable with the flows' and PixelCNN's
               bits/dim (reported as bits_per_dim from the IWAE bound).
  bernoulli    sigmoid cross-entropy against the intensities in [0, 1], the classic MNIST
               VAE choice: not a normalised likelihood for grey levels, so its -ELBO is not a
               bound on anything; kept for comparison.
  laplace      density exp(-|x - m| / b) / (2b) on x in [-1, 1], b = task_kwargs.scale:
               SD's L1 reconstruction loss (SD learns b as one scalar; here it is fixed).
               A density, so its nats are not those of a discrete image.
Eval, per image: `recon_nll` (E_q[-log p(x|z)] over `eval_samples` draws), `kl`, `nelbo`,
`iwae_nll` (Burda et al. 2016: -log mean_k p(x, z_k) / q(z_k | x), a tighter bound that
tends to -log p(x) as k grows), `mse` (squared error per pixel of the decoded mean image
at the posterior mean, pixels in [0, 1]), `latent_mean` and `latent_std` (over every
element of the posterior draws). The eval draws are a fixed function of the image, so the
numbers do not depend on the batch an image lands in. The autoencoder reports
`recon_nll`, `mse` and the latent statistics of its codes.

Latent scale for latent diffusion. A diffusion model on the latents wants them at unit
scale; SD multiplies by 0.18215, 1 / std of its autoencoder's latents on its data. The
objective keeps running statistics of the posterior draws it trains on in the
non-parameter collection 'latent_stats' (per latent channel: EMA of the mean and of the
second moment, momentum `stats_momentum`, debiased as Adam's moments are), so a frozen
run carries them: `latent_scale(variables)` is 1 / std over all latent elements (SD's
convention) and `latent_moments(variables)` the per-channel mean and std; eval's
`latent_std` is the exact number over the eval split. The variables of a run are exactly
`make(config).init(rng, batch)`'s tree: {'params': ..., 'latent_stats': ...}.

Sampling: z ~ N(0, temperature^2 I) per row (its key from the row id alone), decoded to
the mean image (categorical: the expected level rounded to the nearest level; bernoulli:
the probabilities; laplace: the location), not to pixel-wise draws from p(x|z), whose
independent noise is not part of the image model's structure. The deterministic
autoencoder has no prior and so no samples: its `sample` and `prompt_batch` raise
ConfigError.

Dimension key: B batch, H W image size, C image channels, K posterior draws per image,
Z latent dimensions (the trailing axes of `encode`'s outputs), O decoder output channels.
"""

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.generative import image_keys
from arch.images import labelled_images
from arch.layers.conv import channel_init, kernel_init
from arch.task import ConfigError, Task, parse_options, row_keys, unconditional_rows

Dtype = Any
LATENT_STATS = 'latent_stats'  # the collection of running latent statistics
LIKELIHOODS = ('categorical', 'bernoulli', 'laplace')


# ---------------------------------------------------------------------------- network


def _conv(features: int, name: str, strides: int = 1, dtype=jnp.float32,
          param_dtype=jnp.float32):
  return nn.Conv(features, (3, 3), strides=(strides, strides), padding=((1, 1), (1, 1)),
                 dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init(),
                 bias_init=channel_init(nn.initializers.zeros), name=name)


def _dense(features: int, name: str, dtype=jnp.float32, param_dtype=jnp.float32):
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                           ('embed', 'mlp')),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('mlp',)))


class ConvEncoder(nn.Module):
  """(B, H, W, C) -> features (B, F): conv3x3, stride-2 conv3x3s, a hidden dense layer."""
  features: Sequence[int] = (32, 64)
  hidden: int = 256
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.silu(_conv(self.features[0], 'conv_in', **kw)(x_BHWC))
    for i, f in enumerate(self.features):
      x = nn.silu(_conv(f, f'down{i}', strides=2, **kw)(x))
    return nn.silu(_dense(self.hidden, 'hidden', **kw)(x.reshape(x.shape[0], -1)))


class ConvDecoder(nn.Module):
  """z (B, Z) -> (B, H, W, out_channels): dense layers to the smallest grid, then per
  width nearest-neighbour x2 upsampling and a conv3x3, a conv3x3 to the outputs."""
  input_size: Sequence[int] = (8, 8)
  features: Sequence[int] = (32, 64)
  hidden: int = 256
  out_channels: int = 17
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z_BZ):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    f = 2 ** len(self.features)
    h, w = self.input_size[0] // f, self.input_size[1] // f
    x = nn.silu(_dense(self.hidden, 'hidden', **kw)(z_BZ))
    x = nn.silu(_dense(h * w * self.features[-1], 'grid', **kw)(x))
    x = x.reshape(x.shape[0], h, w, self.features[-1])
    for i, feat in reversed(list(enumerate(self.features))):
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      x = nn.silu(_conv(feat, f'up{i}', **kw)(x))
    return _conv(self.out_channels, 'conv_out', **kw)(x)


class ConvVAE(nn.Module):
  """A conv VAE (or, `stochastic=False`, autoencoder) for small images."""
  latent_dim: int = 16
  features: Sequence[int] = (32, 64)  # one stride-2 stage each
  hidden: int = 256
  stochastic: bool = True   # False: the deterministic autoencoder
  input_size: Sequence[int] = (8, 8)  # the objective sets it from task_kwargs
  out_channels: int = 17    # the objective sets it from the likelihood
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    f = 2 ** len(self.features)
    if any(n % f for n in self.input_size):
      raise ValueError(f'ConvVAE: input_size {tuple(self.input_size)} must be multiples of '
                       f'{f} (one stride-2 stage per entry of features={self.features})')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.encoder = ConvEncoder(tuple(self.features), self.hidden, **kw)
    self.to_mean = _dense(self.latent_dim, 'to_mean', **kw)
    if self.stochastic:
      self.to_logvar = _dense(self.latent_dim, 'to_logvar', **kw)
    self.decoder = ConvDecoder(tuple(self.input_size), tuple(self.features), self.hidden,
                               self.out_channels, **kw)

  def encode(self, x_BHWC):
    """-> (mean (B, Z), logvar (B, Z) or None for the autoencoder)."""
    h = self.encoder(x_BHWC)
    mean = self.to_mean(h).astype(jnp.float32)
    if not self.stochastic:
      return mean, None
    return mean, self.to_logvar(h).astype(jnp.float32)

  def decode(self, z_BZ):
    return self.decoder(z_BZ).astype(jnp.float32)

  def __call__(self, x_BHWC):
    """-> (decode(mean), mean, logvar): the reconstruction at the posterior mean."""
    mean, logvar = self.encode(x_BHWC)
    return self.decode(mean), mean, logvar


Model = ConvVAE  # 'generative.vae'


# ---------------------------------------------------------------------------- likelihoods


def to_input(image_BHWC):
  """uint8 pixels -> float32 in [-1, 1]."""
  return image_BHWC.astype(jnp.float32) / 127.5 - 1.0


def to_levels(image_BHWC, levels: int):
  """uint8 pixels -> level indices round(v * (levels - 1) / 255) (int32)."""
  return jnp.round(image_BHWC.astype(jnp.float32) * (levels - 1) / 255.0).astype(jnp.int32)


def output_channels(likelihood: str, channels: int, levels: int) -> int:
  return channels * levels if likelihood == 'categorical' else channels


def per_example(x):
  return x.reshape(x.shape[0], -1).sum(-1)


def log_likelihood(out_BHWO, image_BHWC, likelihood: str, levels: int = 17,
                   scale: float = 1.0):
  """log p(image | decoder output) summed per example: (B,)."""
  if likelihood == 'categorical':
    logits = out_BHWO.reshape(*image_BHWC.shape, levels)
    logp = jax.nn.log_softmax(logits, axis=-1)
    k = to_levels(image_BHWC, levels)
    return per_example(jnp.take_along_axis(logp, k[..., None], axis=-1)[..., 0])
  if likelihood == 'bernoulli':
    t = image_BHWC.astype(jnp.float32) / 255.0
    return per_example(t * jax.nn.log_sigmoid(out_BHWO) + (1 - t) * jax.nn.log_sigmoid(-out_BHWO))
  if likelihood == 'laplace':
    return per_example(-jnp.abs(to_input(image_BHWC) - out_BHWO) / scale - math.log(2 * scale))
  raise ValueError(f'unknown likelihood {likelihood!r}; valid: {", ".join(LIKELIHOODS)}')


def mean_image(out_BHWO, likelihood: str, channels: int, levels: int = 17):
  """The decoder's mean image, float pixels in [0, 255]: (B, H, W, C)."""
  if likelihood == 'categorical':
    probs = jax.nn.softmax(out_BHWO.reshape(*out_BHWO.shape[:3], channels, levels), axis=-1)
    return (probs * jnp.arange(levels)).sum(-1) * (255.0 / (levels - 1))
  if likelihood == 'bernoulli':
    return jax.nn.sigmoid(out_BHWO) * 255.0
  return jnp.clip((out_BHWO + 1.0) * 127.5, 0.0, 255.0)


def to_pixels(mean_BHWC, likelihood: str, levels: int = 17):
  """A mean image -> uint8 (categorical: the nearest of the `levels` values)."""
  if likelihood == 'categorical':
    k = jnp.clip(jnp.round(mean_BHWC * (levels - 1) / 255.0), 0, levels - 1)
    return jnp.round(k * 255.0 / (levels - 1)).astype(jnp.uint8)
  return jnp.round(jnp.clip(mean_BHWC, 0.0, 255.0)).astype(jnp.uint8)


def kl_std_normal(mean_BZ, logvar_BZ):
  """KL(N(mean, exp(logvar)) || N(0, I)) in closed form, summed per example: (B,)."""
  return per_example(0.5 * (mean_BZ ** 2 + jnp.exp(logvar_BZ) - 1.0 - logvar_BZ))


def std_normal_logpdf(z):
  return per_example(-0.5 * (z ** 2 + math.log(2 * math.pi)))


def posterior_terms(model, variables, image_BHWC, eps_KBZ, likelihood: str,
                    levels: int = 17, scale: float = 1.0):
  """Encode once, decode K reparameterised draws z = mean + exp(logvar / 2) eps.

  Returns dict: log_px_z (K, B) = log p(x | z_k); log_w (K, B) = log p(x, z_k) / q(z_k | x)
  (the importance weights); kl (B,) in closed form; z (K, B, ...); mean, logvar. For a
  deterministic autoencoder (logvar None) z = the code, log_w and kl are None/zero."""
  mean, logvar = model.apply(variables, to_input(image_BHWC), method='encode')
  k, b = eps_KBZ.shape[:2]
  if logvar is None:
    z = jnp.broadcast_to(mean, eps_KBZ.shape)
  else:
    z = mean + jnp.exp(0.5 * logvar) * eps_KBZ
  out = model.apply(variables, z.reshape(k * b, *z.shape[2:]), method='decode')
  tiled = jnp.broadcast_to(image_BHWC, (k, *image_BHWC.shape))
  tiled = tiled.reshape(k * b, *image_BHWC.shape[1:])
  log_px_z = log_likelihood(out, tiled, likelihood, levels, scale).reshape(k, b)
  terms = dict(log_px_z=log_px_z, z=z, mean=mean, logvar=logvar)
  if logvar is None:
    terms.update(log_w=None, kl=jnp.zeros((b,)))
  else:
    flat = lambda a: a.reshape(k * b, *a.shape[2:])
    log_pz = std_normal_logpdf(flat(z)).reshape(k, b)
    # log q(z | x) = log N(eps; 0, I) - sum(logvar) / 2
    log_qz = std_normal_logpdf(flat(eps_KBZ)).reshape(k, b) - 0.5 * per_example(logvar)
    terms.update(log_w=log_px_z + log_pz - log_qz, kl=kl_std_normal(mean, logvar))
  return terms


def iwae_bound(log_w_KB):
  """The importance-weighted bound log mean_k w_k (B,) (Burda et al. 2016)."""
  k = log_w_KB.shape[0]
  return jax.nn.logsumexp(log_w_KB, axis=0) - math.log(k)


# ---------------------------------------------------------------------------- latent stats


def init_latent_stats(latent_channels: int) -> dict:
  z = jnp.zeros((latent_channels,), jnp.float32)
  return {'mean': z, 'sq': z, 'weight': jnp.zeros((), jnp.float32)}


def update_latent_stats(stats: dict, z, momentum: float) -> dict:
  """EMA of the per-channel mean and second moment of latents z (..., channels); `weight`
  is the EMA of 1, i.e. 1 - momentum ** steps, which the readers divide by (debiasing)."""
  z = jax.lax.stop_gradient(z).reshape(-1, z.shape[-1])
  ema = lambda old, new: momentum * old + (1.0 - momentum) * new
  return {'mean': ema(stats['mean'], z.mean(0)), 'sq': ema(stats['sq'], (z ** 2).mean(0)),
          'weight': ema(stats['weight'], 1.0)}


def _debiased(variables):
  s = variables[LATENT_STATS]
  w = jnp.maximum(s['weight'], 1e-12)
  return s['mean'] / w, s['sq'] / w


def latent_moments(variables):
  """Per-channel (mean, std) of a run's latents, from its 'latent_stats' collection."""
  mean, sq = _debiased(variables)
  return mean, jnp.sqrt(jnp.maximum(sq - mean ** 2, 0.0))


def latent_scale(variables):
  """1 / std over all latent elements (SD's scaling factor, 0.18215 for SD's own data):
  multiply latents by it before diffusion, divide before decoding."""
  mean, sq = (m.mean() for m in _debiased(variables))
  return 1.0 / jnp.sqrt(jnp.maximum(sq - mean ** 2, 1e-12))


# ---------------------------------------------------------------------------- objective


@dataclasses.dataclass(frozen=True)
class Options:
  """The VAE's task_kwargs."""
  input_size: tuple = (8, 8)  # (H, W)
  channels: int = 1
  likelihood: str = 'categorical'  # 'categorical' | 'bernoulli' | 'laplace'
  levels: int = 17  # categorical: pixel levels modelled
  scale: float = 1.0  # laplace: b
  beta: float = 1.0  # the KL weight
  eval_samples: int = 16  # K, the importance samples of the eval's bounds
  stats_momentum: float = 0.99  # of the latents' running statistics ('latent_stats')


def make(config) -> Task:
  """`config.task = 'generative.vae'`; `config.model_name = 'generative.vae'` (ConvVAE) or
  `'generative.autoencoder_kl'`. task_kwargs: `Options`. Batches hold `image` (B, H, W, C)
  uint8. Train metrics: loss, recon_nll, kl, nelbo."""
  opts = parse_options(Options, config)
  input_size = tuple(opts.input_size)
  channels = int(opts.channels)
  likelihood = opts.likelihood
  levels = int(opts.levels)
  scale = float(opts.scale)
  beta = float(opts.beta)
  eval_samples = int(opts.eval_samples)
  momentum = float(opts.stats_momentum)
  if likelihood not in LIKELIHOODS:
    raise ConfigError(f'unknown task_kwargs.likelihood {likelihood!r}; valid: '
                      f'{", ".join(LIKELIHOODS)}')
  if not 2 <= levels <= 256:
    raise ConfigError(f'task_kwargs.levels must be in [2, 256], got {levels}')
  if beta < 0 or scale <= 0 or eval_samples < 1 or not 0 <= momentum < 1:
    raise ConfigError(f'task_kwargs need beta >= 0, scale > 0, eval_samples >= 1 and '
                      f'stats_momentum in [0, 1); got {beta}, {scale}, {eval_samples}, '
                      f'{momentum}')
  overrides = {'out_channels': output_channels(likelihood, channels, levels)}
  if 'input_size' in arch.model_fields(config.model_name):
    overrides['input_size'] = input_size
  model = arch.model_from_config(config, **overrides)
  if not (hasattr(model, 'encode') and hasattr(model, 'decode')):
    raise ConfigError(f'the vae objective needs a network with encode and decode; '
                      f'{config.model_name!r} has not: use generative.vae (ConvVAE) or '
                      f'generative.autoencoder_kl')
  factor = getattr(model, 'downsampling', 1)
  if any(n % factor for n in input_size):
    raise ConfigError(f'task_kwargs.input_size {input_size} must be multiples of {factor} '
                      f'for {config.model_name}')
  stochastic = bool(getattr(model, 'stochastic', True))
  shape = (*input_size, channels)
  x_spec = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
  try:
    latent_shape = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, method='encode')[0][0],
        x_spec).shape[1:]
  except ValueError as e:
    raise ConfigError(str(e)) from None
  dims = math.prod(shape)

  def images(batch):
    image = batch['image']
    if image.shape[1:] != shape:
      raise ValueError(f'images are {image.shape[1:]}; the model is configured for {shape} '
                       f'(task_kwargs.input_size, channels)')
    return image

  def init(rng, batch):
    x = jnp.zeros((batch['image'].shape[0], *shape), jnp.float32)
    variables = dict(model.init(rng, x))
    variables[LATENT_STATS] = init_latent_stats(latent_shape[-1])
    return variables

  def net(variables):
    return {k: v for k, v in variables.items() if k != LATENT_STATS}

  def loss(variables, batch, rng):
    image = images(batch)
    eps = jax.random.normal(rng, (1, image.shape[0], *latent_shape))
    t = posterior_terms(model, net(variables), image, eps, likelihood, levels, scale)
    recon = -t['log_px_z'][0].mean()
    kl = t['kl'].mean()
    value = recon + beta * kl
    metrics = {'loss': value, 'recon_nll': recon}
    if stochastic:
      metrics.update(kl=kl, nelbo=recon + kl)
    stats = update_latent_stats(variables[LATENT_STATS], t['z'][0], momentum)
    return value, (metrics, {LATENT_STATS: stats})

  def evaluate(variables, batch):
    image = images(batch)
    k = eval_samples if stochastic else 1
    eps = jax.vmap(lambda key: jax.random.normal(key, (k, *latent_shape)))(image_keys(image))
    t = posterior_terms(model, net(variables), image, jnp.swapaxes(eps, 0, 1), likelihood,
                        levels, scale)
    at_mean = model.apply(net(variables), t['mean'], method='decode')
    err = mean_image(at_mean, likelihood, channels, levels) / 255.0 - image / 255.0
    z0 = t['z'][0].reshape(image.shape[0], -1)
    result = {'recon_nll': -t['log_px_z'].mean(0), 'mse': per_example(err ** 2) / dims,
              'latent_mean': z0.mean(-1), 'latent_sq': (z0 ** 2).mean(-1)}
    if stochastic:
      nelbo = result['recon_nll'] + t['kl']
      iwae = -iwae_bound(t['log_w'])
      result.update(kl=t['kl'], nelbo=nelbo, iwae_nll=iwae)
      if likelihood == 'categorical':
        result['bits_per_dim'] = iwae / (dims * math.log(2.0))
    return result

  def finalize_eval(sums, count):
    out = {k: v / count for k, v in sums.items() if k != 'latent_sq'}
    out['latent_std'] = np.sqrt(max(sums['latent_sq'] / count - out['latent_mean'] ** 2, 0.0))
    return out

  def no_prior():
    return ConfigError(f'{config.model_name} with stochastic=False is a deterministic '
                       f'autoencoder: it has no prior, so sampling is not defined (train '
                       f'the VAE, stochastic=True)')

  def prompt_batch(prompts, num_samples):
    if not stochastic:
      raise no_prior()
    return unconditional_rows(prompts, num_samples)

  def sample(variables, batch, rng, *, row_ids, temperature: float = 1.0, **unused):
    """Prior draws decoded to their mean image: {'images': (B, H, W, C) uint8}."""
    del batch, unused
    if not stochastic:
      raise no_prior()
    z = jax.vmap(lambda k: jax.random.normal(k, latent_shape))(row_keys(rng, row_ids))
    out = model.apply(net(variables), z * temperature, method='decode')
    return {'images': to_pixels(mean_image(out, likelihood, channels, levels), likelihood,
                                levels)}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=lambda n: labelled_images(n, input_size, channels),
              sample=sample, prompt_batch=prompt_batch)


# Tiny sizes for tests.
TINY = dict(latent_dim=2, features=(4,), hidden=8)
