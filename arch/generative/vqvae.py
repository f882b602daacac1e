"""VQ-VAE: a vector-quantised autoencoder (van den Oord et al. 2017, "Neural discrete
representation learning"), its codebook learned by exponential moving averages (the
paper's appendix; Razavi et al. 2019, "Generating diverse high-fidelity images with
VQ-VAE-2"), with dead-code restarts.

Network (the paper's image model at small size). Encoder: per stage a 4x4 stride-2 conv
and ReLU (`stages` of them, f = 2 ** stages), a 3x3 conv, `res_blocks` residual blocks
(ReLU, 3x3 conv to `res_width`, ReLU, 1x1 conv back), ReLU, a 1x1 conv to the code
dimension D: z_e (B, h, w, D). Quantiser: each z_e vector is replaced by its nearest of
the K codebook vectors in squared L2, z_q = e_k, k = argmin_j ||z_e - e_j||^2. Decoder: a
3x3 conv, the residual blocks, ReLU, then per stage a 4x4 stride-2 transposed conv (ReLU
between them), the last one to the image channels, x in [-1, 1].

Gradients (straight-through): the decoder reads z_e + stop_gradient(z_q - z_e), which is
z_q in value and passes d loss / d z_q unchanged to z_e; the codebook gets nothing from
the reconstruction. Loss per batch, means over elements:
  ||x - decode(z_q)||^2  +  beta ||z_e - sg(z_q)||^2 (commitment, beta 0.25)
  [+ ||sg(z_e) - z_q||^2, the codebook loss, only with codebook='loss'].
Codebook updates (codebook='ema', the default; the collection 'codebook', kept out of the
gradient and returned by the loss as an updated non-param variable): with n_k the number
of the batch's vectors assigned to code k and s_k their sum,
  N_k <- g N_k + (1 - g) n_k,  m_k <- g m_k + (1 - g) s_k   (decay g = 0.99),
  e_k = m_k / N~_k,  N~_k = (N_k + eps) / (sum_j N_j + K eps) sum_j N_j  (Laplace smoothing,
  eps 1e-5, so a code that is rarely used does not divide by ~0).
N starts at 1 and m at the initial codebook (each code has seen one point, itself), so
the first updates move codes gradually rather than jumping. No zero-debiasing.
Dead-code restarts (`restart_after` > 0, EMA only): `unused` counts the steps since a code
was last assigned; a code unused for `restart_after` steps is set to an encoder output
of the batch, drawn uniformly without replacement from its B * h * w vectors (a distinct
one per dead code, from the step's rng), with N = 1, m = e and its count reset. Under the
loop's pmap the collection is averaged over devices after each step, so a restarted code
is the mean of the devices' picks there (under jit, the default, the batch is global).

Eval, per held-out image: `mse` (pixels in [0, 1]) and `psnr` = 10 log10(1 / mse) in dB
(the mean over images of each image's PSNR), and per split from the summed code counts:
`perplexity` = exp(H(code frequencies)) (K when every code is used equally, 1 for one
code) and `codes_used` (codes assigned at least once). The sampler draws reconstructions:
one strip per eval image, input | reconstruction (`Task.prompt_examples`).

For a token model over images (a DALL·E-style Transformer reading a frozen run):
`encode_indices(model, variables, image)` -> the (B, h, w) codes of uint8 images and
`decode_indices(model, variables, codes)` -> uint8 images; `pool_image` is the task's
host preprocessing (area pooling of larger images to `input_size`).

Dimension key: B batch, H W image size, C image channels, h w code grid, D code dimension,
K codebook size, N flattened code vectors (B * h * w).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.images import psnr
from arch.layers.conv import channel_init, kernel_init
from arch.task import ConfigError, Task, parse_options

Dtype = Any
CODEBOOK = 'codebook'  # the collection of the EMA codebook and its statistics
CODEBOOKS = ('ema', 'loss')


# ---------------------------------------------------------------------------- network


def _conv(features, kernel, name, strides=1, transpose=False, dtype=jnp.float32,
          param_dtype=jnp.float32):
  cls = nn.ConvTranspose if transpose else nn.Conv
  return cls(features, (kernel, kernel), strides=(strides, strides), padding='SAME',
             dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init(),
             bias_init=channel_init(nn.initializers.zeros), name=name)


class ResBlock(nn.Module):
  """x + conv1x1(ReLU(conv3x3(ReLU(x)))), the paper's residual block."""
  hidden: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = _conv(self.hidden, 3, 'conv3', **kw)(nn.relu(x_BHWC))
    return x_BHWC + _conv(x_BHWC.shape[-1], 1, 'conv1', **kw)(nn.relu(h))


