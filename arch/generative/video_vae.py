"""A causal 3-D convolutional VAE for video: the tokenizer-free latent space of latent video
diffusion, as in MAGVIT-v2 (Yu et al. 2024, "Language model beats diffusion"), CogVideoX
(Yang et al. 2024, "CogVideoX: text-to-video diffusion models with an expert transformer";
its `AutoencoderKLCogVideoX`) and the Open-Sora VAE.

Causality in time. Every 3-D convolution pads only the past: kernel kt sees frames
t - kt + 1 .. t, the missing past being copies of the first frame (CogVideoX's 'first'
padding); spatial padding is the usual symmetric zero padding. So the first frame is
encoded alone, like an image, and a latent frame depends on no input frame after its
window. GroupNorm: CogVideoX normalises over (frames, height, width) of the whole clip,
which lets every frame see the statistics of later ones; `causal_norm=True` (the default
here) normalises each frame on its own (GroupNorm over height, width and the group's
channels), which keeps the network strictly causal and has the same parameters;
`causal_norm=False` is CogVideoX's.

Temporal downsampling (CogVideoX's convention): a block that compresses time averages
pairs of frames, after keeping the first frame alone when the count is odd, so
1 + 4k frames give 1 + 2k, then 1 + k (CogVideoX: 49 -> 13); an even count (the 8-frame
digits clips) is paired throughout, 8 -> 4, and latent frame k covers input frames 2k and
2k + 1 (and, through the causal convolutions, earlier ones only). The decoder mirrors it:
nearest-neighbour x2 in time (the first frame alone when the count is odd and > 1).
Spatial downsampling: pad bottom/right by one, a 3x3 stride-2 2-D conv per frame;
upsampling: nearest x2 and a 3x3 2-D conv per frame.

Network (CogVideoX's layout): encoder conv_in (causal 3x3x3), one block per entry of
`block_out_channels` with `layers_per_block` residual blocks (GroupNorm, SiLU, causal conv,
GroupNorm, SiLU, causal conv; a 1x1x1 shortcut conv where the width changes) and a
downsampler after every block but the last (the first `temporal_levels` of them also halve
time), a mid block of two residual blocks, GroupNorm + SiLU, conv_out (causal 3x3x3) to the
mean and log-variance (clipped to [-30, 20]) of `latent_channels` Gaussians. The decoder:
conv_in, mid block, one block per width in reverse with `layers_per_block + 1` residual
blocks and an upsampler after all but the last, norm, SiLU, conv_out. `spatial_norm`
(CogVideoX, after MoVQ, Zheng et al. 2022): every decoder norm is GroupNorm(f) * conv_y(z) +
conv_b(z), with z the latents resized (nearest, first frame apart) to f's grid and conv_y,
conv_b 1x1x1 convs; without it the decoder uses plain GroupNorm like the encoder.

Sizes (`VARIANTS`): 'cogvideox' is CogVideoX's VAE (diffusers' `AutoencoderKLCogVideoX`
default config: widths 128/256/256/512, 3 layers per block, 16 latent channels, GroupNorm(32),
temporal compression 4, spatial 8, 3-channel video): 215,583,907 parameters, exactly
diffusers' count (tests/test_video.py). 'digits' for the 8x16x16x1 moving digits
(-> 4x4x4x8 latents), 'tiny' for tests.

The objective (`make`, `config.task = 'generative.video_vae'`): batches hold
'video' (B, T, H, W, C) uint8, mapped to [-1, 1]; loss = the reconstruction error of one
reparameterised posterior draw, summed per clip (`task_kwargs.reconstruction`: 'l1', the
SD/CogVideoX autoencoders' pixel loss, a Laplace likelihood of scale 1; or 'l2', a
Gaussian one, which the digits config uses: with L1 the mostly black clips pull the
decoder to black, the pixel-wise median, and 1,500 steps reached only PSNR 12.4) + beta *
KL(q(z|x) || N(0, I)) (summed per clip; beta small, `task_kwargs.beta`, default 1e-3). No
perceptual or GAN loss (they need pretrained networks and much more data than these
clips). Running per-channel latent statistics in the 'latent_stats' collection
(arch/generative/vae.py's helpers), which a latent diffusion model reads to standardise
the latents. Eval per clip: `mse` and `psnr` (pixels in [0, 1], at the posterior mean),
`l1`, `kl`, `latent_mean` and `latent_std`.

Dimension key: B batch, T frames, H W height and width, C channels; t h w latent grid.
"""

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch import images
from arch.generative import to_unit
from arch.generative.vae import (LATENT_STATS, init_latent_stats, kl_std_normal,
                                 update_latent_stats)
