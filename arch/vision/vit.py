"""Vision Transformer (Dosovitskiy et al. 2021, "An image is worth 16x16 words") and its
distilled form DeiT (Touvron et al. 2021, "Training data-efficient image transformers &
distillation through attention").

The image is cut into non-overlapping p x p patches, each linearly embedded (a conv of
stride p); a learned class token is prepended and learned position embeddings added;
pre-norm Transformer blocks (LayerNorm eps 1e-6, exact-GELU MLP, biases everywhere), a
final LayerNorm, and a linear head on the class token (`pool='cls'`) or on the mean of
the patch tokens (`pool='mean'`, no class token). Parameter counts equal torchvision's
(vit_b_16 86,567,656; vit_b_32 88,224,232; vit_l_16 304,326,632) and timm's for the
sizes torchvision lacks (vit_tiny_patch16_224 5,717,416; vit_small_patch16_224
22,050,664).

DeiT (`distilled=True`) adds a second learned token, the distillation token, after the
class token, and a second head on it (timm's `head_dist`). In training the model returns
both heads' logits (class, distillation); the class head learns the labels and the
distillation head the teacher (arch/vision/distillation.py); at inference it returns their
mean. timm's deit_{tiny,small,base}_distilled_patch16_224 have 5,910,800 / 22,436,432 /
87,338,192 parameters, and so do these.

`num_classes=0` drops the head: the model returns the pooled, normed representation
(B, D), for representation learning and probes. `stochastic_depth` is the largest
drop-path rate, rising linearly over the depth (DeiT: 0.1).

Dimension key: B batch, H W image height and width, C channels, P patches (tokens), D
width, K classes.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.conv import classifier_head
from arch.layers.embed import PatchEmbed, norm
from arch.layers.transformer import Block, run_blocks

Dtype = Any


class Encoder(nn.Module):
  """Tokens (B, P, D) -> `depth` pre-norm blocks -> final LayerNorm (B, P, D)."""
  depth: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  layer_scale_init: Optional[float] = None
  norm_eps: float = 1e-6
  remat: str = ''  # activation checkpointing of each block (arch/layers/transformer.py)
  scan_layers: bool = False  # the blocks as one nn.scan, params stacked under 'layers'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BPD, *, train: bool = False):
    block = functools.partial(
        Block, self.num_heads, self.mlp_dim, pre_norm=True, norm_eps=self.norm_eps,
        activation='gelu', use_bias=True, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate,
        layer_scale_init=self.layer_scale_init, remat=self.remat, dtype=self.dtype,
        param_dtype=self.param_dtype)
    if self.scan_layers:
      # One scanned block needs identical blocks; stochastic depth's rate rises per layer.
      if self.stochastic_depth:
        raise ValueError(f'scan_layers needs identical blocks, but stochastic_depth='
                         f'{self.stochastic_depth} gives each layer its own drop-path rate; '
                         f'set stochastic_depth=0 or scan_layers=False')
      x_BPD = run_blocks(block, self.depth, x_BPD, is_decoder=False, train=train, scan=True)
    for i in range(0 if self.scan_layers else self.depth):
      rate = self.stochastic_depth * i / max(self.depth - 1, 1)
      x_BPD = block(drop_path_rate=rate, name=f'layers_{i}')(x_BPD, deterministic=not train)
    return norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                name='norm')(x_BPD)


def patch_tokens(x_BHWC, dim: int, patch_size: int, image_size: int, dtype, param_dtype):
  """The calling module's PatchEmbed ('patch_embed'): (B, H, W, C) -> (B, P, D), checked
  against the P = (image_size / patch_size)^2 patches its position table holds."""
  x_BPD = PatchEmbed(dim, patch_size, dtype=dtype, param_dtype=param_dtype,
                     name='patch_embed')(x_BHWC)
  expected = (image_size // patch_size) ** 2
  if x_BPD.shape[1] != expected:
    raise ValueError(f'{x_BHWC.shape[1]}x{x_BHWC.shape[2]} images make {x_BPD.shape[1]} '
                     f'patches; the position table holds {expected} (image_size={image_size})')
  return x_BPD


def _token(module, name, dim, param_dtype):
  return module.param(name, nn.with_logical_partitioning(nn.initializers.zeros,
                                                         (None, None, 'embed')),
                      (1, 1, dim), param_dtype)


class Model(nn.Module):
  """ViT / DeiT: images (B, H, W, C) float -> logits (B, K) float32 (see the module doc)."""
  num_classes: int = 1000
  patch_size: int = 16
  image_size: int = 224  # the position table holds (image_size / patch_size)^2 patches
  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  pool: str = 'cls'  # 'cls' | 'mean'
  distilled: bool = False  # DeiT's distillation token and head
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  norm_eps: float = 1e-6  # the JAX and timm ViTs'; Hugging Face's ViT configs say 1e-12
  remat: str = ''  # activation checkpointing of each block (arch/layers/transformer.py)
  # The blocks as one nn.scan (compile time flat in depth), their parameters stacked along
  # a leading 'layers' axis under encoder/layers; `stack_layers(params['encoder'],
  # 'layers', depth, lambda i: f'layers_{i}')` converts an unrolled checkpoint.
  scan_layers: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    if self.pool not in ('cls', 'mean'):
      raise ValueError(f"unknown pool {self.pool!r}; valid: 'cls', 'mean'")
    if self.distilled and self.pool != 'cls':
      raise ValueError("a distilled ViT (DeiT) pools the class token: pool='cls'")
    d = self.embed_dim
    x_BPD = patch_tokens(x_BHWC, d, self.patch_size, self.image_size, self.dtype,
                         self.param_dtype)
    b, p = x_BPD.shape[:2]
    names = ['cls_token'] * (self.pool == 'cls') + ['dist_token'] * self.distilled
    tokens = [jnp.broadcast_to(jnp.asarray(_token(self, n, d, self.param_dtype), self.dtype),
                               (b, 1, d)) for n in names]
    x_BPD = jnp.concatenate([*tokens, x_BPD.astype(self.dtype)], axis=1)
    pos = self.param('pos_embed', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, 'length', 'embed')),
        (1, p + len(names), d), self.param_dtype)
    x_BPD = x_BPD + jnp.asarray(pos, self.dtype)
    x_BPD = nn.Dropout(self.dropout_rate)(x_BPD, deterministic=not train)
    x_BPD = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout_rate,
                    self.attention_dropout_rate, self.stochastic_depth, norm_eps=self.norm_eps,
                    remat=self.remat, scan_layers=self.scan_layers, dtype=self.dtype,
                    param_dtype=self.param_dtype, name='encoder')(
                        x_BPD, train=train)
    rep_BD = x_BPD[:, 0] if self.pool == 'cls' else x_BPD.mean(axis=1)
    if not self.num_classes:
      return rep_BD.astype(jnp.float32)
    head = lambda name: classifier_head(self.num_classes, self.dtype, self.param_dtype, name,
                                        nn.initializers.zeros)
    logits_BK = head('head')(rep_BD).astype(jnp.float32)
    if not self.distilled:
      return logits_BK
    dist_BK = head('head_dist')(x_BPD[:, 1]).astype(jnp.float32)
    return (logits_BK, dist_BK) if train else (logits_BK + dist_BK) / 2


def _vit(width, depth, heads, patch, **kw):
  return dict(embed_dim=width, depth=depth, num_heads=heads, mlp_dim=4 * width,
              patch_size=patch, **kw)


# Named sizes (the paper's table 1, plus DeiT's Ti and S): torchvision's vit_b_16, vit_b_32,
# vit_l_16, vit_l_32, vit_h_14 and timm's vit_tiny/small_patch{16,32}_224.
VARIANTS = {
    'Ti/16': _vit(192, 12, 3, 16), 'Ti/32': _vit(192, 12, 3, 32),
    'S/16': _vit(384, 12, 6, 16), 'S/32': _vit(384, 12, 6, 32),
    'B/16': _vit(768, 12, 12, 16), 'B/32': _vit(768, 12, 12, 32),
    'L/16': _vit(1024, 24, 16, 16), 'L/32': _vit(1024, 24, 16, 32),
    'H/14': _vit(1280, 32, 16, 14),
}
# DeiT (timm's deit_{tiny,small,base}_distilled_patch16_224).
DEIT_VARIANTS = {name: dict(VARIANTS[f'{name}/16'], distilled=True, stochastic_depth=0.1)
                 for name in ('Ti', 'S', 'B')}
TINY = dict(embed_dim=64, depth=4, num_heads=4, mlp_dim=128, patch_size=4, image_size=32)

