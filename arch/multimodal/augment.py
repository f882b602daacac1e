"""Random image augmentations for self-supervised objectives, on device and per example.

Each function maps (rng, images (B, H, W, C) float in [0, 1]) to images of the same shape,
drawing independent parameters for every example from `rng`, so two calls with different
keys give two "views" of a batch (SimCLR's and MoCo's pairs). SimCLR's recipe (Chen et
al. 2020, appendix A) is random resized crop, horizontal flip, colour jitter, random
grayscale and Gaussian blur; `views` composes the ones a config names.

Dimension key: B batch, H W height and width, C channels.
"""

import jax
import jax.numpy as jnp


def _uniform(rng, b, lo, hi):
  return jax.random.uniform(rng, (b,), minval=lo, maxval=hi)


def random_resized_crop(rng, x_BHWC, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)):
  """A random box of `scale` times the area and aspect in `ratio`, resized back (bilinear)."""
  b, h, w, c = x_BHWC.shape
  k_area, k_ratio, k_y, k_x = jax.random.split(rng, 4)
  area = _uniform(k_area, b, *scale) * h * w
  log_r = _uniform(k_ratio, b, jnp.log(ratio[0]), jnp.log(ratio[1]))
  r = jnp.exp(log_r)
  bh = jnp.clip(jnp.sqrt(area / r), 1.0, h)
  bw = jnp.clip(jnp.sqrt(area * r), 1.0, w)
  y0 = _uniform(k_y, b, 0.0, 1.0) * (h - bh)
  x0 = _uniform(k_x, b, 0.0, 1.0) * (w - bw)

  def crop(img, bh, bw, y0, x0):
    scale = jnp.stack([h / bh, w / bw])
    return jax.image.scale_and_translate(img, (h, w, c), (0, 1), scale,
                                         -jnp.stack([y0, x0]) * scale, 'linear',
                                         antialias=False)
  return jax.vmap(crop)(x_BHWC, bh, bw, y0, x0)


def random_flip(rng, x_BHWC):
  """Left-right flip with probability 1/2."""
  flip = jax.random.bernoulli(rng, 0.5, (x_BHWC.shape[0], 1, 1, 1))
  return jnp.where(flip, x_BHWC[:, :, ::-1], x_BHWC)


def color_jitter(rng, x_BHWC, brightness=0.4, contrast=0.4, p=0.8):
  """Brightness (multiplicative) and contrast (about the image mean) jitter, applied with
  probability p, clipped to [0, 1]."""
  b = x_BHWC.shape[0]
  k_b, k_c, k_p = jax.random.split(rng, 3)
  fb = _uniform(k_b, b, 1 - brightness, 1 + brightness)[:, None, None, None]
  fc = _uniform(k_c, b, 1 - contrast, 1 + contrast)[:, None, None, None]
  y = x_BHWC * fb
  mean = y.mean(axis=(1, 2, 3), keepdims=True)
  y = jnp.clip((y - mean) * fc + mean, 0.0, 1.0)
  apply = jax.random.bernoulli(k_p, p, (b, 1, 1, 1))
  return jnp.where(apply, y, x_BHWC)


def gaussian_noise(rng, x_BHWC, stddev=0.05):
  return jnp.clip(x_BHWC + stddev * jax.random.normal(rng, x_BHWC.shape), 0.0, 1.0)


def views(rng, x_BHWC, crop_scale=(0.35, 1.0), flip=False, jitter=0.4, noise=0.05):
  """One random view of every image: crop, optional flip, jitter, noise."""
  k_crop, k_flip, k_jit, k_noise = jax.random.split(rng, 4)
  x = random_resized_crop(k_crop, x_BHWC, crop_scale)
  if flip:
    x = random_flip(k_flip, x)
  if jitter:
    x = color_jitter(k_jit, x, jitter, jitter)
  if noise:
    x = gaussian_noise(k_noise, x, noise)
  return x


def rotate90(x_BHWC, k):
  """Each image rotated by k[b] quarter turns counter-clockwise (square images)."""
  rots = jnp.stack([jnp.rot90(x_BHWC, i, axes=(1, 2)) for i in range(4)])  # (4, B, H, W, C)
  return jnp.take_along_axis(rots, k[None, :, None, None, None], axis=0)[0]
