"""CaiT: Class-Attention in Image Transformers (Touvron et al. 2021, "Going deeper with
image transformers"), in timm's layout (timm.models.cait).

Two stages. The self-attention stage is a ViT without a class token: patch embedding,
learned positions on the patches only, then pre-norm blocks whose branches are scaled by
LayerScale (a learned per-channel vector, initialised small) and whose attention is
*talking-heads* attention (Shazeer et al. 2020): the attention logits are mixed linearly
across heads before the softmax (timm's `proj_l`) and the weights again after it
(`proj_w`), both with biases. The class-attention stage then inserts the class token late:
in each of its `class_depth` blocks the class token alone attends to [class; patches] and
only it is updated (attention and MLP, LayerScale); the patch tokens pass through
unchanged. A final LayerNorm (eps 1e-6 everywhere) on the class token, and a linear head.

Parameter counts equal timm's: cait_xxs24_224 11,956,264 and cait_s24_224 46,916,200
(`VARIANTS['XXS24']`, `VARIANTS['S24']`), and with timm's weights (random, ported
one-off) the logits agree to 4e-6. `num_classes=0` drops the head and returns the
normed class token (B, D). `stochastic_depth` is one drop-path rate for every
self-attention block (uniform, as in the official code and timm), none in the class
stage.

Dimension key: B batch, H W image height and width, C channels, P patches, T S query and
key length, N heads, M heads after mixing, E head width, D width, K classes.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.layers.attention import (Attention, Projection, causal_mask, combine_masks,
                                   NEG_INF)
from arch.layers.conv import DropPath, classifier_head
from arch.layers.embed import Mlp, norm
from arch.layers.transformer import Block
from arch.vision.vit import patch_tokens

Dtype = Any


class TalkingHeadsAttention(nn.Module):
  """Self-attention with the logits mixed across heads before the softmax and the weights
  mixed again after it (Shazeer et al. 2020). Called like layers.attention.Attention."""
  num_heads: int
  use_bias: bool = True  # on the query/key/value projections
  dropout_rate: float = 0.0  # on the mixed attention weights
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _mix(self, name):
    # N x N across heads: replicated, since every output head reads every input head.
    return Projection((self.num_heads,), (None, None), dtype=jnp.float32,
                      param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, x_BTD, *, mask=None, bias=None, causal: bool = False,
               positions_BT=None, deterministic: bool = True, decode: bool = False):
    del positions_BT  # no rotary positions here
    if decode:
      raise ValueError('talking-heads attention keeps no KV cache (decode=True)')
    b, t, d = x_BTD.shape
    n = self.num_heads
    if d % n:
      raise ValueError(f'model width {d} is not divisible by {n} heads')
    e = d // n
    proj = lambda name: Projection((n, e), ('embed', 'heads', 'kv'), use_bias=self.use_bias,
                                   dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    q_BTNE, k_BSNE, v_BSNE = (proj(name)(x_BTD) for name in ('query', 'key', 'value'))
    logits_BTSN = jnp.einsum('BTNE,BSNE->BTSN', q_BTNE * e ** -0.5, k_BSNE,
                             preferred_element_type=jnp.float32)
    logits_BTSM = self._mix('mix_logits')(logits_BTSN)  # timm's proj_l, in float32
    if bias is not None:
      logits_BTSM += jnp.broadcast_to(bias, (b, n, t, t)).transpose(0, 2, 3, 1)
    if causal:
      pos_BT = jnp.broadcast_to(jnp.arange(t), (b, t))
      mask = combine_masks(mask, causal_mask(pos_BT, pos_BT))
    if mask is not None:
      mask_BTSM = jnp.broadcast_to(mask, (b, n, t, t)).transpose(0, 2, 3, 1)
      logits_BTSM = jnp.where(mask_BTSM, logits_BTSM, NEG_INF)
    weights_BTSN = jax.nn.softmax(logits_BTSM, axis=2)
    weights_BTSM = self._mix('mix_weights')(weights_BTSN)  # timm's proj_w
    weights_BTSM = nn.Dropout(self.dropout_rate)(weights_BTSM, deterministic=deterministic)
    out_BTNE = jnp.einsum('BTSN,BSNE->BTNE', weights_BTSM.astype(self.dtype), v_BSNE)
    return Projection((d,), ('heads', 'kv', 'embed'), num_in=2, dtype=self.dtype,
                      param_dtype=self.param_dtype, name='out')(out_BTNE)


class TalkingHeadsBlock(Block):
  """The shared pre-norm Block (LayerScale, drop path) with talking-heads self-attention."""

  def make_attention(self, name):
    return TalkingHeadsAttention(self.num_heads, use_bias=self.use_bias,
                                 dropout_rate=self.attention_dropout_rate, dtype=self.dtype,
                                 param_dtype=self.param_dtype, name=name)


class ClassAttentionBlock(nn.Module):
  """Updates the class token only: cls += g1 * attn(q=norm(cls), kv=norm([cls; patches]));
  cls += g2 * MLP(norm(cls)). The patch tokens are read, never written."""
  num_heads: int
  mlp_dim: int
  layer_scale_init: float = 1e-5
  norm_eps: float = 1e-6
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _norm(self, name):
    return norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                name=name)

  def _add(self, cls_B1D, y_B1D, name, deterministic):
    """The class token plus a LayerScaled, dropped branch output."""
    y_B1D = nn.Dropout(self.dropout_rate)(y_B1D, deterministic=deterministic)
    gamma = self.param(f'{name}_scale', nn.with_logical_partitioning(
        nn.initializers.constant(self.layer_scale_init), ('embed',)), (y_B1D.shape[-1],),
        self.param_dtype)
    y_B1D = DropPath(self.drop_path_rate)(y_B1D * jnp.asarray(gamma, self.dtype),
                                          train=not deterministic)
    return cls_B1D + y_B1D

  @nn.compact
  def __call__(self, cls_B1D, x_BPD, *, deterministic: bool = True):
    u_BTD = self._norm('class_attn_norm')(jnp.concatenate([cls_B1D, x_BPD], axis=1))
    y_B1D = Attention(self.num_heads, dropout_rate=self.attention_dropout_rate,
                      dtype=self.dtype, param_dtype=self.param_dtype, name='class_attn')(
                          u_BTD[:, :1], u_BTD, deterministic=deterministic)
    cls_B1D = self._add(cls_B1D, y_B1D, 'class_attn', deterministic)
    y_B1D = Mlp(self.mlp_dim, 'gelu', dtype=self.dtype, param_dtype=self.param_dtype,
                name='mlp')(self._norm('mlp_norm')(cls_B1D))
    return self._add(cls_B1D, y_B1D, 'mlp', deterministic)


class Model(nn.Module):
  """CaiT: images (B, H, W, C) float -> logits (B, K) float32 (see the module doc)."""
  num_classes: int = 1000
  patch_size: int = 16
  image_size: int = 224  # the position table holds (image_size / patch_size)^2 patches
  embed_dim: int = 384
  depth: int = 24  # self-attention (talking-heads) blocks
  num_heads: int = 8
  mlp_dim: int = 1536
  class_depth: int = 2  # class-attention blocks
  class_mlp_dim: Optional[int] = None  # default mlp_dim
  layer_scale_init: float = 1e-5  # the paper: 0.1 up to depth 18, 1e-5 at 24, 1e-6 beyond
  norm_eps: float = 1e-6
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0  # the same rate in every self-attention block
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    d = self.embed_dim
    x_BPD = patch_tokens(x_BHWC, d, self.patch_size, self.image_size, self.dtype,
                         self.param_dtype)
    b, p = x_BPD.shape[:2]
    pos = self.param('pos_embed', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, 'length', 'embed')), (1, p, d), self.param_dtype)
    x_BPD = nn.Dropout(self.dropout_rate)(x_BPD + jnp.asarray(pos, self.dtype),
                                          deterministic=not train)
    for i in range(self.depth):
      x_BPD = TalkingHeadsBlock(
          self.num_heads, self.mlp_dim, pre_norm=True, norm_eps=self.norm_eps,
          activation='gelu', use_bias=True, dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate,
          layer_scale_init=self.layer_scale_init, drop_path_rate=self.stochastic_depth,
          dtype=self.dtype, param_dtype=self.param_dtype,
          name=f'layers_{i}')(x_BPD, deterministic=not train)

    cls = self.param('cls_token', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, None, 'embed')), (1, 1, d), self.param_dtype)
    cls_B1D = jnp.broadcast_to(jnp.asarray(cls, self.dtype), (b, 1, d))
    for i in range(self.class_depth):
      cls_B1D = ClassAttentionBlock(
          self.num_heads, self.class_mlp_dim or self.mlp_dim,
          layer_scale_init=self.layer_scale_init, norm_eps=self.norm_eps,
          dtype=self.dtype, param_dtype=self.param_dtype,
          name=f'class_layers_{i}')(cls_B1D, x_BPD, deterministic=not train)
    rep_BD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                  name='norm')(cls_B1D[:, 0])
    if not self.num_classes:
      return rep_BD.astype(jnp.float32)
    return classifier_head(self.num_classes, self.dtype, self.param_dtype, 'head',
                           nn.initializers.zeros)(rep_BD).astype(jnp.float32)


def _cait(width, depth, heads, **kw):
  return dict(embed_dim=width, depth=depth, num_heads=heads, mlp_dim=4 * width, **kw)


# timm's cait_xxs24_224 and cait_s24_224 (patch 16, 224x224, LayerScale 1e-5).
VARIANTS = {
    'XXS24': _cait(192, 24, 4),
    'S24': _cait(384, 24, 8),
}
TINY = dict(embed_dim=64, depth=4, num_heads=4, mlp_dim=128, class_depth=2, patch_size=4,
            image_size=32, layer_scale_init=0.1)
