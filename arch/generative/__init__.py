"""Generative models: autoencoders, GANs, diffusion, score SDEs, flows, energy-based and
autoregressive models. Helpers they share: uint8 pixels to and from [-1, 1], and a PRNG
key per image from its pixels (evals' fixed noise, independent of the batch)."""

import jax
import jax.numpy as jnp


def to_unit(image_BHWC):
  """uint8 pixels [0, 255] -> float32 [-1, 1]."""
  return image_BHWC.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(x_BHWC):
  """[-1, 1] -> uint8 pixels (clipped, rounded)."""
  return jnp.round((jnp.clip(x_BHWC, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)


def image_keys(image_BHWC, seed: int = 0):
  """A PRNG key per image from its pixels alone: an eval's fixed noise (dequantization,
  timestep) is then a function of the image, not of the batch it lands in."""
  flat = image_BHWC.reshape(image_BHWC.shape[0], -1).astype(jnp.uint32)
  weights = jnp.arange(flat.shape[1], dtype=jnp.uint32) * jnp.uint32(2654435761) + 1
  ids = (flat * weights).sum(-1, dtype=jnp.uint32)
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(ids)
