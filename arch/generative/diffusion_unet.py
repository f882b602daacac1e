"""The diffusion U-Net: DDPM's (Ho et al. 2020) with the improvements of Dhariwal & Nichol
(2021, "Diffusion models beat GANs") and Stable Diffusion's spatial transformers (Rombach
et al. 2022, "High-resolution image synthesis with latent diffusion models"). A denoiser
for arch/generative/diffusion.py: `net(x_BHWC, t_B, label_B=None, context_BSE=None, *,
train) -> (B, H, W, out_channels)`.

- Timestep t -> sinusoids of width block_channels[0] ([cos, sin], frequencies
  10000^(-i / half)) -> Dense(4 ch0) -> SiLU -> Dense(4 ch0): the embedding `emb`; a class
  label adds a learned row of a (num_classes + 1)-row table (the last row is the null
  class of classifier-free guidance).
- ResBlock: GroupNorm -> SiLU -> conv3x3 -> + Dense(SiLU(emb)) -> GroupNorm -> SiLU ->
  dropout -> conv3x3, plus the input (through a 1x1 conv when the width changes).
- SpatialTransformer: GroupNorm (eps 1e-6) -> 1x1 conv in -> `transformer_depth` blocks
  of [LayerNorm -> self-attention, LayerNorm -> cross-attention to the context (when
  `context_dim` is set), LayerNorm -> GEGLU feed-forward (4x)] with residuals -> 1x1 conv
  out, plus the input. Attention projections have no bias except the output's.
- Levels i = 0..L-1 of width block_channels[i]: `layers_per_block` ResBlocks (each followed
  by a SpatialTransformer where attention[i]), then a stride-2 conv3x3 downsample except
  at the last level. Every output of conv_in, a block, or a downsample is kept as a skip.
  Middle: ResBlock, SpatialTransformer, ResBlock. Up levels mirror the down ones with one
  more ResBlock each, every ResBlock taking the concatenation with the latest skip, then
  nearest x2 upsampling + conv3x3 except at level 0. Out: GroupNorm -> SiLU -> conv3x3.

Variant 'sd15' is Stable Diffusion 1.5's U-Net, the layer structure of diffusers'
UNet2DConditionModel with its SD-1.5 configuration (859,520,964 parameters; diffusers'
"attention_head_dim=8" is 8 heads). Choices: the last conv of every ResBlock, every
transformer's proj_out and the output conv start at zero (as in the DDPM/ADM/LDM code;
diffusers initialises them randomly), so the network starts as a near-identity on its
skip paths and outputs 0; proj_in/out are 1x1 convs (SD 1.x; the same parameters as
SD 2's linear ones). All convs pad symmetrically.

Dimension key: B batch, H W spatial, C channels, T H*W tokens, S context length,
E context width, D time-embedding width.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.attention import Attention
from arch.layers.conv import channel_init, kernel_init
from arch.layers.embed import timestep_embedding

Dtype = Any


def _conv(features, kernel=3, strides=1, zero=False, name=None, dtype=jnp.float32,
          param_dtype=jnp.float32):
  p = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=[(p, p), (p, p)], dtype=dtype, param_dtype=param_dtype, name=name,
                 kernel_init=kernel_init(nn.initializers.zeros if zero else
                                         nn.initializers.lecun_normal()),
                 bias_init=channel_init(nn.initializers.zeros))


def _dense(features, axes=('embed', 'mlp'), name=None, dtype=jnp.float32,
           param_dtype=jnp.float32):
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))


def _group_norm(groups, eps, name, dtype, param_dtype):
  return nn.GroupNorm(num_groups=groups, epsilon=eps, dtype=dtype, param_dtype=param_dtype,
                      name=name)


class ResBlock(nn.Module):
  """GroupNorm-SiLU-conv twice, the time embedding added in between; residual."""
  features: int
  groups: int = 32
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, emb_BD, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.silu(_group_norm(self.groups, 1e-5, 'norm1', **kw)(x_BHWC))
    h = _conv(self.features, name='conv1', **kw)(h)
    h = h + _dense(self.features, name='time_emb_proj', **kw)(nn.silu(emb_BD))[:, None, None]
    h = nn.silu(_group_norm(self.groups, 1e-5, 'norm2', **kw)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = _conv(self.features, zero=True, name='conv2', **kw)(h)
    if x_BHWC.shape[-1] != self.features:
      x_BHWC = _conv(self.features, 1, name='conv_shortcut', **kw)(x_BHWC)
    return x_BHWC + h


class TransformerBlock(nn.Module):
  """Pre-LN self-attention, cross-attention (with a context), GEGLU feed-forward."""
  num_heads: int
  cross: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTC, context_BSE=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    c = x_BTC.shape[-1]
    ln = lambda name: nn.LayerNorm(epsilon=1e-5, name=name, **kw)
    attn = lambda name: Attention(self.num_heads, use_bias=False, out_bias=True, name=name, **kw)
    x_BTC = x_BTC + attn('attn1')(ln('norm1')(x_BTC))
    if self.cross:
      x_BTC = x_BTC + attn('attn2')(ln('norm2')(x_BTC), context_BSE.astype(self.dtype))
    h, gate = jnp.split(_dense(8 * c, name='ff_proj', **kw)(ln('norm3')(x_BTC)), 2, axis=-1)
    h = h * nn.gelu(gate, approximate=False)
    return x_BTC + _dense(c, ('mlp', 'embed'), name='ff_out', **kw)(h)


class SpatialTransformer(nn.Module):
  """GroupNorm -> 1x1 conv -> transformer blocks over the H*W tokens -> 1x1 conv; residual."""
  num_heads: int
  depth: int = 1
  cross: bool = False
  groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, context_BSE=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, c = x_BHWC.shape
    y = _group_norm(self.groups, 1e-6, 'norm', **kw)(x_BHWC)
    y = _conv(c, 1, name='proj_in', **kw)(y).reshape(b, h * w, c)
    for i in range(self.depth):
      y = TransformerBlock(self.num_heads, self.cross, name=f'block{i}', **kw)(y, context_BSE)
    y = _conv(c, 1, zero=True, name='proj_out', **kw)(y.reshape(b, h, w, c))
    return x_BHWC + y


class UNet(nn.Module):
  """The diffusion U-Net: (x (B, H, W, in), t (B,), label (B,), context (B, S, E)) ->
  (B, H, W, out_channels). H and W must be multiples of 2^(levels - 1)."""
  out_channels: int = 4
  block_channels: Sequence[int] = (320, 640, 1280, 1280)
  attention: Sequence[bool] = (True, True, True, False)  # a transformer after each block
  layers_per_block: int = 2
  num_heads: int = 8
  transformer_depth: int = 1
  context_dim: Optional[int] = 768  # cross-attention width; None: self-attention only
  mid_attention: bool = True
  num_classes: int = 0      # > 0: class-conditional, with a null row for CFG
  groups: int = 32          # GroupNorm groups
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, t_B, label_B=None, context_BSE=None, *, train: bool = False):
    chans, levels = tuple(self.block_channels), len(self.block_channels)
    if len(self.attention) != levels:
      raise ValueError(f'UNet: attention {tuple(self.attention)} needs one flag per level '
                       f'of block_channels {chans}')
    factor = 2 ** (levels - 1)
    if x_BHWC.ndim != 4 or x_BHWC.shape[1] % factor or x_BHWC.shape[2] % factor:
      raise ValueError(f'UNet: takes (B, H, W, C) with H and W multiples of {factor}; got '
                       f'{x_BHWC.shape}')
    cross = self.context_dim is not None
    if cross and context_BSE is None:
      raise ValueError(f'UNet: context_dim={self.context_dim} needs context states')
    if self.num_classes and label_B is None:
      raise ValueError(f'UNet: num_classes={self.num_classes} needs labels (the null class '
                       f'{self.num_classes} for none)')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    res = lambda f, name: ResBlock(f, self.groups, self.dropout, name=name, **kw)
    xf = lambda name: SpatialTransformer(self.num_heads, self.transformer_depth, cross,
                                         self.groups, name=name, **kw)

    emb = timestep_embedding(t_B, chans[0])
    emb = _dense(4 * chans[0], name='time_linear_1', **kw)(emb)
    emb_BD = _dense(4 * chans[0], ('mlp', 'embed'), name='time_linear_2', **kw)(nn.silu(emb))
    if self.num_classes:
      table = nn.Embed(self.num_classes + 1, 4 * chans[0], name='class_embed', **kw)
      emb_BD = emb_BD + table(label_B)

    h = _conv(chans[0], name='conv_in', **kw)(x_BHWC.astype(self.dtype))
    skips = [h]
    for i, ch in enumerate(chans):
      for j in range(self.layers_per_block):
        h = res(ch, f'down{i}_res{j}')(h, emb_BD, train=train)
        if self.attention[i]:
          h = xf(f'down{i}_attn{j}')(h, context_BSE)
        skips.append(h)
      if i < levels - 1:
        h = _conv(ch, strides=2, name=f'down{i}_downsample', **kw)(h)
        skips.append(h)

    h = res(chans[-1], 'mid_res0')(h, emb_BD, train=train)
    if self.mid_attention:
      h = xf('mid_attn')(h, context_BSE)
    h = res(chans[-1], 'mid_res1')(h, emb_BD, train=train)

    for i in reversed(range(levels)):
      for j in range(self.layers_per_block + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = res(chans[i], f'up{i}_res{j}')(h, emb_BD, train=train)
        if self.attention[i]:
          h = xf(f'up{i}_attn{j}')(h, context_BSE)
      if i > 0:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest x2
        h = _conv(chans[i], name=f'up{i}_upsample', **kw)(h)

    h = nn.silu(_group_norm(self.groups, 1e-5, 'norm_out', **kw)(h))
    return _conv(self.out_channels, zero=True, name='conv_out', **kw)(h)


Model = UNet  # 'generative.diffusion_unet'

VARIANTS = {
    # Stable Diffusion 1.5 (latents 64x64x4, CLIP ViT-L/14 text states of width 768).
    'sd15': dict(out_channels=4, block_channels=(320, 640, 1280, 1280),
                 attention=(True, True, True, False), layers_per_block=2, num_heads=8,
                 context_dim=768),
    # 8x8 digits: two levels (8x8, 4x4), self-attention at 4x4 and in the middle.
    'digits': dict(out_channels=1, block_channels=(32, 64), attention=(False, True),
                   layers_per_block=2, num_heads=4, context_dim=None, groups=8),
    # Tests.
    'tiny': dict(out_channels=1, block_channels=(8, 16), attention=(False, True),
                 layers_per_block=1, num_heads=2, context_dim=None, groups=4),
}
