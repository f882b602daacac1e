"""Video diffusion transformer: DiT (Peebles & Xie 2023) over spacetime patches, as Latte
(Ma et al. 2024, "Latte: latent diffusion transformer for video generation") and Sora's
report ("Video generation models as world simulators", 2024) use it, and latent video
diffusion over the causal 3-D VAE of arch/generative/video_vae.py (`make`).

The network (`Model`, `config.model_name = 'generative.video_dit'`):
- patchify: non-overlapping pt x p x p tubelets of the (latent) video (ViViT's tubelet
  embedding, Arnab et al. 2021), each flattened in (frame, row, column, channel) order and
  projected to width D (Xavier-uniform, as DiT's patch embedding), plus a FIXED 3-D sin-cos
  position table (`sincos_3d`: channels split between the frame, row and column indices,
  each a 1-D sin-cos code; computed, not a parameter);
- conditioning c = timestep embedding + label embedding, and N adaLN-Zero blocks and the
  zero-initialised final layer: arch/generative/dit.py's TimestepEmbed, Block and
  FinalLayer, imported, so the network outputs exactly zero at init;
- attention: 'joint' (every token attends to every token of the clip: Sora-style
  spacetime attention) or 'factorized' (Latte's variant 1: blocks alternate spatial
  attention within a frame and temporal attention across frames at one position);
- unpatchify back to (B, T, H, W, out_channels).

The objective (`make`, `config.task = 'generative.video_dit'`):
- latent diffusion when `config.frozen.vae` names a video VAE run (configs/
  video_vae_digits.py): x0 = the VAE posterior mean of the clip, standardised per latent
  channel with the VAE run's running statistics ('latent_stats'); samples are decoded
  through the frozen VAE. Without a frozen VAE it is pixel-space diffusion of the clips in
  [-1, 1] (tubelets of pixels);
- DDPM/IDDPM/DDIM and classifier-free guidance on the digit label, all diffusion.py's;
- samples {'videos': (B, T, H, W, C) uint8}.

A sample metric (eval, when `config.frozen.classifier` names the digits classifier run,
configs/lenet_digits.py): the Fréchet distance of the 'fd' evaluator sees 8x8 images, not
clips, so instead each eval clip's label conditions one sample (its noise a fixed function
of the clip), every frame is cropped to the 8x8 window holding the most ink (ties broken
toward the ink's centroid) and classified, and the eval reports per clip
  digit_accuracy     the fraction of frames classified as the conditioning label;
  digit_consistency  the fraction of frames that agree with the clip's majority class;
  clip_accuracy      whether the majority class is the label;
and `real_*` the same numbers on the eval clips themselves (the ceiling of the crop +
classifier pipeline).

Sizes: DiT's S/B/L/XL widths and depths (`VARIANTS`, e.g. 'XL/1x2' = DiT-XL with 1x2x2
tubelets, Latte-XL's patching), and 'tiny' for tests.

Dimension key: B batch, T frames, H W height and width, C channels, N tokens, D width,
K classes.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.generative import to_uint8, to_unit
from arch.generative import diffusion, video_vae
from arch.generative.dit import Block, FinalLayer, TimestepEmbed
from arch.generative.vae import latent_moments
from arch.task import ConfigError, Task, parse_options

Dtype = Any
ATTENTION = ('joint', 'factorized')


# ---------------------------------------------------------------------------- helpers


def sincos_1d(pos, dim: int, max_wavelength: float = 10_000.0) -> np.ndarray:
  """(len(pos), dim) sin half then cos half, as each axis of arch.layers.embed.sincos_2d."""
  rate = max_wavelength ** (-np.arange(dim // 2, dtype=np.float64) / (dim // 2))
  angle = np.asarray(pos, np.float64).reshape(-1)[:, None] * rate[None]
  return np.concatenate([np.sin(angle), np.cos(angle)], axis=1)


def sincos_3d(grid_t: int, grid_h: int, grid_w: int, dim: int,
              max_wavelength: float = 10_000.0) -> np.ndarray:
  """Fixed 3-D position table (grid_t * grid_h * grid_w, dim) in (t, h, w) row-major order:
  the row and the column each get 2 * floor(dim / 6) channels, the frame the rest (first
  the frame's code, then the row's, then the column's)."""
  if dim % 2:
    raise ValueError(f'a 3-D sin-cos table needs an even dim, got {dim}')
  d_s = 2 * (dim // 6)
  d_t = dim - 2 * d_s
  t, h, w = np.meshgrid(np.arange(grid_t), np.arange(grid_h), np.arange(grid_w),
                        indexing='ij')
  parts = [sincos_1d(t, d_t, max_wavelength), sincos_1d(h, d_s, max_wavelength),
           sincos_1d(w, d_s, max_wavelength)]
  return np.concatenate(parts, axis=1).astype(np.float32)


def patchify(x_BTHWC, pt: int, p: int):
  """(B, T, H, W, C) -> (B, T/pt * H/p * W/p, pt * p * p * C): tubelets in (t, h, w)
  row-major order, each flattened in (frame, row, column, channel) order."""
  b, t, h, w, c = x_BTHWC.shape
  x = x_BTHWC.reshape(b, t // pt, pt, h // p, p, w // p, p, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, (t // pt) * (h // p) * (w // p), pt * p * p * c)


def unpatchify(x_BNK, pt: int, p: int, t: int, h: int, w: int):
  """The inverse of patchify for a (t, h, w) video: (B, N, pt * p * p * C) -> (B, t, h, w, C)."""
  b, _, k = x_BNK.shape
  c = k // (pt * p * p)
  x = x_BNK.reshape(b, t // pt, h // p, w // p, pt, p, p, c)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, t, h, w, c)


# ---------------------------------------------------------------------------- the network


class Model(nn.Module):
  """Video DiT: (x (B, T, H, W, C), t (B,), label (B,)) -> (B, T, H, W, out_channels) with out_channels, float32."""
  hidden_dim: int = 1152
  depth: int = 28
  num_heads: int = 16
  patch_size: int = 2
  temporal_patch: int = 1
  attention: str = 'joint'  # or 'factorized' (Latte: spatial and temporal blocks alternate)
  mlp_ratio: float = 4.0
  num_classes: int = 1000  # 0: unconditional
  class_dropout: bool = True  # a null-class row (label num_classes) for guidance
  learn_sigma: bool = True
  out_channels: Optional[int] = None  # set by the diffusion objective
  frequency_dim: int = 256
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, t_B, label_B=None, context_BSE=None, *, train: bool = False):
    del train  # no dropout; label dropout for guidance is the objective's
    if context_BSE is not None:
      raise ValueError('the video DiT conditions on the timestep and a class label only')
    if self.attention not in ATTENTION:
      raise ValueError(f'unknown attention {self.attention!r}; valid: {", ".join(ATTENTION)}')
    if x.ndim != 5:
      raise ValueError(f'the video DiT takes videos (B, T, H, W, C), got shape {x.shape}')
    x_BTHWC = x
    b, t, h, w, c = x_BTHWC.shape
    pt, p, d = self.temporal_patch, self.patch_size, self.hidden_dim
    if t % pt or h % p or w % p:
      raise ValueError(f'video {t}x{h}x{w} is not a multiple of the tubelet {pt}x{p}x{p}')
    gt, gh, gw = t // pt, h // p, w // p
    xavier = nn.initializers.xavier_uniform()
    embed = nn.Dense(d, dtype=self.dtype, param_dtype=self.param_dtype, name='patch_embed',
                     kernel_init=nn.with_logical_partitioning(xavier, (None, 'embed')),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                            ('embed',)))
    x_BND = embed(patchify(x_BTHWC.astype(self.dtype), pt, p))
    x_BND = x_BND + jnp.asarray(sincos_3d(gt, gh, gw, d), self.dtype)[None]

    c_BD = TimestepEmbed(d, self.frequency_dim, self.dtype, self.param_dtype,
                         name='t_embed')(t_B)
    if self.num_classes:
      rows = self.num_classes + int(self.class_dropout)
      if label_B is None:
        if not self.class_dropout:
          raise ValueError('class-conditional without a null class: pass label_B')
        label_B = jnp.full((b,), self.num_classes, jnp.int32)
      table = nn.Embed(rows, d, dtype=self.dtype, param_dtype=self.param_dtype,
                       name='label_embed', embedding_init=nn.with_logical_partitioning(
                           nn.initializers.normal(0.02), ('vocab', 'embed')))
      c_BD = c_BD + table(jnp.asarray(label_B, jnp.int32))
    elif label_B is not None:
      raise ValueError('this video DiT is unconditional (num_classes=0) and takes no label_B')

    s = gh * gw
    for i in range(self.depth):
      block = Block(self.num_heads, self.mlp_ratio, self.dtype, self.param_dtype,
                    name=f'block{i}')
      if self.attention == 'joint':
        x_BND = block(x_BND, c_BD)
      elif i % 2 == 0:  # spatial: the tokens of one frame
        y = block(x_BND.reshape(b * gt, s, d), jnp.repeat(c_BD, gt, axis=0))
        x_BND = y.reshape(b, gt * s, d)
      else:  # temporal: one position across frames
        y = x_BND.reshape(b, gt, s, d).transpose(0, 2, 1, 3).reshape(b * s, gt, d)
        y = block(y, jnp.repeat(c_BD, s, axis=0))
        x_BND = y.reshape(b, s, gt, d).transpose(0, 2, 1, 3).reshape(b, gt * s, d)
    out_c = self.out_channels or (2 * c if self.learn_sigma else c)
    x_BNK = FinalLayer(pt * p * p * out_c, self.dtype, self.param_dtype,
                       name='final')(x_BND, c_BD)
    return unpatchify(x_BNK, pt, p, t, h, w).astype(jnp.float32)


def _dit(depth, width, heads, pt, p):
  return dict(depth=depth, hidden_dim=width, num_heads=heads, temporal_patch=pt,
              patch_size=p)


_SIZES = {'S': (12, 384, 6), 'B': (12, 768, 12), 'L': (24, 1024, 16), 'XL': (28, 1152, 16)}
# DiT's widths and depths with pt x p x p tubelets: 'S/1x2', ..., 'XL/2x2'.
VARIANTS = {f'{name}/{pt}x{p}': _dit(*size, pt, p) for name, size in _SIZES.items()
            for pt in (1, 2) for p in (1, 2)}
VARIANTS['tiny'] = _dit(2, 32, 2, 1, 2)


# ---------------------------------------------------------------------------- the metric


def crop_digits(frames_NHWC, size: int = 8):
  """The size x size window of each frame holding the most ink, ties broken toward the
  window centred on the ink's centroid: (N, H, W, C) uint8 -> (N, size, size, C) uint8."""
  n, h, w, c = frames_NHWC.shape
  ink = frames_NHWC.astype(jnp.float32).sum(-1)  # (N, H, W)
  cs = jnp.pad(jnp.cumsum(jnp.cumsum(ink, 1), 2), ((0, 0), (1, 0), (1, 0)))
  box = (cs[:, size:, size:] - cs[:, :-size, size:] - cs[:, size:, :-size]
         + cs[:, :-size, :-size])  # (N, H - size + 1, W - size + 1) window sums
  total = jnp.maximum(ink.sum((1, 2)), 1e-6)
  cy = (ink.sum(2) * jnp.arange(h)).sum(1) / total - (size - 1) / 2
  cx = (ink.sum(1) * jnp.arange(w)).sum(1) / total - (size - 1) / 2
  ys, xs = jnp.arange(h - size + 1), jnp.arange(w - size + 1)
  dist = (ys[None, :, None] - cy[:, None, None]) ** 2 + (xs[None, None, :] - cx[:, None, None]) ** 2
  score = box - 1e-3 * dist  # ink is in [0, 255] per pixel: the distance only breaks ties
  best = jnp.argmax(score.reshape(n, -1), axis=1)
  y0, x0 = best // (w - size + 1), best % (w - size + 1)
  return jax.vmap(lambda f, y, x: jax.lax.dynamic_slice(f, (y, x, 0), (size, size, c)))(
      frames_NHWC, y0, x0)


def digit_metrics(classify, videos_BTHWC, label_B) -> dict:
  """Per clip: digit_accuracy, digit_consistency, clip_accuracy (see the module doc);
  classify(images (N, 8, 8, C) uint8) -> logits (N, K)."""
  b, t = videos_BTHWC.shape[:2]
  crops = crop_digits(videos_BTHWC.reshape(b * t, *videos_BTHWC.shape[2:]))
  logits = classify(crops)
  k = logits.shape[-1]
  pred_BT = logits.argmax(-1).reshape(b, t)
  majority = jax.nn.one_hot(pred_BT, k).sum(1).argmax(-1)
  label_B = label_B.astype(jnp.int32)
  return {'digit_accuracy': (pred_BT == label_B[:, None]).mean(1),
          'digit_consistency': (pred_BT == majority[:, None]).mean(1),
          'clip_accuracy': (majority == label_B).astype(jnp.float32)}


# ---------------------------------------------------------------------------- objective


@dataclasses.dataclass(frozen=True)
class Options(diffusion.ProcessOptions):
  """The video DiT's task_kwargs: diffusion.py's noise process and, for pixel diffusion
  (no frozen VAE; with one, the clips' shape is the VAE run's), the clips' shape."""
  frames: int = 8  # T
  input_size: tuple = (16, 16)  # (H, W)
  channels: int = 1


def make(config) -> Task:
  """`config.task = 'generative.video_dit'`; latent diffusion over `config.frozen.vae`
  (a generative.video_vae run) or, without it, pixel diffusion of task_kwargs frames,
  input_size, channels; task_kwargs: `Options`."""
  opts = parse_options(Options, config)
  frozen = config.get('frozen') or {}
  for name in frozen:
    if name not in ('vae', 'classifier'):
      raise ConfigError(f'config.frozen.{name}: the video DiT reads frozen runs '
                        f"'vae' and 'classifier' only")
    if not frozen[name].get('config'):
      raise ConfigError(f'config.frozen.{name} is not resolved (the loop loads its spec)')
  extra = tuple(frozen)
  inits = {}
  if 'vae' in frozen:
    vae_config = frozen.vae.config
    vae, vshape, lshape = video_vae.build_vae(vae_config)
    given = config.get('task_kwargs') or {}
    mine = dict(frames=opts.frames, input_size=tuple(opts.input_size), channels=opts.channels)
    for key, value in zip(mine, (vshape[0], tuple(vshape[1:3]), vshape[3])):
      if key in given and mine[key] != value:  # the clips are the VAE run's
        raise ConfigError(f'task_kwargs.{key}={mine[key]!r} but the frozen VAE run\'s '
                          f'clips have {key} {value!r}')
    inits['vae'] = video_vae.make(vae_config).init
    shape = tuple(lshape)
    clip = False

    def moments(variables):
      mu, std = latent_moments(variables['vae'])
      return mu, jnp.maximum(std, 1e-6)

    def to_x0(variables, batch):
      mean, _ = vae.apply({k: v for k, v in variables['vae'].items() if k == 'params'},
                          to_unit(batch['video']), method='encode')
      mu, std = moments(variables)
      return (mean - mu) / std

    def decode(variables, x0):
      mu, std = moments(variables)
      z = x0 * std + mu
      return vae.apply({'params': variables['vae']['params']}, z, method='decode')
  else:
    vshape = (int(opts.frames), *tuple(opts.input_size), int(opts.channels))
    shape = vshape
    clip = True
    to_x0 = lambda variables, batch: to_unit(batch['video'])
    decode = lambda variables, x0: x0

  classifier = None
  if 'classifier' in frozen:
    clf_config = frozen.classifier.config
    classifier = arch.load(clf_config.task, 'make').make(clf_config)
    if classifier.features is None:
      raise ConfigError(f'the frozen classifier {frozen.classifier.spec!r} has no features')
    clf_batch = {k: jnp.zeros(v.shape, v.dtype)
                 for k, v in classifier.example_batch(1).items()}
    inits['classifier'] = lambda rng, batch: classifier.init(rng, clf_batch)

  def check(batch):
    if tuple(batch['video'].shape[1:]) != vshape:
      raise ValueError(f'videos of shape {tuple(batch["video"].shape[1:])}; the task is built '
                       f'for {vshape}')
    return batch

  def init_extra(rng, batch):
    keys = jax.random.split(rng, max(len(inits), 1))
    return {name: fn(k, batch) for (name, fn), k in zip(inits.items(), keys)}

  base = diffusion.build(
      config, opts, shape=shape, to_x0=lambda v, b, rng=None: to_x0(v, check(b)),
      from_x0=lambda v, x0: {'videos': to_uint8(decode(v, x0))},
      noise_key=lambda b: video_vae.video_keys(b['video']),
      example_batch=lambda n: video_vae.labelled_videos(n, vshape),
      init_extra=init_extra if inits else None, extra_collections=extra, clip_x0=clip)

  def classify(variables, images):
    out = classifier.features(variables['classifier'], {'image': images})
    return out['logits'] if isinstance(out, dict) else out

  def evaluate(variables, batch):
    result = dict(base.evaluate(variables, batch))
    if classifier is not None:
      # One sample per eval clip, for its label, its noise a function of the clip alone.
      row_ids = jax.lax.bitcast_convert_type(video_vae.video_ids(batch['video']), jnp.int32)
      videos = base.sample(variables, {'label': batch['label']}, jax.random.key(0),
                           row_ids=row_ids)['videos']
      fn = lambda images: classify(variables, images)
      result.update(digit_metrics(fn, videos, batch['label']))
      real = digit_metrics(fn, batch['video'], batch['label'])
      result.update({f'real_{k}': v for k, v in real.items()})
    return result

  return base._replace(evaluate=evaluate)
