"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, "High-resolution
image synthesis with latent diffusion models"; the `AutoencoderKL` of Stable Diffusion).

Encoder: conv_in, one down block per entry of `block_out_channels` (`layers_per_block`
ResNet blocks, then a stride-2 downsampling conv except after the last block), a mid block
(ResNet block, single-head self-attention over the pixels, ResNet block), GroupNorm + SiLU,
conv_out to 2 * latent_channels (mean and log-variance). A ResNet block is GroupNorm, SiLU,
conv3x3, GroupNorm, SiLU, conv3x3, plus a 1x1 shortcut conv when the width changes. The
downsampling conv pads only the bottom and right by one and then convolves 3x3 with stride 2
and no padding, as SD does. quant_conv (1x1, 2c -> 2c) follows the encoder and
post_quant_conv (1x1, c -> c) precedes the decoder. Decoder: conv_in to the last width,
mid block, one up block per width in reverse (`layers_per_block + 1` ResNet blocks, then
nearest-neighbour x2 upsampling and a conv3x3 except after the last), GroupNorm + SiLU,
conv_out. GroupNorm epsilon 1e-6; the log-variance is clipped to [-30, 20] as in SD.

`VARIANTS['sd15']` is SD 1.5's autoencoder (block widths 128/256/512/512, 2 layers per block,
4 latent channels, GroupNorm(32), 3-channel images, f = 8): 83,653,863 parameters, exactly
diffusers' `AutoencoderKL` with that configuration. `VARIANTS['digits']` is a small one for
the 8x8 grey digits: widths 32/64, one layer per block, GroupNorm(8), 8x8x1 -> 4x4x2
latents (groups is an attribute: GroupNorm(32) needs widths divisible by 32).

API (what a latent-diffusion objective calls on the frozen variables of a run):
  encode(x_BHWC) -> (mean, logvar), each (B, H / f, W / f, latent_channels), f =
      2 ** (len(block_out_channels) - 1); x in [-1, 1].
  decode(z_BhwC) -> x (B, H, W, out_channels), the reconstruction in [-1, 1] (not clipped).
  __call__(x, sample_posterior=False) -> (decode(z), mean, logvar), z = the posterior mean
      or, with sample_posterior, a draw with the 'latent' rng.
Latents are scaled before diffusion by 1 / their std (SD's 0.18215 is that number for its
own training data, not for anything else): the objective in arch/generative/vae.py keeps
running latent statistics of a run in its 'latent_stats' collection and
`vae.latent_scale(variables)` returns the factor; its eval also reports `latent_std`.

Training (arch/generative/vae.py): SD trains this network with an L1 reconstruction loss
(with a learned scalar log-variance), LPIPS perceptual loss, a patch-GAN discriminator and a
small-weight (1e-6) KL to N(0, I). LPIPS needs a pretrained VGG and the GAN needs far more
than 1,437 8x8 images: neither can run offline on the digits, so the digits recipe is L1
(a Laplace likelihood of fixed scale) plus a small-weight KL only.

Dimension key: B batch, H W image height and width, h w latent height and width, C channels.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.layers.conv import channel_init, kernel_init

Dtype = Any
EPS = 1e-6  # SD's GroupNorm epsilon


def conv(features: int, kernel: int, name: str, dtype, param_dtype, strides: int = 1,
         padding=None):
  """A conv with PyTorch's symmetric padding (k // 2) unless `padding` is given."""
  pad = padding if padding is not None else [(kernel // 2, kernel // 2)] * 2
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides), padding=pad,
                 dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init(),
                 bias_init=channel_init(nn.initializers.zeros), name=name)


def group_norm(groups: int, name: str, dtype, param_dtype):
  return nn.GroupNorm(num_groups=groups, epsilon=EPS, dtype=dtype, param_dtype=param_dtype,
                      scale_init=channel_init(nn.initializers.ones),
                      bias_init=channel_init(nn.initializers.zeros), name=name)


class ResnetBlock(nn.Module):
  """GroupNorm, SiLU, conv3x3, GroupNorm, SiLU, conv3x3 + shortcut (1x1 conv if widths differ)."""
  features: int
  groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.silu(group_norm(self.groups, 'norm1', **kw)(x_BHWC))
    h = conv(self.features, 3, 'conv1', **kw)(h)
    h = nn.silu(group_norm(self.groups, 'norm2', **kw)(h))
    h = conv(self.features, 3, 'conv2', **kw)(h)
    if x_BHWC.shape[-1] != self.features:
      x_BHWC = conv(self.features, 1, 'conv_shortcut', **kw)(x_BHWC)
    return x_BHWC + h


class AttnBlock(nn.Module):
  """Single-head self-attention over the H * W pixels, GroupNorm first, residual."""
  groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    b, h, w, c = x_BHWC.shape
    dense = lambda name: nn.Dense(
        c, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                 ('conv_in', 'conv_out')),
        bias_init=channel_init(nn.initializers.zeros))
    y_BTC = group_norm(self.groups, 'norm', self.dtype, self.param_dtype)(x_BHWC)
    y_BTC = y_BTC.reshape(b, h * w, c)
    q, k, v = dense('query')(y_BTC), dense('key')(y_BTC), dense('value')(y_BTC)
    logits_BTS = jnp.einsum('BTC,BSC->BTS', q, k).astype(jnp.float32) / jnp.sqrt(c)
    att_BTS = jax.nn.softmax(logits_BTS, axis=-1).astype(v.dtype)  # softmax in fp32
    out_BTC = dense('out')(jnp.einsum('BTS,BSC->BTC', att_BTS, v))
    return x_BHWC + out_BTC.reshape(b, h, w, c)


