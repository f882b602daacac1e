"""Autoregressive models of binary images: the fully visible sigmoid belief net (FVSBN;
Neal 1992, Frey et al. 1996) and the neural autoregressive distribution estimator (NADE;
Larochelle & Murray 2011), with their objective.

Both factorise p(x) = prod_d p(x_d | x_<d) over the D pixels in raster order and output
one logit per pixel, logit p(x_d = 1 | x_<d), from a single forward pass:

- FVSBN: logistic regression of each pixel on all earlier ones, one masked linear layer
  (`logits = x W + b` with W strictly upper-triangular). Only the D (D - 1) / 2 weights
  above the diagonal are parameters (stored packed), so the count is D (D + 1) / 2 with
  the biases: 2,080 for 8x8 images.
- NADE: a hidden layer per conditional, h_d = sigmoid(c + W_<d x_<d), with the weights W
  shared by all conditionals, and logit_d = b_d + V_d . h_d. The pre-activations obey
  a_{d+1} = a_d + W_d x_d, so all D of them are one exclusive running sum over pixels:
  O(D K) per image rather than the naive O(D^2 K).

The objective (`make`) models BINARIZED images: a uint8 pixel is 1 when it is > 127, else
0 (the 8x8 digits' levels round(k * 255 / 16) give 1 for k >= 8). Training minimises the
exact negative log-likelihood; eval reports per image `nll` (nats) and `bits_per_dim`
(bits per binary pixel). `sample` draws pixel by pixel (ancestral sampling; a
`lax.fori_loop` over the D pixels, one forward pass each) and returns 0/255 images.

Config: `config.task = 'generative.autoregressive'`, `config.model_name =
'generative.autoregressive:NADE'` (or `:FVSBN`), `config.model = dict(num_pixels=64, ...)`;
task_kwargs (`Options`) `input_size` (H, W) and `channels` (H * W * channels must be
num_pixels).

Dimension key: B batch, D pixels (raster order), K NADE hidden units, H W C image.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.task import ConfigError, Task, parse_options, row_keys, unconditional_rows

Dtype = Any
THRESHOLD = 127  # binarization: pixel > THRESHOLD -> 1


def _check_pixels(x_BD, num_pixels: int, what: str):
  if x_BD.ndim != 2 or x_BD.shape[-1] != num_pixels:
    raise ValueError(f'{what}: takes (batch, {num_pixels}) binary pixels in raster order; '
                     f'got shape {x_BD.shape}')


class FVSBN(nn.Module):
  """Fully visible sigmoid belief net: x (B, D) in {0, 1} -> logits (B, D) of
  p(x_d = 1 | x_<d) = sigmoid(b_d + sum_{j<d} W_jd x_j)."""
  num_pixels: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BD):
    d = self.num_pixels
    _check_pixels(x_BD, d, 'FVSBN')
    rows, cols = np.triu_indices(d, k=1)  # (j, d) with j < d: pixel j feeds pixel d
    # The masked linear layer's free weights, packed; the rest of W is structurally zero.
    w_T = self.param('kernel', nn.initializers.zeros, (len(rows),), self.param_dtype)
    b_D = self.param('bias', nn.initializers.zeros, (d,), self.param_dtype)
    w_DD = jnp.zeros((d, d), self.dtype).at[rows, cols].set(w_T.astype(self.dtype))
    logits_BD = x_BD.astype(self.dtype) @ w_DD + b_D.astype(self.dtype)
    return logits_BD.astype(jnp.float32)


class NADE(nn.Module):
  """NADE: x (B, D) in {0, 1} -> logits (B, D) of p(x_d = 1 | x_<d), with hidden units
  h_d = sigmoid(c + sum_{j<d} x_j W_j) shared across conditionals (running-sum forward)."""
  num_pixels: int = 64
  hidden: int = 500  # K
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BD):
    d, k = self.num_pixels, self.hidden
    _check_pixels(x_BD, d, 'NADE')
    w_DK = self.param('W', nn.initializers.normal(d ** -0.5), (d, k), self.param_dtype)
    c_K = self.param('c', nn.initializers.zeros, (k,), self.param_dtype)
    v_DK = self.param('V', nn.initializers.normal(k ** -0.5), (d, k), self.param_dtype)
    b_D = self.param('b', nn.initializers.zeros, (d,), self.param_dtype)
    x_BD = x_BD.astype(self.dtype)
    contrib_BDK = x_BD[:, :, None] * w_DK.astype(self.dtype)
    # Exclusive running sum: a_d = c + sum_{j<d} x_j W_j (a shift, so x_d never reaches a_d).
    before_BDK = jnp.cumsum(contrib_BDK, axis=1)[:, :-1]
    a_BDK = jnp.concatenate([jnp.zeros_like(contrib_BDK[:, :1]), before_BDK], axis=1)
    h_BDK = nn.sigmoid(a_BDK + c_K.astype(self.dtype))
    logits_BD = jnp.einsum('BDK,DK->BD', h_BDK, v_DK.astype(self.dtype)) + b_D
    return logits_BD.astype(jnp.float32)


Model = NADE  # 'generative.autoregressive' names NADE; ':FVSBN' the other network


def binarize(image_BHWC):
  """uint8 images (B, H, W, C) -> (B, D) float32 bits in raster order (pixel > 127)."""
  return (image_BHWC > THRESHOLD).astype(jnp.float32).reshape(image_BHWC.shape[0], -1)


def log_likelihood(logits_BD, x_BD):
  """log p(x) in nats per image (B,) from the per-pixel logits of p(x_d = 1 | x_<d)."""
  return -optax.sigmoid_binary_cross_entropy(logits_BD, x_BD).sum(-1)


@dataclasses.dataclass(frozen=True)
class Options:
  """The binary autoregressive task's task_kwargs."""
  input_size: tuple = (8, 8)  # (H, W)
  channels: int = 1


