"""C3D (Tran et al. 2015, "Learning Spatiotemporal Features with 3D Convolutional
Networks"), and the per-frame 2D CNN it is measured against.

C3D convolves clips in time as well as space: every convolution is 3x3x3 (stride 1,
padding 1) with a ReLU; the paper's network has 8 of them in 5 stages of widths 64, 128,
256x2, 512x2, 512x2, each stage ending in a max pool that halves height and width and,
after the first stage, also time (pool1 is 1x2x2 so that early layers keep the clip's
length); then two 4096-wide fully connected layers with dropout 0.5 and the classifier.
On 16 x 112 x 112 clips the last pool (padded by 1 in height and width, as in the
released model) leaves 512 x 1 x 4 x 4 = 8,192 features. `VARIANTS['sports1m']` (487
classes) has 79,991,015 parameters and `VARIANTS['ucf101']` 78,409,573: the paper's layer
table, counted here with `jax.eval_shape` (no reference library ships C3D, so these are
computed from the table, not compared against a second implementation).

`FrameAverage` is the baseline the issue asks for: a 2D CNN of the same widths applied to
each frame independently, its logits averaged over the frames. It cannot see motion; C3D
can. `motion_class` gives the offline task that separates them
(configs/c3d_moving_digits.py).

Dimension key: B batch, T frames, H W height and width, C channels, K classes.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from arch.layers.conv import classifier_head, hidden_dense

Dtype = Any


def _kernel_init(spatial_dims: int):
  return nn.with_logical_partitioning(nn.initializers.kaiming_normal(),
                                      (None,) * spatial_dims + ('conv_in', 'conv_out'))


def _conv(features, kernel, dtype, param_dtype, name):
  return nn.Conv(features, kernel, padding=[(1, 1)] * len(kernel), dtype=dtype,
                 param_dtype=param_dtype, kernel_init=_kernel_init(len(kernel)),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('conv_out',)),
                 name=name)


def _head(module, x_BF, train: bool):
  """fc6 .. fc7 (ReLU, dropout) then the classifier: (B, F) -> (B, K) float32."""
  for i, width in enumerate(module.fc):
    x_BF = nn.relu(hidden_dense(width, ('embed', 'mlp') if i == 0 else ('mlp', 'mlp'),
                                f'fc{i + 6}', module.dtype, module.param_dtype)(x_BF))
    x_BF = nn.Dropout(module.dropout_rate)(x_BF, deterministic=not train)
  return classifier_head(module.num_classes, module.dtype, module.param_dtype,
                         name='head')(x_BF).astype(jnp.float32)


class Model(nn.Module):
  """C3D: clips (B, T, H, W, C) float -> logits (B, K) float32."""
  num_classes: int = 487
  # Convolution widths per stage; each stage ends in a max pool of `pools[stage]`.
  stages: Sequence[Sequence[int]] = ((64,), (128,), (256, 256), (512, 512), (512, 512))
  pools: Sequence[Sequence[int]] = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))
  last_pool_padding: Sequence[int] = (0, 1, 1)  # the released model pads pool5 (T, H, W)
  fc: Sequence[int] = (4096, 4096)
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTHWC, *, train: bool = False):
    if x_BTHWC.ndim != 5:
      raise ValueError(f'C3D takes clips (batch, T, H, W, C); got shape {x_BTHWC.shape}')
    if len(self.stages) != len(self.pools):
      raise ValueError(f'{len(self.stages)} stages but {len(self.pools)} pools')
    x = jnp.asarray(x_BTHWC, self.dtype)
    for s, (widths, pool) in enumerate(zip(self.stages, self.pools)):
      for j, width in enumerate(widths):
        name = f'conv{s + 1}' + ('ab'[j] if len(widths) > 1 else 'a')
        x = nn.relu(_conv(width, (3, 3, 3), self.dtype, self.param_dtype, name)(x))
      last = s == len(self.stages) - 1
      pad = [(p, p) for p in self.last_pool_padding] if last else 'VALID'
      if any(size < k for size, k in zip(x.shape[1:4], pool)):
        raise ValueError(f'pool{s + 1} {tuple(pool)} does not fit the {x.shape[1:4]} '
                         f'feature map; use longer or larger clips, or fewer stages')
      x = nn.max_pool(x, tuple(pool), strides=tuple(pool), padding=pad)
    return _head(self, x.reshape(x.shape[0], -1), train)


class FrameAverage(nn.Module):
  """The per-frame baseline: C3D's stages as 3x3 2D convolutions with 2x2 pools on each
  frame alone, the same head, logits averaged over the frames. (B, T, H, W, C) -> (B, K)."""
  num_classes: int = 487
  stages: Sequence[Sequence[int]] = ((64,), (128,), (256, 256), (512, 512), (512, 512))
  fc: Sequence[int] = (4096, 4096)
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTHWC, *, train: bool = False):
    if x_BTHWC.ndim != 5:
      raise ValueError(f'FrameAverage takes clips (batch, T, H, W, C); got {x_BTHWC.shape}')
    b, t = x_BTHWC.shape[:2]
    x = jnp.asarray(x_BTHWC, self.dtype).reshape(b * t, *x_BTHWC.shape[2:])
    for s, widths in enumerate(self.stages):
      for j, width in enumerate(widths):
        name = f'conv{s + 1}' + ('ab'[j] if len(widths) > 1 else 'a')
        x = nn.relu(_conv(width, (3, 3), self.dtype, self.param_dtype, name)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    logits = _head(self, x.reshape(b * t, -1), train)
    return logits.reshape(b, t, -1).mean(axis=1)


def _c3d(num_classes):
  return dict(num_classes=num_classes)


VARIANTS = {'sports1m': _c3d(487), 'ucf101': _c3d(101)}


def motion_class(video_THWC: np.ndarray) -> int:
  """The direction a moving_digits clip's digit moves between its first two frames, one
  of 9 classes 3 * (sign(dy) + 1) + (sign(dx) + 1), from the shift of the digit's bounding
  box (every frame draws the same bitmap, so the box moves exactly as the digit; a bounce
  in that step can leave an axis at 0, and class 4 is 'no move'). One frame shows only
  where the digit is, which tells the direction only next to a wall (it bounces away): the
  per-frame baseline scores 0.300 on the test clips, the most frequent class 0.142, C3D
  0.978 (configs/c3d_moving_digits.py)."""
  corners = []
  for frame in np.asarray(video_THWC)[:2, ..., 0]:
    ys, xs = np.nonzero(frame)
    corners.append((ys.min(), xs.min()) if len(ys) else (0, 0))
  dy, dx = np.sign(np.subtract(corners[1], corners[0]))
  return int(3 * (dy + 1) + (dx + 1))