from arch.layers.conv import channel_init
from arch.task import ConfigError, Task, parse_options

Dtype = Any
EPS = 1e-6  # CogVideoX's GroupNorm epsilon


# ---------------------------------------------------------------------------- helpers


def _kernel_init(ndim: int):
  axes = (None,) * (ndim - 2) + ('conv_in', 'conv_out')
  return nn.with_logical_partitioning(nn.initializers.kaiming_normal(), axes)


def conv(features: int, kernel: Sequence[int], name: str, dtype, param_dtype, strides=None,
         padding='VALID'):
  """A conv (2-D or 3-D by len(kernel)) with the codebase's logical axes."""
  return nn.Conv(features, tuple(kernel), strides=strides, padding=padding, dtype=dtype,
                 param_dtype=param_dtype, kernel_init=_kernel_init(len(kernel) + 2),
                 bias_init=channel_init(nn.initializers.zeros), name=name)


class CausalConv3d(nn.Module):
  """A kernel^3 conv, causal in time: the past padded with copies of the first frame.
  Its kernel is (kt, kh, kw, C, F) as a 3-D conv's; it runs as one 2-D conv over the kt
  time taps stacked on channels (the same sum; XLA:CPU runs it ~2.5x faster than conv3d)."""
  features: int
  kernel: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTHWC):
    k, f = self.kernel, self.features
    b, t, h, w, c = x_BTHWC.shape
    kernel = self.param('kernel', _kernel_init(5), (k, k, k, c, f), self.param_dtype)
    bias = self.param('bias', channel_init(nn.initializers.zeros), (f,), self.param_dtype)
    x = jnp.asarray(x_BTHWC, self.dtype)
    if k > 1:
      x = jnp.concatenate([jnp.repeat(x[:, :1], k - 1, axis=1), x], axis=1)
    taps = jnp.concatenate([x[:, i:i + t] for i in range(k)], axis=-1)  # (B, T, H, W, kC)
    k2 = jnp.asarray(kernel, self.dtype).transpose(1, 2, 0, 3, 4).reshape(k, k, k * c, f)
    p = k // 2
    y = jax.lax.conv_general_dilated(taps.reshape(b * t, h, w, k * c), k2, (1, 1),
                                     ((p, p), (p, p)),
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return (y + jnp.asarray(bias, self.dtype)).reshape(b, t, h, w, f)


def causal_conv(x_BTHWC, features: int, kernel: int, name: str, dtype, param_dtype):
  return CausalConv3d(features, kernel, dtype, param_dtype, name=name)(x_BTHWC)


def per_frame(fn, x_BTHWC):
  """fn over (B * T, H, W, C) frames, reshaped back."""
  b, t = x_BTHWC.shape[:2]
  y = fn(x_BTHWC.reshape(b * t, *x_BTHWC.shape[2:]))
  return y.reshape(b, t, *y.shape[1:])


def group_norm(x_BTHWC, groups: int, causal: bool, name: str, dtype, param_dtype):
  """GroupNorm per frame (causal) or over the whole clip (CogVideoX)."""
  gn = nn.GroupNorm(num_groups=groups, epsilon=EPS, dtype=dtype, param_dtype=param_dtype,
                    scale_init=channel_init(nn.initializers.ones),
                    bias_init=channel_init(nn.initializers.zeros), name=name)
  return per_frame(gn, x_BTHWC) if causal else gn(x_BTHWC)


def nearest(x, axis: int, size: int):
  """Nearest-neighbour resize of one axis: out[i] = in[floor(i * n_in / size)] (PyTorch)."""
  n = x.shape[axis]
  return jnp.take(x, (np.arange(size) * n) // size, axis=axis)


def resize_causal(z_BTHWC, t: int, h: int, w: int):
  """Nearest resize of latents to (t, h, w), the first frame resized on its own when t is
  odd and > 1 (CogVideoX's spatial norm)."""
  spatial = lambda a: nearest(nearest(a, 2, h), 3, w)
  if t > 1 and t % 2 == 1:
    first, rest = spatial(z_BTHWC[:, :1]), spatial(z_BTHWC[:, 1:])
    return jnp.concatenate([first, nearest(rest, 1, t - 1)], axis=1)
  return spatial(nearest(z_BTHWC, 1, t))


def pool_time(x_BTHWC):
  """Average pairs of frames (the first kept alone when T is odd)."""
  b, t = x_BTHWC.shape[:2]
  if t % 2 == 1:
    first, rest = x_BTHWC[:, :1], x_BTHWC[:, 1:]
    if t == 1:
      return first
    rest = rest.reshape(b, (t - 1) // 2, 2, *rest.shape[2:]).mean(2)
    return jnp.concatenate([first, rest], axis=1)
  return x_BTHWC.reshape(b, t // 2, 2, *x_BTHWC.shape[2:]).mean(2)


def repeat_time(x_BTHWC):
  """Nearest x2 in time (the first frame alone when T is odd and > 1)."""
  t = x_BTHWC.shape[1]
  if t > 1 and t % 2 == 1:
    return jnp.concatenate([x_BTHWC[:, :1], jnp.repeat(x_BTHWC[:, 1:], 2, axis=1)], axis=1)
  if t > 1:
    return jnp.repeat(x_BTHWC, 2, axis=1)
  return x_BTHWC


# ---------------------------------------------------------------------------- blocks


class Norm(nn.Module):
  """GroupNorm, or with `spatial` (z given) MoVQ's GroupNorm(f) * conv_y(z) + conv_b(z)."""
  groups: int = 32
  causal: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTHWC, z_BthwZ=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if z_BthwZ is None:
      return group_norm(x_BTHWC, self.groups, self.causal, 'norm', **kw)
    f = x_BTHWC.shape[-1]
    z = resize_causal(z_BthwZ, *x_BTHWC.shape[1:4])
    y = causal_conv(z, f, 1, 'conv_y', **kw)
    b = causal_conv(z, f, 1, 'conv_b', **kw)
    return group_norm(x_BTHWC, self.groups, self.causal, 'norm', **kw) * y + b


class ResBlock(nn.Module):
  """norm, SiLU, causal conv3, norm, SiLU, causal conv3 + shortcut (1x1x1 conv if widths
  differ); the norms are spatial norms when the decoder passes z."""
  features: int
  groups: int = 32
  causal_norm: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTHWC, z_BthwZ=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: Norm(self.groups, self.causal_norm, name=name, **kw)
    h = nn.silu(norm('norm1')(x_BTHWC, z_BthwZ))
    h = causal_conv(h, self.features, 3, 'conv1', **kw)
    h = nn.silu(norm('norm2')(h, z_BthwZ))
    h = causal_conv(h, self.features, 3, 'conv2', **kw)
    if x_BTHWC.shape[-1] != self.features:
      x_BTHWC = causal_conv(x_BTHWC, self.features, 1, 'conv_shortcut', **kw)
    return x_BTHWC + h


class Encoder(nn.Module):
  """Video (B, T, H, W, C) -> (B, t, H / f, W / f, 2 * latent_channels)."""
  block_out_channels: Sequence[int] = (128, 256, 256, 512)
  layers_per_block: int = 3
  latent_channels: int = 16
  temporal_levels: int = 2  # the first this many downsamplers also halve time
  groups: int = 32
  causal_norm: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTHWC):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    res = dict(groups=self.groups, causal_norm=self.causal_norm, **kw)
    widths = tuple(self.block_out_channels)
    x = causal_conv(x_BTHWC, widths[0], 3, 'conv_in', **kw)
    for i, width in enumerate(widths):
      for j in range(self.layers_per_block):
        x = ResBlock(width, name=f'down{i}_res{j}', **res)(x)
      if i < len(widths) - 1:
        if i < self.temporal_levels:
          x = pool_time(x)
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1), (0, 0)))  # bottom/right only
        x = per_frame(conv(width, (3, 3), f'down{i}_downsample', strides=(2, 2), **kw), x)
    for j in range(2):
      x = ResBlock(widths[-1], name=f'mid_res{j}', **res)(x)
    x = nn.silu(group_norm(x, self.groups, self.causal_norm, 'norm_out', **kw))
    return causal_conv(x, 2 * self.latent_channels, 3, 'conv_out', **kw)