def make(config) -> Task:
  """Binary autoregressive image model. Train metrics: `loss` (nats per image),
  `bits_per_dim`; eval: per image `nll` (nats) and `bits_per_dim` (bits per binary pixel)."""
  opts = parse_options(Options, config)
  h, w = tuple(opts.input_size)
  channels = int(opts.channels)
  d = h * w * channels
  model = arch.model_from_config(config)
  if getattr(model, 'num_pixels', d) != d:
    raise ConfigError(f'config.model.num_pixels={model.num_pixels} but the images have '
                      f'{h}x{w}x{channels}={d} pixels; make them agree')

  def check(image_BHWC):
    if tuple(image_BHWC.shape[1:]) != (h, w, channels):
      raise ValueError(f'images of shape {tuple(image_BHWC.shape[1:])}; the task is built '
                       f'for {(h, w, channels)} (task_kwargs input_size, channels)')
    return binarize(image_BHWC)

  def init(rng, batch):
    return model.init(rng, check(batch['image']))

  def nll_and_bpd(variables, batch):
    x_BD = check(batch['image'])
    nll_B = -log_likelihood(model.apply(variables, x_BD), x_BD)
    return nll_B, nll_B / (d * np.log(2.0))

  def loss(variables, batch, rng):
    del rng
    nll_B, bpd_B = nll_and_bpd(variables, batch)
    value = nll_B.mean()
    return value, ({'loss': value, 'bits_per_dim': bpd_B.mean()}, {})

  def evaluate(variables, batch):
    nll_B, bpd_B = nll_and_bpd(variables, batch)
    return {'nll': nll_B, 'bits_per_dim': bpd_B}

  def example_batch(batch_size):
    return {'image': jax.ShapeDtypeStruct((batch_size, h, w, channels), jnp.uint8)}

  def sample(variables, batch, rng, *, row_ids, temperature: float = 1.0, **unused):
    """Ancestral sampling, pixel by pixel: {'images': (B, H, W, C) uint8 in {0, 255}}.
    Pixel d of row r draws with fold_in(fold_in(rng, row_ids[r]), d); `temperature`
    divides the logits (0: the more likely value)."""
    del batch, unused
    keys_B = row_keys(rng, row_ids)

    def body(i, x_BD):
      logit_B = model.apply(variables, x_BD)[:, i]
      if temperature == 0:
        bit_B = logit_B > 0
      else:
        u_B = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, i)))(keys_B)
        bit_B = u_B < nn.sigmoid(logit_B / temperature)
      return x_BD.at[:, i].set(bit_B.astype(x_BD.dtype))

    x_BD = jax.lax.fori_loop(0, d, body, jnp.zeros((row_ids.shape[0], d), jnp.float32))
    return {'images': (x_BD * 255).astype(jnp.uint8).reshape(-1, h, w, channels)}

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              sample=sample, prompt_batch=unconditional_rows)


TINY = dict(hidden=8)  # NADE's test size
