"""Latent diffusion (Rombach et al. 2022, "High-resolution image synthesis with latent
diffusion models"): the diffusion objective of arch/generative/diffusion.py run on the
latents of a frozen KL autoencoder (arch/generative/autoencoder_kl.py, trained by the
objective of arch/generative/vae.py), the first stage, whose decoder turns sampled latents
back into images.

The first stage is another run of this codebase, named in the config as a frozen model:
`config.frozen.vae = dict(spec='configs/vae_digits.py:model=kl', workdir='')`. The loop
resolves the spec, trains that run first when its workdir (default WORKDIR/frozen_vae)
holds no checkpoint, and restores its variables ({'params', 'latent_stats'}) into the
non-parameter collection 'vae', which no optimizer touches and the loss returns unchanged;
the objective reads it through `stop_gradient`, so it gets no gradient either.

x0, the diffusion model's data: z ~ q(z | x) = N(mean, exp(logvar)) from the encoder,
times the scale factor s (SD's `get_first_stage_encoding`: a posterior draw times
0.18215). A draw rather than the mean, as SD does: the decoder was trained on draws, and
the draws spread each training image's latent a little, so the denoiser does not see a
finite set of points. On the digits KL run (beta 1e-3) the posterior std is about 0.01 of
the latents' std (0.011 against 1.16 on the test split), so there the choice changes
little; `task_kwargs.posterior='mean'` uses the mean. Training draws fresh noise every step;
eval's draw is a fixed function of the image (so evals compare across steps). s = 1 / std
of the run's latents (vae.latent_scale, from its 'latent_stats' collection; SD's 0.18215
is that number for SD's own data), or `task_kwargs.latent_scale` when set; latents are
scaled, not centred (SD 1.x's convention). The sampler's x0 is not clipped (latents are
not in [-1, 1]); samples are z = x0 / s decoded by the frozen decoder to its mean image
(vae.mean_image: the Laplace location for the KL run), uint8.

The denoiser is any network of the denoiser interface (diffusion.py): the diffusion U-Net
or DiT, over latents (H / f, W / f, latent_channels). Eval reports `loss` (the training
MSE at an image's fixed timestep and noise); diffusion.py's `bits_per_dim` is a bound for
256-level pixels and is not reported for latents.

Config: `config.task = 'generative.ldm'`, `config.frozen.vae`, and task_kwargs `Options`:
diffusion.py's `ProcessOptions` (num_timesteps, schedule, prediction, variance,
cfg_dropout, vlb_weight; not input_size / channels, which come from the frozen run, nor
clip_x0) plus `latent_scale` (0: the run's) and `posterior` ('sample' | 'mean').

Dimension key: B batch, H W C image, h w c latent.
"""

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

import arch
from arch.generative import diffusion, vae
from arch.images import labelled_images
from arch.task import ConfigError, Task, parse_options

VAE = 'vae'  # the collection the loop restores the frozen autoencoder run into
POSTERIORS = ('sample', 'mean')


@dataclasses.dataclass(frozen=True)
class Options(diffusion.ProcessOptions):
  """Latent diffusion's task_kwargs: the noise process's and the first stage's use."""
  latent_scale: float = 0.0  # x0 = latent_scale * z; 0: 1 / std of the run's latents
  posterior: str = 'sample'  # x0 from a posterior draw ('sample') or its 'mean'


def first_stage(vcfg):
  """(network, vae Task, image shape, likelihood kwargs) of the frozen autoencoder run's
  config, the network built as arch/generative/vae.py builds it."""
  if vcfg.get('task') != 'generative.vae':
    raise ConfigError(f"config.frozen.vae must be a generative.vae run (e.g. "
                      f"'configs/vae_digits.py:model=kl'), got task {vcfg.get('task')!r}")
  vopts = parse_options(vae.Options, vcfg)  # the run's options, as its task reads them
  input_size = tuple(vopts.input_size)
  channels = int(vopts.channels)
  lik = dict(likelihood=vopts.likelihood, levels=int(vopts.levels))
  overrides = {'out_channels': vae.output_channels(lik['likelihood'], channels, lik['levels'])}
  if 'input_size' in arch.model_fields(vcfg.model_name):
    overrides['input_size'] = input_size
  return (arch.model_from_config(vcfg, **overrides), vae.make(vcfg), (*input_size, channels),
          lik)


def scale_of(vae_variables, fixed: float = 0.0):
  """The latent scale factor: `fixed` when > 0, else 1 / std of the run's latents (1 for
  a run that has no statistics yet, e.g. an untrained init)."""
  if fixed > 0:
    return jnp.float32(fixed)
  seen = vae_variables[vae.LATENT_STATS]['weight'] > 0
  return jnp.where(seen, vae.latent_scale(vae_variables), 1.0)


def encode(net, vae_variables, image_BHWC, eps_Bhwc=None, fixed_scale: float = 0.0):
  """uint8 images -> x0 = s * z (B, h, w, c), z the posterior mean + exp(logvar / 2) eps
  (the mean when eps is None)."""
  v = jax.lax.stop_gradient(vae_variables)
  net_vars = {k: x for k, x in v.items() if k != vae.LATENT_STATS}
  mean, logvar = net.apply(net_vars, vae.to_input(image_BHWC), method='encode')
  z = mean if eps_Bhwc is None or logvar is None else mean + jnp.exp(0.5 * logvar) * eps_Bhwc
  return scale_of(v, fixed_scale) * z