class Decoder(nn.Module):
  """Latents (B, t, h, w, latent_channels) -> video (B, T, h * f, w * f, out_channels)."""
  block_out_channels: Sequence[int] = (128, 256, 256, 512)
  layers_per_block: int = 3
  out_channels: int = 3
  temporal_levels: int = 2
  groups: int = 32
  causal_norm: bool = True
  spatial_norm: bool = True  # MoVQ/CogVideoX norms conditioned on the latents
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z_BthwZ):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    res = dict(groups=self.groups, causal_norm=self.causal_norm, **kw)
    cond = z_BthwZ if self.spatial_norm else None
    widths = tuple(reversed(self.block_out_channels))
    x = causal_conv(z_BthwZ, widths[0], 3, 'conv_in', **kw)
    for j in range(2):
      x = ResBlock(widths[0], name=f'mid_res{j}', **res)(x, cond)
    for i, width in enumerate(widths):
      for j in range(self.layers_per_block + 1):
        x = ResBlock(width, name=f'up{i}_res{j}', **res)(x, cond)
      if i < len(widths) - 1:
        if i < self.temporal_levels:
          x = repeat_time(x)
        x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
        x = per_frame(conv(width, (3, 3), f'up{i}_upsample', padding=((1, 1), (1, 1)), **kw),
                      x)
    x = nn.silu(Norm(self.groups, self.causal_norm, name='norm_out', **kw)(x, cond))
    return causal_conv(x, self.out_channels, 3, 'conv_out', **kw)


