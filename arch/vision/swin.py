"""Swin Transformer (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer
using Shifted Windows"), v1, in torchvision's layout (swin_t, swin_s, swin_b).

A p x p patch embedding (a conv of stride p, then LayerNorm) makes an H/p x W/p map of
tokens; four stages of pre-norm blocks follow, each halving the map and doubling the width
before it (patch merging: the 2x2 neighbours concatenated, LayerNorm, a bias-free linear
4D -> 2D). A block attends within non-overlapping M x M windows (W-MSA), every second
block within windows shifted by M/2 (SW-MSA): the map is rolled by -M/2 and an attention
mask keeps apart the tokens that the roll brought together from different regions. Each
window's logits get a learned bias per head, read from a (2M-1)^2 x heads table at the
query's offset from the key. Final LayerNorm, average pool, linear head.

As torchvision does: a map whose side is not a multiple of M is zero-padded (after the
block's first norm) at the bottom and right, and the padded tokens are attended to like
any other (unmasked); a side no longer than the window is not shifted; an odd side is
zero-padded before merging. The window itself is never shrunk to the map, so a map smaller
than M is padded up to M. Parameter counts equal torchvision's: swin_t 28,288,354; swin_s
49,606,258; swin_b 87,768,224 (the bias tables count; their index is a constant).

`num_classes=0` drops the head: the model returns the pooled, normed representation
(B, D). `stochastic_depth` is the largest drop-path rate, rising linearly over all blocks
(torchvision: 0.2 for T, 0.3 for S, 0.5 for B).

Dimension key: B batch, H W map height and width (padded: the same letters), C image
channels, D width, M window side, G windows per image, V windows in the batch (B x G),
T tokens in a window (M x M), N heads, R relative offsets ((2M-1)^2), K classes.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from arch.layers.attention import Attention
from arch.layers.conv import DropPath, classifier_head
from arch.layers.embed import Mlp, PatchEmbed, norm

Dtype = Any
INIT_STDDEV = 0.02  # torchvision's trunc_normal_(std=0.02) on every linear layer


def relative_position_index(m: int) -> np.ndarray:
  """(T, T): the bias-table row of each (query, key) pair of an M x M window, their
  offset (dy, dx) in [-(M-1), M-1]^2 numbered row-major."""
  y, x = np.divmod(np.arange(m * m), m)
  dy = y[:, None] - y[None, :] + m - 1
  dx = x[:, None] - x[None, :] + m - 1
  return dy * (2 * m - 1) + dx


def relative_position_bias(table_RN, m: int):
  """(1, N, T, T): each (query, key) pair's row of the (2M-1)^2 x N bias table."""
  return jnp.take(table_RN, relative_position_index(m), axis=0).transpose(2, 0, 1)[None]


def _regions(n: int, m: int, shift: int) -> np.ndarray:
  """The region of each of n rows of a map rolled by -shift: those that stayed (0), those
  of the last window that stayed (1), and those that wrapped around (2)."""
  r = np.zeros(n, np.int32)
  if shift:
    r[n - m:n - shift] = 1
    r[n - shift:] = 2
  return r


