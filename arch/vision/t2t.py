"""T2T-ViT: Tokens-to-Token ViT (Yuan et al. 2021, "Tokens-to-Token ViT: Training vision
transformers from scratch on ImageNet"), as the official code (yitu-opensource/T2T-ViT)
defines it.

The tokens-to-token module replaces ViT's patch embedding. A *soft split* cuts the image
into overlapping k x k patches (stride s, zero padding p: PyTorch's nn.Unfold; each token's
features C*k*k, channel-major) — 7x7/4, then 3x3/2 twice, so /16 in all. Between splits a
small transformer layer re-structurizes the tokens (width `token_dim`, one head, MLP ratio
1, the value as its attention skip connection since the width changes) and they are laid
back on their grid. A linear projection takes the last split's C*k*k features to D; a
learned class token and a fixed sinusoidal position table follow, then a ViT backbone
(pre-norm blocks, no query/key/value bias, LayerNorm eps 1e-5, exact GELU) and a head on
the class token. `num_classes=0` returns the normed class token (B, D).

The re-structurization layer is a Performer (`tokens_type='performer'`, T2T-ViT-14; the
official default): attention softmax(q k^T) v approximated in linear time by positive
random features phi(x) = exp(w x - |x|^2 / 2) / sqrt(m) (Choromanski et al. 2021, FAVOR+),
with m = token_dim / 2 fixed random features. As in the official code these are orthogonal
rows scaled by sqrt(m), drawn at init and never trained: they live in the 'constants'
collection, not in 'params'. `tokens_type='transformer'` (T2T-ViT_t-14) uses exact
single-head softmax attention, scaled by the *input* width^-1/2, as the official code.

Parameter counts. The paper's table gives 21.5M for T2T-ViT-14 (and T2T-ViT_t-14). The
official T2T-ViT-14 has 21,465,806 trainable parameters — this model's 'params' — and
21,545,550 in `sum(p.numel() for p in model.parameters())`, which also counts its two
frozen tensors: the 197 x 384 = 75,648 sinusoid table (here a constant) and the 2 x 32 x 64
= 4,096 random features (here 'constants'). Both round to the paper's 21.5M, and so does
T2T-ViT_t-14 (`VARIANTS['t14']`): 21,465,422 trainable (no query/key/value biases in its
T2T layers, 384 fewer), 21,541,070 with the table. With the official model's weights
(random, ported one-off) both give its logits to 4e-6. The official code builds its
*pretrained* models with the backbone's attention scaled by D^-1/2 (here
`attention_scale=384 ** -0.5`); the default is the per-head H^-1/2 of its models built
from scratch.

Dimension key: B batch, H W image (or token grid) height and width, C channels, P tokens,
F soft-split features (C*k*k), k a window's rows or columns, E T2T token width, M random
features, D width, K classes.
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from arch.layers.attention import Attention, Projection, dot_product_attention
from arch.layers.conv import classifier_head
from arch.layers.embed import Mlp, norm, sinusoids
from arch.layers.transformer import Block

Dtype = Any
SOFT_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding) of each split


def soft_split(x_BHWC, kernel: int, stride: int, padding: int):
  """Overlapping kernel x kernel patches (PyTorch's nn.Unfold) on their grid:
  (B, H, W, C) -> (B, H', W', C*k*k) with H' = (H + 2p - k) // s + 1, features ordered
  (channel, row, column) as Unfold's."""
  b, h, w, c = x_BHWC.shape
  k, s, p = kernel, stride, padding
  oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
  if oh < 1 or ow < 1:
    raise ValueError(f'soft split {k}x{k}/{s} (padding {p}) needs an input of at least '
                     f'{k - 2 * p}x{k - 2 * p}; got {h}x{w}')
  x = jnp.pad(x_BHWC, ((0, 0), (p, p), (p, p), (0, 0)))
  # Two gathers (rows, then columns of every window), exact in any precision; XLA compiles
  # them, and their scatter-add gradients, far faster than k*k strided slices.
  rows = (np.arange(oh)[:, None] * s + np.arange(k)).reshape(-1)
  cols = (np.arange(ow)[:, None] * s + np.arange(k)).reshape(-1)
  x = jnp.take(jnp.take(x, rows, axis=1), cols, axis=2)  # (B, H' * k, W' * k, C)
  x_BHWCkk = x.reshape(b, oh, k, ow, k, c).transpose(0, 1, 3, 5, 2, 4)
  return x_BHWCkk.reshape(b, oh, ow, c * k * k)


def performer_attention(q_BPE, k_BPE, v_BPE, w_ME, eps: float = 1e-8):
  """softmax(q k^T) v (no 1/sqrt(E) scale) estimated with positive random features:
  phi(q) (sum_P phi(k) v^T) / (phi(q) . sum_P phi(k)), linear in P. With rows of w drawn
  from N(0, I), numerator and denominator are unbiased and the error falls as 1/sqrt(M).
  Float32."""
  m = w_ME.shape[0]
  w_ME = w_ME.astype(jnp.float32)

  def phi(x_BPE):
    x_BPE = x_BPE.astype(jnp.float32)
    sq_BP1 = (x_BPE * x_BPE).sum(-1, keepdims=True) / 2
    return jnp.exp(jnp.einsum('BPE,ME->BPM', x_BPE, w_ME) - sq_BP1) / math.sqrt(m)

  qp_BPM, kp_BPM = phi(q_BPE), phi(k_BPE)
  kv_BME = jnp.einsum('BPM,BPE->BME', kp_BPM, v_BPE.astype(jnp.float32))
  denom_BP = jnp.einsum('BPM,BM->BP', qp_BPM, kp_BPM.sum(axis=1))
  return jnp.einsum('BPM,BME->BPE', qp_BPM, kv_BME) / (denom_BP[..., None] + eps)


class TokenLayer(nn.Module):
  """The T2T re-structurization layer, F -> E: y = v + proj(attn(norm(x))) (one head, the
  value as skip since the width changes), then y + MLP(norm(y)) with hidden width E."""
  dim: int  # E, the T2T token width
  tokens_type: str = 'performer'  # or 'transformer'
  kernel_ratio: float = 0.5  # performer: m = int(E * kernel_ratio) random features
  dropout_rate: float = 0.1  # after proj and after the MLP, performer only (the official's)
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _norm(self, name):
    return norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                name=name)

  @nn.compact
  def __call__(self, x_BPF, *, deterministic: bool = True):
    e = self.dim
    performer = self.tokens_type == 'performer'
    if self.tokens_type not in ('performer', 'transformer'):
      raise ValueError(f"unknown tokens_type {self.tokens_type!r}; valid: 'performer', "
                       "'transformer'")
    h_BPF = self._norm('attn_norm')(x_BPF)
    proj = lambda name: Projection((e,), ('embed', 'kv'), use_bias=performer,
                                   dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    q_BPE, k_BPE, v_BPE = (proj(name)(h_BPF) for name in ('query', 'key', 'value'))
    if performer:
      m = int(e * self.kernel_ratio)
      w = self.variable('constants', 'random_features', lambda: math.sqrt(m) * (
          nn.initializers.orthogonal()(self.make_rng('params'), (m, e), jnp.float32)))
      y_BPE = performer_attention(q_BPE, k_BPE, v_BPE, w.value).astype(self.dtype)
    else:  # the official scales by the input width F, not E
      y_BPE = dot_product_attention(q_BPE[:, :, None], k_BPE[:, :, None], v_BPE[:, :, None],
                                    scale=x_BPF.shape[-1] ** -0.5)[:, :, 0]
    y_BPE = Projection((e,), ('kv', 'embed'), dtype=self.dtype, param_dtype=self.param_dtype,
                       name='out')(y_BPE)
    drop = nn.Dropout(self.dropout_rate if performer else 0.0)
    x_BPE = v_BPE + drop(y_BPE, deterministic=deterministic)
    y_BPE = Mlp(e, 'gelu', dtype=self.dtype, param_dtype=self.param_dtype, name='mlp')(
        self._norm('mlp_norm')(x_BPE))
    return x_BPE + drop(y_BPE, deterministic=deterministic)


class TokensToToken(nn.Module):
  """Images (B, H, W, C) -> tokens (B, P, D): soft split, then (re-structurize, lay back on
  the grid, soft split) per further split, then a linear projection to D."""
  embed_dim: int
  token_dim: int = 64
  soft_splits: tuple = SOFT_SPLITS
  tokens_type: str = 'performer'
  kernel_ratio: float = 0.5
  dropout_rate: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    x_BHWF = soft_split(jnp.asarray(x_BHWC, self.dtype), *self.soft_splits[0])
    for i, split in enumerate(self.soft_splits[1:]):
      b, h, w, f = x_BHWF.shape
      x_BPE = TokenLayer(self.token_dim, self.tokens_type, self.kernel_ratio,
                         self.dropout_rate, dtype=self.dtype, param_dtype=self.param_dtype,
                         name=f'layers_{i}')(x_BHWF.reshape(b, h * w, f),
                                             deterministic=not train)
      x_BHWF = soft_split(x_BPE.reshape(b, h, w, self.token_dim), *split)
    b, h, w, f = x_BHWF.shape
    # The soft split's features are an unfolded patch, like a convolution's input.
    return Projection((self.embed_dim,), ('conv_in', 'embed'), dtype=self.dtype,
                      param_dtype=self.param_dtype, name='project')(
                          x_BHWF.reshape(b, h * w, f))


class _Block(Block):
  """The shared pre-norm Block with the official's bias-free query/key/value projections
  (the output projection and the MLP keep theirs)."""

  def make_attention(self, name):
    return Attention(self.num_heads, use_bias=False, out_bias=True,
                     dropout_rate=self.attention_dropout_rate, scale=self.attention_scale,
                     dtype=self.dtype, param_dtype=self.param_dtype, name=name)


class Model(nn.Module):
  """T2T-ViT: images (B, H, W, C) float -> logits (B, K) float32 (see the module doc)."""
  num_classes: int = 1000
  embed_dim: int = 384
  depth: int = 14
  num_heads: int = 6
  mlp_dim: int = 1152
  token_dim: int = 64  # E: the width of the T2T module's tokens
  tokens_type: str = 'performer'  # 'performer' (T2T-ViT) | 'transformer' (T2T-ViT_t)
  kernel_ratio: float = 0.5  # performer random features per T2T token channel
  t2t_dropout_rate: float = 0.1  # the official Performer layer's fixed dropout
  soft_splits: tuple = SOFT_SPLITS
  attention_scale: Optional[float] = None  # default H^-1/2; released weights: D^-1/2
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0  # drop-path rate rising linearly to this over the depth
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool = False):
    d = self.embed_dim
    x_BPD = TokensToToken(d, self.token_dim, tuple(map(tuple, self.soft_splits)),
                          self.tokens_type, self.kernel_ratio, self.t2t_dropout_rate,
                          dtype=self.dtype, param_dtype=self.param_dtype,
                          name='tokens_to_token')(x_BHWC, train=train)
    b, p = x_BPD.shape[:2]
    cls = self.param('cls_token', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, None, 'embed')), (1, 1, d), self.param_dtype)
    x_BPD = jnp.concatenate([jnp.broadcast_to(jnp.asarray(cls, self.dtype), (b, 1, d)),
                             x_BPD], axis=1)
    x_BPD = x_BPD + jnp.asarray(sinusoids(p + 1, d), self.dtype)
    x_BPD = nn.Dropout(self.dropout_rate)(x_BPD, deterministic=not train)
    for i in range(self.depth):
      rate = self.stochastic_depth * i / max(self.depth - 1, 1)
      x_BPD = _Block(self.num_heads, self.mlp_dim, pre_norm=True, norm_eps=self.norm_eps,
                     activation='gelu', attention_scale=self.attention_scale,
                     dropout_rate=self.dropout_rate,
                     attention_dropout_rate=self.attention_dropout_rate,
                     drop_path_rate=rate, dtype=self.dtype, param_dtype=self.param_dtype,
                     name=f'layers_{i}')(x_BPD, deterministic=not train)
    rep_BD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                  name='norm')(x_BPD[:, 0])
    if not self.num_classes:
      return rep_BD.astype(jnp.float32)
    return classifier_head(self.num_classes, self.dtype, self.param_dtype, 'head',
                           nn.initializers.zeros)(rep_BD).astype(jnp.float32)


def _t2t(width, depth, heads, mlp_ratio, **kw):
  return dict(embed_dim=width, depth=depth, num_heads=heads, mlp_dim=mlp_ratio * width, **kw)


# The official t2t_vit_14 (Performer T2T layers) and t2t_vit_t_14 (Transformer ones).
VARIANTS = {
    '14': _t2t(384, 14, 6, 3),
    't14': _t2t(384, 14, 6, 3, tokens_type='transformer'),
}
TINY = dict(embed_dim=64, depth=2, num_heads=4, mlp_dim=128, token_dim=16)