# ---------------------------------------------------------------------------- the network


class CausalVAE(nn.Module):
  """encode(video) -> (mean, logvar) latents; decode(z) -> video; both causal in time."""
  block_out_channels: Sequence[int] = (128, 256, 256, 512)
  layers_per_block: int = 3
  latent_channels: int = 16
  out_channels: int = 3
  temporal_levels: int = 2  # log2 of the temporal compression
  groups: int = 32
  causal_norm: bool = True  # False: GroupNorm over the whole clip (CogVideoX; not causal)
  spatial_norm: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    if self.temporal_levels > len(self.block_out_channels) - 1:
      raise ValueError(f'temporal_levels {self.temporal_levels} > the '
                       f'{len(self.block_out_channels) - 1} downsamplers')
    shared = dict(block_out_channels=tuple(self.block_out_channels),
                  layers_per_block=self.layers_per_block, temporal_levels=self.temporal_levels,
                  groups=self.groups, causal_norm=self.causal_norm, dtype=self.dtype,
                  param_dtype=self.param_dtype)
    self.encoder = Encoder(latent_channels=self.latent_channels, **shared)
    self.decoder = Decoder(out_channels=self.out_channels, spatial_norm=self.spatial_norm,
                           **shared)

  @property
  def downsampling(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  def latent_frames(self, frames: int) -> int:
    for _ in range(self.temporal_levels):
      frames = frames // 2 + frames % 2
    return frames

  def encode(self, x_BTHWC):
    """Video in [-1, 1] -> the posterior's (mean, logvar), (B, t, h, w, latent_channels)."""
    moments = self.encoder(x_BTHWC).astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, z_BthwZ):
    return self.decoder(z_BthwZ).astype(jnp.float32)

  def __call__(self, x_BTHWC):
    """-> (decode(mean), mean, logvar)."""
    mean, logvar = self.encode(x_BTHWC)
    return self.decode(mean), mean, logvar


Model = CausalVAE  # 'generative.video_vae'

VARIANTS = {
    # CogVideoX's VAE (diffusers AutoencoderKLCogVideoX defaults): 215,583,907 params.
    'cogvideox': dict(block_out_channels=(128, 256, 256, 512), layers_per_block=3,
                      latent_channels=16, out_channels=3, temporal_levels=2, groups=32,
                      spatial_norm=True),
    # 8x16x16x1 moving digits -> 4x4x4x8 latents (f = 4 in space, 2 in time).
    'digits': dict(block_out_channels=(8, 16, 32), layers_per_block=1, latent_channels=8,
                   out_channels=1, temporal_levels=1, groups=4, spatial_norm=False),
    'tiny': dict(block_out_channels=(4, 8), layers_per_block=1, latent_channels=2,
                 out_channels=1, temporal_levels=1, groups=2, spatial_norm=False),
}


# ---------------------------------------------------------------------------- objective


def video_ids(video_BTHWC):
  """A uint32 hash of each clip's pixels (B,)."""
  flat = video_BTHWC.reshape(video_BTHWC.shape[0], -1).astype(jnp.uint32)
  weights = jnp.arange(flat.shape[1], dtype=jnp.uint32) * jnp.uint32(2654435761) + 1
  return (flat * weights).sum(-1, dtype=jnp.uint32)


def video_keys(video_BTHWC, seed: int = 0):
  """A PRNG key per clip from its pixels alone (eval's fixed draws)."""
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(video_ids(video_BTHWC))


def labelled_videos(n: int, shape, dtype=jnp.uint8) -> dict:
  return {'video': jax.ShapeDtypeStruct((n, *shape), dtype),
          'label': jax.ShapeDtypeStruct((n,), jnp.int32)}