def window_partition(x_BHWD, m: int):
  """(B, H, W, D) -> (B, G, T, D): row-major windows, row-major tokens within each."""
  b, h, w, d = x_BHWD.shape
  x = x_BHWD.reshape(b, h // m, m, w // m, m, d).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // m) * (w // m), m * m, d)


def window_merge(x_BGTD, h: int, w: int, m: int):
  """The inverse of `window_partition`: (B, G, T, D) -> (B, H, W, D)."""
  b, d = x_BGTD.shape[0], x_BGTD.shape[-1]
  x = x_BGTD.reshape(b, h // m, w // m, m, m, d).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, d)


def shift_mask(h: int, w: int, m: int, shift_h: int, shift_w: int) -> np.ndarray:
  """(G, T, T) bool for an H x W map rolled by (-shift_h, -shift_w): True where query and
  key come from the same region, i.e. were neighbours before the roll."""
  labels_HW = _regions(h, m, shift_h)[:, None] * 3 + _regions(w, m, shift_w)[None, :]
  labels_GT = np.asarray(window_partition(labels_HW[None, :, :, None], m))[0, ..., 0]
  return labels_GT[:, :, None] == labels_GT[:, None, :]


class WindowAttention(nn.Module):
  """(Shifted-)window multi-head self-attention with relative position bias, on a map
  (B, H, W, D) -> (B, H, W, D); `shift` 0 is W-MSA, M // 2 SW-MSA."""
  num_heads: int
  window_size: int
  shift: int = 0
  dropout_rate: float = 0.0  # on the attention weights
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWD, *, deterministic: bool = True):
    b, h, w, d = x_BHWD.shape
    m = self.window_size
    pad_h, pad_w = -h % m, -w % m
    x_BHWD = jnp.pad(x_BHWD, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = h + pad_h, w + pad_w
    # torchvision shifts only a side longer than the window.
    shift_h, shift_w = (self.shift if m < hp else 0), (self.shift if m < wp else 0)
    shifted = bool(shift_h or shift_w)
    if shifted:
      x_BHWD = jnp.roll(x_BHWD, (-shift_h, -shift_w), axis=(1, 2))
    x_BGTD = window_partition(x_BHWD, m)
    g, t = x_BGTD.shape[1:3]
    mask = None
    if shifted:
      mask_GTT = jnp.asarray(shift_mask(hp, wp, m, shift_h, shift_w))
      mask = jnp.broadcast_to(mask_GTT[None, :, None], (b, g, 1, t, t)).reshape(b * g, 1, t, t)
    table_RN = self.param('relative_position_bias_table', nn.with_logical_partitioning(
        nn.initializers.normal(INIT_STDDEV), ('relpos_buckets', 'heads')),
        ((2 * m - 1) ** 2, self.num_heads), self.param_dtype)
    attention = Attention(self.num_heads, dropout_rate=self.dropout_rate,
                          init_stddev=INIT_STDDEV, dtype=self.dtype,
                          param_dtype=self.param_dtype, name='attention')
    y_VTD = attention(x_BGTD.reshape(b * g, t, d), mask=mask,
                      bias=relative_position_bias(jnp.asarray(table_RN, self.dtype), m),
                      deterministic=deterministic)
    y_BHWD = window_merge(y_VTD.reshape(b, g, t, d), hp, wp, m)
    if shifted:
      y_BHWD = jnp.roll(y_BHWD, (shift_h, shift_w), axis=(1, 2))
    return y_BHWD[:, :h, :w]


class SwinBlock(nn.Module):
  """x + DropPath(WindowAttention(LN(x))), then x + DropPath(MLP(LN(x))), on (B, H, W, D).
  Stochastic depth drops a branch per image (not per window)."""
  num_heads: int
  window_size: int
  shift: int = 0
  mlp_ratio: float = 4.0
  dropout_rate: float = 0.0  # after each branch's last linear and the MLP's hidden layer
  attention_dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWD, *, train: bool = False):
    x_BHWD = nn.with_logical_constraint(x_BHWD, ('batch', None, None, 'embed'))
    d = x_BHWD.shape[-1]
    ln = lambda name: norm('layer', 1e-5, dtype=self.dtype, param_dtype=self.param_dtype,
                           name=name)
    branches = (
        ('attn', WindowAttention(self.num_heads, self.window_size, self.shift,
                                 self.attention_dropout_rate, dtype=self.dtype,
                                 param_dtype=self.param_dtype, name='attn')),
        ('mlp', Mlp(int(d * self.mlp_ratio), 'gelu', dropout_rate=self.dropout_rate,
                    init_stddev=INIT_STDDEV, dtype=self.dtype, param_dtype=self.param_dtype,
                    name='mlp')))
    for name, branch in branches:
      y_BHWD = branch(ln(f'{name}_norm')(x_BHWD), deterministic=not train)
      y_BHWD = nn.Dropout(self.dropout_rate)(y_BHWD, deterministic=not train)
      x_BHWD = x_BHWD + DropPath(self.drop_path_rate)(y_BHWD, train=train)
    return x_BHWD


class PatchMerging(nn.Module):
  """(B, H, W, D) -> (B, ceil(H/2), ceil(W/2), 2D): each 2x2 neighbourhood's tokens
  concatenated in torchvision's order (0,0) (1,0) (0,1) (1,1), LayerNorm, linear 4D -> 2D
  without bias. An odd side is zero-padded first."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWD):
    b, h, w, d = x_BHWD.shape
    x_BHWD = jnp.pad(x_BHWD, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    h, w = h + h % 2, w + w % 2
    # (B, H/2, dy, W/2, dx, D) -> channels ordered by (dx, dy)
    x = x_BHWD.reshape(b, h // 2, 2, w // 2, 2, d).transpose(0, 1, 3, 4, 2, 5)
    x = x.reshape(b, h // 2, w // 2, 4 * d)
    x = norm('layer', 1e-5, dtype=self.dtype, param_dtype=self.param_dtype, name='norm')(x)
    return nn.Dense(2 * d, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.normal(INIT_STDDEV), ('mlp', 'embed')),
                    name='reduction')(x)


class Model(nn.Module):
  """Swin: images (B, H, W, C) float -> logits (B, K) float32 (see the module doc)."""
  num_classes: int = 1000
  patch_size: int = 4  # H and W must be multiples of it
  embed_dim: int = 96  # the first stage's width; each later stage doubles it
  depths: Sequence[int] = (2, 2, 6, 2)  # blocks per stage
  num_heads: Sequence[int] = (3, 6, 12, 24)  # per stage
  window_size: int = 7
  mlp_ratio: float = 4.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0  # drop-path rate of the last block
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    if len(self.depths) != len(self.num_heads):
      raise ValueError(f'depths {tuple(self.depths)} and num_heads {tuple(self.num_heads)} '
                       'must name the same number of stages')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x_BHWD = PatchEmbed(self.embed_dim, self.patch_size, flatten=False, name='patch_embed',
                        **kw)(x_BHWC)
    x_BHWD = norm('layer', 1e-5, name='patch_norm', **kw)(x_BHWD)
    x_BHWD = nn.Dropout(self.dropout_rate)(x_BHWD, deterministic=not train)
    total, k = sum(self.depths), 0
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      if i:
        x_BHWD = PatchMerging(name=f'merge{i}', **kw)(x_BHWD)
      for j in range(depth):
        x_BHWD = SwinBlock(heads, self.window_size, shift=self.window_size // 2 if j % 2 else 0,
                           mlp_ratio=self.mlp_ratio, dropout_rate=self.dropout_rate,
                           attention_dropout_rate=self.attention_dropout_rate,
                           drop_path_rate=self.stochastic_depth * k / max(total - 1, 1),
                           name=f'stage{i + 1}_{j}', **kw)(x_BHWD, train=train)
        k += 1
    x_BHWD = norm('layer', 1e-5, name='norm', **kw)(x_BHWD)
    rep_BD = x_BHWD.mean(axis=(1, 2))
    if not self.num_classes:
      return rep_BD.astype(jnp.float32)
    return classifier_head(self.num_classes, self.dtype, self.param_dtype, 'head',
                           nn.initializers.normal(INIT_STDDEV))(rep_BD).astype(jnp.float32)


def _swin(width, depths, heads, stochastic_depth):
  return dict(embed_dim=width, depths=depths, num_heads=heads, patch_size=4, window_size=7,
              stochastic_depth=stochastic_depth)


# Named sizes (the paper's Swin-T/S/B at 224x224): torchvision's swin_t, swin_s, swin_b.
VARIANTS = {
    'T': _swin(96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2),
    'S': _swin(96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3),
    'B': _swin(128, (2, 2, 18, 2), (4, 8, 16, 32), 0.5),
}
TINY = dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4), patch_size=2, window_size=4,
            stochastic_depth=0.1)