class VQVAE(nn.Module):
  """Conv encoder, a K x D codebook, conv decoder. Methods: encode, quantize, embed, decode."""
  width: int = 64       # conv features
  stages: int = 2       # stride-2 stages: f = 2 ** stages
  res_blocks: int = 2
  res_width: int = 32
  code_dim: int = 32    # D
  num_codes: int = 128  # K
  channels: int = 3     # image channels (the objective sets it)
  codebook: str = 'ema'  # 'ema': collection 'codebook' updated by the task; 'loss': a param
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    if self.codebook not in CODEBOOKS:
      raise ValueError(f'VQVAE: unknown codebook {self.codebook!r}; valid: '
                       f'{", ".join(CODEBOOKS)}')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.down = [_conv(self.width, 4, f'down{i}', strides=2, **kw) for i in range(self.stages)]
    self.enc_in = _conv(self.width, 3, 'enc_in', **kw)
    self.enc_res = [ResBlock(self.res_width, name=f'enc_res{i}', **kw)
                    for i in range(self.res_blocks)]
    self.to_code = _conv(self.code_dim, 1, 'to_code', **kw)
    self.dec_in = _conv(self.width, 3, 'dec_in', **kw)
    self.dec_res = [ResBlock(self.res_width, name=f'dec_res{i}', **kw)
                    for i in range(self.res_blocks)]
    self.up = [_conv(self.channels if i == self.stages - 1 else self.width, 4, f'up{i}',
                     strides=2, transpose=True, **kw) for i in range(self.stages)]
    # uniform in +-sqrt(3 / D): codes of about unit norm
    init = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')
    shape = (self.num_codes, self.code_dim)
    if self.codebook == 'loss':
      self.embedding = self.param('embedding', init, shape, jnp.float32)
    else:
      table = self.variable(CODEBOOK, 'embedding',
                            lambda: init(self.make_rng('params'), shape, jnp.float32))
      self.variable(CODEBOOK, 'cluster_size', lambda: jnp.ones((self.num_codes,), jnp.float32))
      self.variable(CODEBOOK, 'embed_sum', lambda: table.value)
      self.variable(CODEBOOK, 'unused', lambda: jnp.zeros((self.num_codes,), jnp.float32))
      self.embedding = table.value

  @property
  def downsampling(self) -> int:
    return 2 ** self.stages

  def encode(self, x_BHWC):
    """Image in [-1, 1] -> z_e (B, h, w, D)."""
    x = x_BHWC
    for conv in self.down:
      x = nn.relu(conv(x))
    x = self.enc_in(x)
    for block in self.enc_res:
      x = block(x)
    return self.to_code(nn.relu(x)).astype(jnp.float32)

  def quantize(self, z_BhwD):
    """-> (codes (B, h, w) int32, z_q (B, h, w, D)): the nearest codebook vectors."""
    codes = nearest_codes(z_BhwD, self.embedding)
    return codes, self.embedding[codes]

  def embed(self, codes_Bhw):
    return self.embedding[codes_Bhw]

  def decode(self, z_BhwD):
    """Quantised codes -> image (B, H, W, C) in [-1, 1] once trained."""
    x = self.dec_in(z_BhwD)
    for block in self.dec_res:
      x = block(x)
    x = nn.relu(x)
    for i, conv in enumerate(self.up):
      x = conv(x)
      if i < self.stages - 1:
        x = nn.relu(x)
    return x.astype(jnp.float32)

  def __call__(self, x_BHWC):
    """-> (reconstruction, z_e, codes), straight-through from z_q to z_e."""
    z_e = self.encode(x_BHWC)
    codes, z_q = self.quantize(z_e)
    return self.decode(straight_through(z_e, z_q)), z_e, codes


Model = VQVAE  # 'generative.vqvae'


# ---------------------------------------------------------------------------- quantiser


def nearest_codes(z_BhwD, embedding_KD):
  """argmin_k ||z - e_k||^2 over the last axis: (B, h, w) int32."""
  d = ((z_BhwD ** 2).sum(-1, keepdims=True) - 2.0 * z_BhwD @ embedding_KD.T
       + (embedding_KD ** 2).sum(-1))
  return jnp.argmin(d, axis=-1).astype(jnp.int32)


def straight_through(z_e, z_q):
  """z_q in value; the gradient passes to z_e as if the quantiser were the identity."""
  return z_e + jax.lax.stop_gradient(z_q - z_e)