def decode(net, vae_variables, x0_Bhwc, likelihood: str, levels: int, channels: int,
           fixed_scale: float = 0.0):
  """x0 = s * z -> uint8 images (B, H, W, C): the decoder's mean image at z = x0 / s."""
  v = jax.lax.stop_gradient(vae_variables)
  net_vars = {k: x for k, x in v.items() if k != vae.LATENT_STATS}
  out = net.apply(net_vars, x0_Bhwc / scale_of(v, fixed_scale), method='decode')
  return vae.to_pixels(vae.mean_image(out, likelihood, channels, levels), likelihood, levels)


class Codec(NamedTuple):
  """The frozen first stage as latent diffusion reads it (`codec`)."""
  task: Task           # the autoencoder run's task (its init fills the VAE collection)
  image_shape: tuple   # (H, W, C) of the images it encodes
  shape: tuple         # (h, w, c) of the latents, x0's shape
  to_x0: Callable      # (variables, batch, rng=None) -> x0 = s z (B, h, w, c)
  decode: Callable     # (variables, x0) -> uint8 images (B, H, W, C)


def codec(vcfg, posterior: str = 'sample', fixed_scale: float = 0.0) -> Codec:
  """The first stage of the frozen autoencoder run `vcfg` (read from the VAE collection):
  x0 = s z with z a posterior draw (`posterior='sample'`: fresh noise given an rng, in
  training; a fixed function of the image without, in eval) or the posterior mean, and
  samples decoded to the decoder's mean image. Shared by latent diffusion and text-to-image."""
  if posterior not in POSTERIORS:
    raise ConfigError(f'unknown task_kwargs.posterior {posterior!r}; valid: '
                      f'{", ".join(POSTERIORS)}')
  if fixed_scale < 0:
    raise ConfigError(f'task_kwargs.latent_scale must be >= 0 (0: the run\'s), got '
                      f'{fixed_scale}')
  net, vae_task, image_shape, lik = first_stage(vcfg)
  image_spec = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  latent = jax.eval_shape(
      lambda x: net.init_with_output(jax.random.key(0), x, method='encode')[0][0], image_spec)
  if len(latent.shape) != 4:
    raise ConfigError(f'latent diffusion needs spatial latents (B, h, w, c); the frozen '
                      f'{vcfg.model_name} encodes to {latent.shape} (use '
                      f'generative.autoencoder_kl, configs/vae_digits.py:model=kl)')
  shape = tuple(latent.shape[1:])

  def fixed_eps(image_BHWC):
    """Eval's posterior noise: a fixed function of each image (not the diffusion noise)."""
    return jax.vmap(lambda k: jax.random.normal(k, shape))(
        diffusion.image_keys(image_BHWC, seed=1))

  def to_x0(variables, batch, rng=None):
    image = batch['image']
    if tuple(image.shape[1:]) != image_shape:
      raise ValueError(f'images of shape {tuple(image.shape[1:])}; the frozen autoencoder '
                       f'is built for {image_shape}')
    eps = None
    if posterior == 'sample':
      eps = (fixed_eps(image) if rng is None
             else jax.random.normal(rng, (image.shape[0], *shape)))
    return encode(net, variables[VAE], image, eps, fixed_scale)

  def decode_x0(variables, x0):
    return decode(net, variables[VAE], x0, lik['likelihood'], lik['levels'], image_shape[-1],
                  fixed_scale)

  return Codec(vae_task, image_shape, shape, to_x0, decode_x0)


def make(config) -> Task:
  """Latent diffusion of uint8 images batch['image'] (and batch['label'] for a
  class-conditional denoiser). Train metrics `loss` (and `mse`, `vlb` with a learned
  variance); eval per example `loss`."""
  for key in ('input_size', 'channels'):
    if key in (config.get('task_kwargs') or {}):
      raise ConfigError(f'task_kwargs.{key}: the latent shape comes from the frozen run; '
                        f'set it there')
  opts = parse_options(Options, config)
  frozen = (config.get('frozen') or {}).get(VAE)
  if not frozen or not frozen.get('config'):
    raise ConfigError("generative.ldm needs its first stage: config.frozen.vae = "
                      "dict(spec='configs/vae_digits.py:model=kl', workdir='')")
  first = codec(frozen.config, opts.posterior, float(opts.latent_scale or 0.0))

  def init_extra(rng, batch):
    return {VAE: first.task.init(rng, {'image': batch['image']})}

  task = diffusion.build(
      config, opts, shape=first.shape, to_x0=first.to_x0,
      from_x0=lambda variables, x0: {'images': first.decode(variables, x0)},
      noise_key=lambda batch: diffusion.image_keys(batch['image']),
      example_batch=lambda n: labelled_images(n, first.image_shape[:2], first.image_shape[-1]),
      init_extra=init_extra, extra_collections=(VAE,), clip_x0=False)

  def evaluate(variables, batch):
    return {'loss': task.evaluate(variables, batch)['loss']}

  return task._replace(evaluate=evaluate)
