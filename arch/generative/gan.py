"""DCGAN (Radford, Metz & Chintala 2016, "Unsupervised representation learning with deep
convolutional generative adversarial networks") with the GAN objective (Goodfellow et al.
2014) trained by alternating updates: the loop's `Task.phases`, one optimizer per network.

Generator: z (100-d, N(0, I)) -> a linear projection to a base x base x F0 map -> a
fractionally-strided 5x5 convolution of stride 2 per further width in `features`, then one
to the image channels; BatchNorm and ReLU after every layer but the last, tanh at the
output (images in [-1, 1]). The paper's LSUN generator (its Figure 1) is
`VARIANTS['lsun64']`: 4x4x1024 -> 8x8x512 -> 16x16x256 -> 32x32x128 -> 64x64x3.
Discriminator: the mirror image, 5x5 convolutions of stride 2 over the widths reversed
(128 -> 256 -> 512 -> 1024 for LSUN), LeakyReLU(0.2) everywhere, BatchNorm on every layer
but the first, then a linear map of the flattened features to one logit. As in the paper:
no pooling and no hidden fully-connected layers, all weights drawn from N(0, 0.02) (and
BatchNorm scales from N(1, 0.02), as the paper's code does); convolutions followed by
BatchNorm carry no bias. The paper trains with Adam at 2e-4, beta1 = 0.5, batch 128.

The objective: the discriminator's phase minimises the cross-entropy of real (label 1)
and generated (label 0) images, as two separate BatchNorm mini-batches as in the paper's
code; the generator's phase then draws fresh noise and minimises the non-saturating
-log D(G(z)). Each phase updates only its own network's parameters (the loop
differentiates only them) and its own BatchNorm statistics. Samples run the generator in
eval mode (running statistics), so one sample does not depend on the others in its batch.

Dimension key: B batch, Z latent, H W C image.
"""

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import arch
from arch.generative import to_uint8, to_unit
from arch.images import labelled_images
from arch.layers.conv import batch_norm
from arch.task import ConfigError, Task, parse_options, row_keys, unconditional_rows

Dtype = Any

VARIANTS = {
    # The paper's LSUN 64x64 networks (Figure 1 and the mirrored discriminator).
    'lsun64': dict(image_size=64, channels=3, features=(1024, 512, 256, 128)),
    # 8x8 grey digits: 2x2x128 -> 4x4x64 -> 8x8x1.
    'digits': dict(image_size=8, channels=1, features=(128, 64)),
    'tiny': dict(image_size=8, channels=1, features=(8, 4), latent_dim=4),
}

weight_init = nn.initializers.normal(0.02)


def _bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class Generator(nn.Module):
  """z (B, Z) -> images (B, S, S, C) in [-1, 1]."""
  image_size: int = 64
  channels: int = 3
  features: Sequence[int] = (1024, 512, 256, 128)  # from the smallest map to the largest
  kernel: int = 5
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z_BZ, *, train: bool):
    base = self.image_size // 2 ** len(self.features)
    bn = lambda name: batch_norm(train, axis_name=self.axis_name, scale_init=_bn_scale_init,
                                 dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    x = nn.Dense(base * base * self.features[0], use_bias=False, kernel_init=weight_init,
                 dtype=self.dtype, param_dtype=self.param_dtype, name='project')(z_BZ)
    x = nn.relu(bn('project_bn')(x.reshape(-1, base, base, self.features[0])))
    widths = [*self.features[1:], self.channels]
    for i, f in enumerate(widths):
      last = i == len(widths) - 1
      x = nn.ConvTranspose(f, (self.kernel, self.kernel), strides=(2, 2), padding='SAME',
                           use_bias=last, kernel_init=weight_init, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=f'deconv{i}')(x)
      x = jnp.tanh(x) if last else nn.relu(bn(f'deconv{i}_bn')(x))
    return x.astype(jnp.float32)


class Discriminator(nn.Module):
  """Images (B, S, S, C) -> logits (B,) of 'real'."""
  features: Sequence[int] = (128, 256, 512, 1024)  # from the largest map to the smallest
  kernel: int = 5
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool):
    x = x_BHWC.astype(self.dtype)
    for i, f in enumerate(self.features):
      x = nn.Conv(f, (self.kernel, self.kernel), strides=(2, 2), padding='SAME',
                  use_bias=i == 0, kernel_init=weight_init, dtype=self.dtype,
                  param_dtype=self.param_dtype, name=f'conv{i}')(x)
      if i:
        x = batch_norm(train, axis_name=self.axis_name, scale_init=_bn_scale_init,
                       dtype=self.dtype, param_dtype=self.param_dtype, name=f'conv{i}_bn')(x)
      x = nn.leaky_relu(x, 0.2)
    logit = nn.Dense(1, kernel_init=weight_init, dtype=self.dtype,
                     param_dtype=self.param_dtype, name='logit')(x.reshape(x.shape[0], -1))
    return logit[:, 0].astype(jnp.float32)