def ema_update(book: dict, z_ND, codes_N, decay: float, eps: float = 1e-5) -> dict:
  """One EMA step of the codebook collection from the batch's assignments (see the module
  docstring): new cluster_size, embed_sum, embedding, unused."""
  z_ND = jax.lax.stop_gradient(z_ND)
  k = book['embedding'].shape[0]
  onehot_NK = jax.nn.one_hot(codes_N, k, dtype=jnp.float32)
  counts_K = onehot_NK.sum(0)
  cluster = decay * book['cluster_size'] + (1.0 - decay) * counts_K
  embed_sum = decay * book['embed_sum'] + (1.0 - decay) * (onehot_NK.T @ z_ND)
  total = cluster.sum()
  smoothed = (cluster + eps) / (total + k * eps) * total
  return {'embedding': embed_sum / smoothed[:, None], 'cluster_size': cluster,
          'embed_sum': embed_sum,
          'unused': jnp.where(counts_K > 0, 0.0, book['unused'] + 1.0)}


def restart_dead_codes(book: dict, z_ND, rng, restart_after: int) -> dict:
  """Codes unused for `restart_after` steps set to distinct random rows of z (N, D)
  (uniform without replacement; with replacement if N < K)."""
  n, k = z_ND.shape[0], book['embedding'].shape[0]
  pick = jax.random.choice(rng, n, (k,), replace=n < k)
  fresh_KD = jax.lax.stop_gradient(z_ND)[pick]
  dead_K = book['unused'] >= restart_after
  where = lambda new, old: jnp.where(dead_K.reshape(-1, *[1] * (old.ndim - 1)), new, old)
  return {'embedding': where(fresh_KD, book['embedding']),
          'embed_sum': where(fresh_KD, book['embed_sum']),
          'cluster_size': where(1.0, book['cluster_size']),
          'unused': where(0.0, book['unused'])}


def perplexity(counts_K):
  """exp(entropy) of the code frequencies: K for uniform use, 1 for a single code."""
  p = counts_K / jnp.maximum(counts_K.sum(), 1e-12)
  return jnp.exp(-(p * jnp.log(jnp.where(p > 0, p, 1.0))).sum())


# ---------------------------------------------------------------------------- images


def to_input(image_BHWC):
  return image_BHWC.astype(jnp.float32) / 127.5 - 1.0


def to_pixels(x_BHWC):
  return jnp.round(jnp.clip((x_BHWC + 1.0) * 127.5, 0.0, 255.0)).astype(jnp.uint8)


def pool_image(image_HWC, size):
  """Area-pools a uint8 image whose size is a multiple of `size` (H, W) to it (numpy)."""
  image = np.asarray(image_HWC)
  h, w = size
  fh, fw = image.shape[0] // h, image.shape[1] // w
  if fh < 1 or fw < 1 or (fh * h, fw * w) != image.shape[:2]:
    raise ConfigError(f'images of {image.shape[0]}x{image.shape[1]} do not pool to '
                      f'task_kwargs.input_size {h}x{w}')
  if (fh, fw) == (1, 1):
    return image
  pooled = image.reshape(h, fh, w, fw, -1).astype(np.float32).mean((1, 3))
  return np.round(pooled).astype(np.uint8)


def encode_indices(model, variables, image_BHWC):
  """uint8 images (B, H, W, C) -> their codes (B, h, w) int32."""
  z = model.apply(variables, to_input(image_BHWC), method='encode')
  return model.apply(variables, z, method='quantize')[0]


def decode_indices(model, variables, codes_Bhw):
  """Codes (B, h, w) -> uint8 images (B, H, W, C)."""
  z = model.apply(variables, codes_Bhw, method='embed')
  return to_pixels(model.apply(variables, z, method='decode'))


# ---------------------------------------------------------------------------- objective


@dataclasses.dataclass(frozen=True)
class Options:
  """The VQ-VAE's task_kwargs."""
  input_size: tuple = (24, 24)  # (H, W); larger data images are area-pooled to it
  channels: int = 3
  beta: float = 0.25  # the commitment weight
  decay: float = 0.99  # of the EMA codebook
  eps: float = 1e-5  # Laplace smoothing of the EMA cluster sizes
  restart_after: int = 100  # steps unused before a code is restarted; 0: never


