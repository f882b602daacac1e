"""Image conventions the tasks share.

Datasets give `image` (B, H, W, C) uint8 in [0, 255] and, when labelled, `label` (B,)
int. A task resizes on device to the `input_size` (H, W) its network sees, bilinearly;
variable-sized images (imagenet2012) are cropped to a square on the host first, as the
usual ImageNet evaluation does. Recognition tasks feed the network floats in [0, 1]
(`scale_images`); most generative ones map pixels to [-1, 1] (`arch.generative.to_unit`).
"""

import jax
import jax.numpy as jnp
import numpy as np


def labelled_images(batch_size: int, input_size, channels: int) -> dict:
  """The batch shapes of labelled image datasets: uint8 images and int labels."""
  return {'image': jax.ShapeDtypeStruct((batch_size, *input_size, channels), jnp.uint8),
          'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32)}


def psnr(mse):
  """Peak signal-to-noise ratio in dB of a mean squared error on pixels in [0, 1]:
  10 log10(1 / mse), floored at mse = 1e-10 (100 dB) so a perfect copy stays finite."""
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def scale_images(image_BHWC, input_size):
  """uint8 images in [0, 255] -> float32 in [0, 1], resized (bilinear) to `input_size`."""
  x = image_BHWC.astype(jnp.float32) / 255.0
  if x.shape[1:3] != tuple(input_size):
    x = jax.image.resize(x, (x.shape[0], *input_size, x.shape[-1]), 'bilinear')
  return x


def random_translate(x_BHWC, rng, shift: int):
  """Each image moved by a random offset of up to `shift` pixels each way, zero-filled."""
  n, h, w, c = x_BHWC.shape
  padded = jnp.pad(x_BHWC, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
  offsets = jax.random.randint(rng, (n, 2), 0, 2 * shift + 1)
  crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def center_crop_resize(image_HWC: np.ndarray, size: int, ratio: float = 8 / 7) -> np.ndarray:
  """Shorter side to round(size * ratio) (bilinear), then the central size x size crop
  (on the host, numpy in and out)."""
  h, w = image_HWC.shape[:2]
  scale = round(size * ratio) / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  # bilinear resampling with half-pixel centres, in numpy (no image library needed)
  ys = np.clip((np.arange(nh) + 0.5) / scale - 0.5, 0, h - 1)
  xs = np.clip((np.arange(nw) + 0.5) / scale - 0.5, 0, w - 1)
  y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
  y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
  wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
  img = image_HWC.astype(np.float32)
  rows = img[y0] * (1 - wy) + img[y1] * wy
  out = rows[:, x0] * (1 - wx) + rows[:, x1] * wx
  top, left = (nh - size) // 2, (nw - size) // 2
  return np.clip(np.round(out[top:top + size, left:left + size]), 0, 255).astype(np.uint8)