class MidBlock(nn.Module):
  """ResNet block, self-attention, ResNet block at the lowest resolution."""
  groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    kw = dict(groups=self.groups, dtype=self.dtype, param_dtype=self.param_dtype)
    c = x_BHWC.shape[-1]
    x_BHWC = ResnetBlock(c, name='res0', **kw)(x_BHWC)
    x_BHWC = AttnBlock(name='attn', **kw)(x_BHWC)
    return ResnetBlock(c, name='res1', **kw)(x_BHWC)


class Encoder(nn.Module):
  """Image (B, H, W, C) -> (B, H / f, W / f, 2 * latent_channels): mean and log-variance."""
  block_out_channels: Sequence[int] = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    widths = tuple(self.block_out_channels)
    x = conv(widths[0], 3, 'conv_in', **kw)(x_BHWC)
    for i, width in enumerate(widths):
      for j in range(self.layers_per_block):
        x = ResnetBlock(width, self.groups, name=f'down{i}_res{j}', **kw)(x)
      if i < len(widths) - 1:  # SD pads bottom/right only, then a valid stride-2 conv
        x = conv(width, 3, f'down{i}_downsample', strides=2, padding=((0, 1), (0, 1)), **kw)(x)
    x = MidBlock(self.groups, name='mid', **kw)(x)
    x = nn.silu(group_norm(self.groups, 'norm_out', **kw)(x))
    return conv(2 * self.latent_channels, 3, 'conv_out', **kw)(x)


class Decoder(nn.Module):
  """Latents (B, h, w, latent_channels) -> image (B, h * f, w * f, out_channels)."""
  block_out_channels: Sequence[int] = (128, 256, 512, 512)
  layers_per_block: int = 2
  out_channels: int = 3
  groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z_BhwC):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    widths = tuple(reversed(self.block_out_channels))
    x = conv(widths[0], 3, 'conv_in', **kw)(z_BhwC)
    x = MidBlock(self.groups, name='mid', **kw)(x)
    for i, width in enumerate(widths):
      for j in range(self.layers_per_block + 1):
        x = ResnetBlock(width, self.groups, name=f'up{i}_res{j}', **kw)(x)
      if i < len(widths) - 1:  # nearest-neighbour x2, then conv3x3
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        x = conv(width, 3, f'up{i}_upsample', **kw)(x)
    x = nn.silu(group_norm(self.groups, 'norm_out', **kw)(x))
    return conv(self.out_channels, 3, 'conv_out', **kw)(x)


class AutoencoderKL(nn.Module):
  """SD's KL autoencoder: encode -> (mean, logvar) latents; decode -> image."""
  block_out_channels: Sequence[int] = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  out_channels: int = 3  # the input's channels (the image is reconstructed)
  groups: int = 32       # GroupNorm groups; every width must be a multiple
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    bad = [c for c in self.block_out_channels if c % self.groups]
    if bad:
      raise ValueError(f'AutoencoderKL: widths {bad} are not multiples of groups={self.groups}')
    shared = dict(block_out_channels=tuple(self.block_out_channels),
                layers_per_block=self.layers_per_block, groups=self.groups,
                dtype=self.dtype, param_dtype=self.param_dtype)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.encoder = Encoder(latent_channels=self.latent_channels, **shared)
    self.quant_conv = conv(2 * self.latent_channels, 1, None, **kw)
    self.post_quant_conv = conv(self.latent_channels, 1, None, **kw)
    self.decoder = Decoder(out_channels=self.out_channels, **shared)

  @property
  def downsampling(self) -> int:
    """f: H and W must be multiples of it; latents are (H / f, W / f)."""
    return 2 ** (len(self.block_out_channels) - 1)

  def encode(self, x_BHWC):
    """Image in [-1, 1] -> the posterior's (mean, logvar), each (B, h, w, latent_channels)."""
    moments = self.quant_conv(self.encoder(x_BHWC)).astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, z_BhwC):
    """Latents -> image (B, H, W, out_channels), in [-1, 1] once trained."""
    return self.decoder(self.post_quant_conv(z_BhwC)).astype(jnp.float32)

  def __call__(self, x_BHWC, sample_posterior: bool = False):
    mean, logvar = self.encode(x_BHWC)
    z = mean
    if sample_posterior:
      z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng('latent'), mean.shape)
    return self.decode(z), mean, logvar


Model = AutoencoderKL  # 'generative.autoencoder_kl'

VARIANTS = {
    # Stable Diffusion 1.x/2.x's autoencoder (f = 8, 4 latent channels): 83,653,863 params.
    'sd15': dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                 latent_channels=4, out_channels=3, groups=32),
    # 8x8x1 digits -> 4x4x2 latents.
    'digits': dict(block_out_channels=(32, 64), layers_per_block=1, latent_channels=2,
                   out_channels=1, groups=8),
    'tiny': dict(block_out_channels=(8, 8), layers_per_block=1, latent_channels=2,
                 out_channels=1, groups=4),
}