@dataclasses.dataclass(frozen=True)
class Options:
  """The video VAE's task_kwargs."""
  frames: int = 8  # T
  input_size: tuple = (16, 16)  # (H, W)
  channels: int = 1
  beta: float = 1e-3  # the KL weight
  stats_momentum: float = 0.99  # of the latents' running statistics ('latent_stats')
  reconstruction: str = 'l1'  # 'l1' | 'l2'


def options(config) -> Options:
  """A video VAE run's Options, validated."""
  o = parse_options(Options, config)
  if o.reconstruction not in ('l1', 'l2'):
    raise ConfigError(f"unknown task_kwargs.reconstruction {o.reconstruction!r}; "
                      f"valid: l1, l2")
  if float(o.beta) < 0 or not 0 <= float(o.stats_momentum) < 1:
    raise ConfigError(f'task_kwargs need beta >= 0 and stats_momentum in [0, 1); got '
                      f'{float(o.beta)}, {float(o.stats_momentum)}')
  return o


def build_vae(config):
  """(model, video shape (T, H, W, C), latent shape (t, h, w, Z)) of a video VAE config."""
  o = options(config)
  input_size, channels = tuple(o.input_size), int(o.channels)
  shape = (int(o.frames), *input_size, channels)
  model = arch.model_from_config(config, out_channels=channels)
  f = model.downsampling
  if any(n % f for n in input_size):
    raise ConfigError(f'task_kwargs.input_size {input_size} must be multiples of {f}')
  latent = (model.latent_frames(shape[0]), shape[1] // f, shape[2] // f, model.latent_channels)
  return model, shape, latent


def make(config) -> Task:
  """`config.task = 'generative.video_vae'`, `config.model_name = 'generative.video_vae'`;
  task_kwargs: `Options`. Train metrics: loss, l1 (per clip), kl (per clip)."""
  o = options(config)
  model, shape, latent = build_vae(config)
  beta, momentum = float(o.beta), float(o.stats_momentum)
  pixels = float(np.prod(shape))

  def videos(batch):
    v = batch['video']
    if tuple(v.shape[1:]) != shape:
      raise ValueError(f'videos of shape {tuple(v.shape[1:])}; the task is built for {shape} '
                       f'(task_kwargs frames, input_size, channels)')
    return to_unit(v)

  def net(variables):
    return {k: v for k, v in variables.items() if k != LATENT_STATS}

  def init(rng, batch):
    b = jax.tree.leaves(batch)[0].shape[0]
    variables = dict(model.init(rng, jnp.zeros((b, *shape), jnp.float32)))
    variables[LATENT_STATS] = init_latent_stats(latent[-1])
    return variables

  def per_clip(x):
    return x.reshape(x.shape[0], -1).sum(-1)

  def loss(variables, batch, rng):
    x = videos(batch)
    mean, logvar = model.apply(net(variables), x, method='encode')
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    recon = model.apply(net(variables), z, method='decode')
    l1 = per_clip(jnp.abs(recon - x)).mean()
    l2 = per_clip((recon - x) ** 2).mean()
    kl = kl_std_normal(mean, logvar).mean()
    value = (l1 if o.reconstruction == 'l1' else l2) + beta * kl
    stats = update_latent_stats(variables[LATENT_STATS], z, momentum)
    return value, ({'loss': value, 'l1': l1, 'l2': l2, 'kl': kl}, {LATENT_STATS: stats})

  def evaluate(variables, batch):
    x = videos(batch)
    recon, mean, logvar = model.apply(net(variables), x)
    err = (jnp.clip(recon, -1, 1) - x) / 2.0  # pixels in [0, 1]
    mse = per_clip(err ** 2) / pixels
    eps = jax.vmap(lambda k: jax.random.normal(k, latent))(video_keys(batch['video']))
    z = (mean + jnp.exp(0.5 * logvar) * eps).reshape(mean.shape[0], -1)
    return {'mse': mse, 'psnr': images.psnr(mse),
            'l1': per_clip(jnp.abs(recon - x)), 'kl': kl_std_normal(mean, logvar),
            'latent_mean': z.mean(-1), 'latent_sq': (z ** 2).mean(-1)}

  def finalize_eval(sums, count):
    out = {k: v / count for k, v in sums.items() if k != 'latent_sq'}
    out['latent_std'] = np.sqrt(max(sums['latent_sq'] / count - out['latent_mean'] ** 2, 0.0))
    return out

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=lambda n: labelled_videos(n, shape))