class Model(nn.Module):
  """The generator and discriminator as the parameter groups 'generator' and
  'discriminator' (entry points `generate`, `discriminate`)."""
  image_size: int = 64
  channels: int = 3
  features: Sequence[int] = (1024, 512, 256, 128)
  latent_dim: int = 100
  kernel: int = 5
  axis_name: Optional[str] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    n = len(self.features)
    if self.image_size % 2 ** n or self.image_size < 2 ** n:
      raise ValueError(f'DCGAN with {n} upsamplings needs an image size divisible by '
                       f'{2 ** n}; got {self.image_size}')
    common = dict(kernel=self.kernel, axis_name=self.axis_name, dtype=self.dtype,
                  param_dtype=self.param_dtype)
    self.generator = Generator(self.image_size, self.channels, tuple(self.features), **common)
    self.discriminator = Discriminator(tuple(reversed(self.features)), **common)

  def generate(self, z_BZ, *, train: bool):
    return self.generator(z_BZ, train=train)

  def discriminate(self, x_BHWC, *, train: bool):
    return self.discriminator(x_BHWC, train=train)

  def __call__(self, z_BZ, *, train: bool = False):
    """Initialises both networks: D(G(z))."""
    return self.discriminate(self.generate(z_BZ, train=train), train=train)


@dataclasses.dataclass(frozen=True)
class Options:
  """The GAN's task_kwargs (image shapes come from config.model)."""
  disc_steps: int = 1  # discriminator phases per generator phase


def make(config) -> Task:
  """`config.task = 'generative.gan'`, `config.model_name = 'generative.gan'`. Phases:
  'discriminator' then 'generator' (`task_kwargs.disc_steps` discriminator phases per
  generator phase). Train metrics per phase: discriminator/{loss, d_real, d_fake},
  generator/{loss, d_fake} (d_*: mean D probability of 'real'); eval per test image:
  `d_real` and, on as many generated images, `d_fake` (both in eval mode)."""
  opts = parse_options(Options, config)
  disc_steps = int(opts.disc_steps)
  if disc_steps < 1:
    raise ConfigError(f'task_kwargs.disc_steps must be >= 1, got {disc_steps}')
  model = arch.model_from_config(config)
  if not isinstance(model, Model):
    raise ConfigError(f'the GAN objective needs generative.gan (DCGAN); config.model_name '
                      f'is {config.model_name!r}')
  shape = (model.image_size, model.image_size, model.channels)

  def images(batch):
    image = batch['image']
    if image.shape[1:] != shape:
      raise ValueError(f'images are {image.shape[1:]}; the GAN is configured for {shape} '
                       f'(config.model image_size, channels)')
    return to_unit(image)

  def noise(rng, b):
    return jax.random.normal(rng, (b, model.latent_dim))

  def init(rng, batch):
    return model.init(rng, noise(rng, batch['image'].shape[0]), train=False)

  def apply(variables, method, x):
    """One network in train mode; (output, its updated batch statistics)."""
    out, updates = model.apply(variables, x, train=True, method=method,
                               mutable=['batch_stats'])
    return out, updates['batch_stats']

  def disc_loss(variables, batch, rng):
    x = images(batch)
    fake, _ = apply(variables, 'generate', noise(rng, x.shape[0]))
    real_logit, stats = apply(variables, 'discriminate', x)
    fake_logit, stats = apply({**variables, 'batch_stats': stats}, 'discriminate', fake)
    loss = (optax.sigmoid_binary_cross_entropy(real_logit, 1.0).mean()
            + optax.sigmoid_binary_cross_entropy(fake_logit, 0.0).mean())
    metrics = {'d_real': jax.nn.sigmoid(real_logit).mean(),
               'd_fake': jax.nn.sigmoid(fake_logit).mean()}
    return loss, (metrics, {'batch_stats': {**variables['batch_stats'],
                                            'discriminator': stats['discriminator']}})

  def gen_loss(variables, batch, rng):
    fake, stats = apply(variables, 'generate', noise(rng, batch['image'].shape[0]))
    logit, _ = apply(variables, 'discriminate', fake)
    loss = optax.sigmoid_binary_cross_entropy(logit, 1.0).mean()  # non-saturating
    return loss, ({'d_fake': jax.nn.sigmoid(logit).mean()},
                  {'batch_stats': {**variables['batch_stats'], 'generator': stats['generator']}})

  def evaluate(variables, batch):
    x = images(batch)
    z = jax.vmap(lambda k: jax.random.normal(k, (model.latent_dim,)))(
        row_keys(jax.random.key(0), jnp.arange(x.shape[0])))
    fake = model.apply(variables, z, train=False, method='generate')
    d = lambda v: jax.nn.sigmoid(model.apply(variables, v, train=False, method='discriminate'))
    return {'d_real': d(x), 'd_fake': d(fake)}

  def sample(variables, batch, rng, *, row_ids, temperature: float = 1.0, **unused):
    """{'images': (B, H, W, C) uint8}: G(z) with z ~ N(0, temperature^2 I) per row."""
    del batch, unused
    z = jax.vmap(lambda k: jax.random.normal(k, (model.latent_dim,)))(row_keys(rng, row_ids))
    return {'images': to_uint8(model.apply(variables, z * temperature, train=False,
                                           method='generate'))}

  phases = (('discriminator', disc_loss),) * disc_steps + (('generator', gen_loss),)
  return Task(init=init, loss=None, phases=phases, evaluate=evaluate,
              example_batch=lambda n: labelled_images(n, shape[:2], shape[2]),
              sample=sample, prompt_batch=unconditional_rows)