def make(config) -> Task:
  """`config.task = 'generative.vqvae'`, `config.model_name = 'generative.vqvae'`. Batches
  hold `image` (B, H, W, C) uint8. Train metrics: loss, recon_mse, commitment, (codebook
  loss,) perplexity and codes_used of the batch, dead codes restarted."""
  opts = parse_options(Options, config)
  size = tuple(opts.input_size)
  channels = int(opts.channels)
  beta, decay, eps = float(opts.beta), float(opts.decay), float(opts.eps)
  restart_after = int(opts.restart_after)
  model = arch.model_from_config(config, channels=channels)
  if not isinstance(model, VQVAE):
    raise ConfigError(f'the vqvae objective needs generative.vqvae, not {config.model_name!r}')
  if model.codebook not in CODEBOOKS:
    raise ConfigError(f'unknown model.codebook {model.codebook!r}; valid: '
                      f'{", ".join(CODEBOOKS)}')
  ema = model.codebook == 'ema'
  if not 0 <= decay < 1 or beta < 0 or eps <= 0 or restart_after < 0:
    raise ConfigError(f'task_kwargs need decay in [0, 1), beta >= 0, eps > 0 and '
                      f'restart_after >= 0; got {decay}, {beta}, {eps}, {restart_after}')
  if restart_after and not ema:
    raise ConfigError('dead-code restarts (task_kwargs.restart_after) act on the EMA '
                      'codebook; set restart_after=0 with model.codebook="loss"')
  if any(n % model.downsampling for n in size):
    raise ConfigError(f'task_kwargs.input_size {size} must be multiples of '
                      f'{model.downsampling} (2 ** model.stages)')
  shape = (*size, channels)
  k = model.num_codes

  def images(batch):
    image = batch['image']
    if tuple(image.shape[1:]) != shape:
      raise ValueError(f'images are {tuple(image.shape[1:])}; the task is built for {shape} '
                       f'(task_kwargs input_size, channels)')
    return image

  def preprocess(example):
    return {'image': pool_image(example['image'], size)}

  def init(rng, batch):
    return model.init(rng, jnp.zeros((batch['image'].shape[0], *shape), jnp.float32))

  def loss(variables, batch, rng):
    x = to_input(images(batch))
    out, z_e, codes = model.apply(variables, x)
    z_q = model.apply(variables, codes, method='embed')
    recon = ((out - x) ** 2).mean()
    commitment = ((z_e - jax.lax.stop_gradient(z_q)) ** 2).mean()
    value = recon + beta * commitment
    counts = jax.nn.one_hot(codes.reshape(-1), k).sum(0)
    metrics = {'recon_mse': recon, 'commitment': commitment, 'perplexity': perplexity(counts),
               'codes_used': (counts > 0).sum().astype(jnp.float32)}
    updates = {}
    if ema:
      z_ND = z_e.reshape(-1, z_e.shape[-1])
      book = ema_update(variables[CODEBOOK], z_ND, codes.reshape(-1), decay, eps)
      if restart_after:
        metrics['restarted'] = (book['unused'] >= restart_after).sum().astype(jnp.float32)
        book = restart_dead_codes(book, z_ND, rng, restart_after)
      updates[CODEBOOK] = book
    else:
      codebook = ((jax.lax.stop_gradient(z_e) - z_q) ** 2).mean()
      value = value + codebook
      metrics['codebook_loss'] = codebook
    metrics['loss'] = value
    return value, (metrics, updates)

  def evaluate(variables, batch):
    image = images(batch)
    codes = encode_indices(model, variables, image)
    out = model.apply(variables, model.apply(variables, codes, method='embed'), method='decode')
    err = jnp.clip((out + 1.0) / 2.0, 0.0, 1.0) - image / 255.0
    mse = (err ** 2).reshape(image.shape[0], -1).mean(-1)
    return {'mse': mse, 'psnr': psnr(mse),
            'code_counts': jax.nn.one_hot(codes.reshape(image.shape[0], -1), k).sum(1)}

  def finalize_eval(sums, count):
    counts = np.asarray(sums['code_counts'], np.float64)
    return {'mse': float(sums['mse']) / count, 'psnr': float(sums['psnr']) / count,
            'perplexity': float(perplexity(counts)), 'codes_used': float((counts > 0).sum())}

  def example_batch(batch_size):
    return {'image': jax.ShapeDtypeStruct((batch_size, *shape), jnp.uint8)}

  def prompt_batch(prompts, num_samples, examples=None):
    if prompts is not None and any(len(p) for p in prompts):
      raise ConfigError('the VQ-VAE reconstructs eval images and takes no prompt')
    if examples is None:
      raise ConfigError('VQ-VAE samples reconstruct eval-split images: the sampler must '
                        'pass them (Task.prompt_examples)')
    return {'image': np.asarray(examples['image'][:num_samples])}

  def sample(variables, batch, rng, *, row_ids, **unused):
    """One strip per eval image: input | reconstruction through its codes."""
    del rng, row_ids, unused
    image = images(batch)
    recon = decode_indices(model, variables, encode_indices(model, variables, image))
    return {'images': jnp.concatenate([image, recon], axis=2)}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              preprocess=preprocess, example_batch=example_batch, prompt_batch=prompt_batch,
              sample=sample, prompt_examples=True)


# Tiny sizes for tests.
TINY = dict(width=8, stages=1, res_blocks=1, res_width=4, code_dim=4, num_codes=8)
