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
- SpatialTransformer: GroupNorm (eps 1e-6) -> 1x1 conv (or Linear) in -> `transformer_depth` blocks
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

Variant 'sdxl' is SDXL base 1.0's U-Net (Podell et al. 2023, "SDXL: improving latent
diffusion models for high-resolution image synthesis"): diffusers' UNet2DConditionModel
with stable-diffusion-xl-base-1.0's configuration, 2,567,463,684 parameters. Three levels
(320, 640, 1280), the first without attention (DownBlock2D / UpBlock2D); per-level heads
(5, 10, 20), all 64 wide (diffusers' "attention_head_dim=[5, 10, 20]" again counts heads),
and per-level transformer depths (1, 2, 10), the middle block taking the last level's;
Linear proj_in/out (`linear_projection`); cross-attention to 2048-wide states (CLIP ViT-L's
768 and OpenCLIP bigG's 1280 concatenated). Its 'text_time' added embedding
(`addition_time_embed_dim`): the 6 micro-conditioning ids (original height and width, crop
top and left, target height and width) each become 256 sinusoids ([cos, sin], as the
timestep's), concatenated after the pooled 1280-wide text embedding (2816 numbers) ->
Linear -> SiLU -> Linear to the time-embedding width, added to `emb`. They come in as
keyword arguments `text_embeds_BP` (B, 1280) and `time_ids_BK` (B, 6); the diffusion
objective passes neither, so SDXL is a network for composing and for train.summary here.
Checked once against diffusers 0.42 (2026-12-06): a tiny SDXL-like configuration (widths
32/64, heads 2/4, depths 1/2, Linear projections, text_time) with random weights loaded
into both gave the same output to 1.2e-6 (mean |output| 0.39).

`init` may leave out the conditioning inputs whose widths are attributes (the context of
`context_dim`, the added embedding's text and ids): parameter shapes do not depend on them,
so a task whose example batch has none (train.summary of configs/ddpm_digits.py:variant=sdxl)
still counts the model; `apply` without them is a ConfigError.

Dimension key: B batch, H W spatial, C channels, T H*W tokens, S context length,
E context width, D time-embedding width, P pooled text width, K micro-conditioning ids.
"""

from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.attention import Attention
from arch.layers.conv import channel_init, kernel_init
from arch.layers.embed import timestep_embedding
from arch.task import ConfigError

Dtype = Any


def _conv(features, kernel=3, strides=1, zero=False, name=None, dtype=jnp.float32,
          param_dtype=jnp.float32):
  p = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=[(p, p), (p, p)], dtype=dtype, param_dtype=param_dtype, name=name,
                 kernel_init=kernel_init(nn.initializers.zeros if zero else
                                         nn.initializers.lecun_normal()),
                 bias_init=channel_init(nn.initializers.zeros))


def _dense(features, axes=('embed', 'mlp'), zero=False, name=None, dtype=jnp.float32,
           param_dtype=jnp.float32):
  init = nn.initializers.zeros if zero else nn.initializers.lecun_normal()
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(init, axes),
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
  """GroupNorm -> projection in -> transformer blocks over the H*W tokens -> projection out;
  residual. The projections are 1x1 convs (SD 1.x) or Linear layers (`linear`: SD 2, SDXL)."""
  num_heads: int
  depth: int = 1
  cross: bool = False
  groups: int = 32
  linear: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, context_BSE=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, c = x_BHWC.shape
    y = _group_norm(self.groups, 1e-6, 'norm', **kw)(x_BHWC)
    if self.linear:
      y = _dense(c, name='proj_in', **kw)(y.reshape(b, h * w, c))
    else:
      y = _conv(c, 1, name='proj_in', **kw)(y).reshape(b, h * w, c)
    for i in range(self.depth):
      y = TransformerBlock(self.num_heads, self.cross, name=f'block{i}', **kw)(y, context_BSE)
    if self.linear:
      y = _dense(c, ('mlp', 'embed'), zero=True, name='proj_out', **kw)(y)
    else:
      y = _conv(c, 1, zero=True, name='proj_out', **kw)(y.reshape(b, h, w, c))
    return x_BHWC + y.reshape(b, h, w, c)


def _per_level(value, levels: int, name: str) -> tuple:
  """An int for every level, or one per level."""
  values = (value,) * levels if isinstance(value, int) else tuple(value)
  if len(values) != levels:
    raise ValueError(f'UNet: {name} {values} needs one value per level ({levels})')
  return values


class UNet(nn.Module):
  """The diffusion U-Net: (x (B, H, W, in), t (B,), label (B,), context (B, S, E)) ->
  (B, H, W, out_channels). H and W must be multiples of 2^(levels - 1)."""
  out_channels: int = 4
  block_channels: Sequence[int] = (320, 640, 1280, 1280)
  attention: Sequence[bool] = (True, True, True, False)  # a transformer after each block
  layers_per_block: int = 2
  num_heads: Union[int, Sequence[int]] = 8  # heads of each level's transformers (or one for all)
  transformer_depth: Union[int, Sequence[int]] = 1  # blocks per transformer (per level)
  context_dim: Optional[int] = 768  # cross-attention width; None: self-attention only
  mid_attention: bool = True  # (with the last level's heads and depth)
  linear_projection: bool = False  # Linear proj_in/out in the transformers (SD 2, SDXL)
  # SDXL's 'text_time' addition: > 0 is the sinusoid width of each micro-conditioning id
  addition_time_embed_dim: int = 0
  addition_time_ids: int = 6  # (original size, crop top-left, target size) in SDXL
  addition_text_dim: int = 1280  # the pooled text embedding's width
  num_classes: int = 0      # > 0: class-conditional, with a null row for CFG
  groups: int = 32          # GroupNorm groups
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, t_B, label_B=None, context_BSE=None, *, text_embeds_BP=None,
               time_ids_BK=None, train: bool = False):
    chans, levels = tuple(self.block_channels), len(self.block_channels)
    if len(self.attention) != levels:
      raise ValueError(f'UNet: attention {tuple(self.attention)} needs one flag per level '
                       f'of block_channels {chans}')
    heads = _per_level(self.num_heads, levels, 'num_heads')
    depths = _per_level(self.transformer_depth, levels, 'transformer_depth')
    factor = 2 ** (levels - 1)
    if x_BHWC.ndim != 4 or x_BHWC.shape[1] % factor or x_BHWC.shape[2] % factor:
      raise ValueError(f'UNet: takes (B, H, W, C) with H and W multiples of {factor}; got '
                       f'{x_BHWC.shape}')
    b = x_BHWC.shape[0]
    cross = self.context_dim is not None
    if cross and context_BSE is None:
      if not self.is_initializing():
        raise ConfigError(f'UNet: context_dim={self.context_dim} needs context states')
      # init only: the parameters' shapes come from context_dim, not from the states
      context_BSE = jnp.zeros((b, 1, self.context_dim), self.dtype)
    if self.num_classes and label_B is None:
      raise ValueError(f'UNet: num_classes={self.num_classes} needs labels (the null class '
                       f'{self.num_classes} for none)')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    res = lambda f, name: ResBlock(f, self.groups, self.dropout, name=name, **kw)
    xf = lambda i, name: SpatialTransformer(heads[i], depths[i], cross, self.groups,
                                            self.linear_projection, name=name, **kw)

    emb = timestep_embedding(t_B, chans[0])
    emb = _dense(4 * chans[0], name='time_linear_1', **kw)(emb)
    emb_BD = _dense(4 * chans[0], ('mlp', 'embed'), name='time_linear_2', **kw)(nn.silu(emb))
    if self.num_classes:
      table = nn.Embed(self.num_classes + 1, 4 * chans[0], name='class_embed', **kw)
      emb_BD = emb_BD + table(label_B)
    if self.addition_time_embed_dim:
      emb_BD = emb_BD + self._text_time(text_embeds_BP, time_ids_BK, b, 4 * chans[0])

    h = _conv(chans[0], name='conv_in', **kw)(x_BHWC.astype(self.dtype))
    skips = [h]
    for i, ch in enumerate(chans):
      for j in range(self.layers_per_block):
        h = res(ch, f'down{i}_res{j}')(h, emb_BD, train=train)
        if self.attention[i]:
          h = xf(i, f'down{i}_attn{j}')(h, context_BSE)
        skips.append(h)
      if i < levels - 1:
        h = _conv(ch, strides=2, name=f'down{i}_downsample', **kw)(h)
        skips.append(h)

    h = res(chans[-1], 'mid_res0')(h, emb_BD, train=train)
    if self.mid_attention:
      h = xf(levels - 1, 'mid_attn')(h, context_BSE)
    h = res(chans[-1], 'mid_res1')(h, emb_BD, train=train)

    for i in reversed(range(levels)):
      for j in range(self.layers_per_block + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = res(chans[i], f'up{i}_res{j}')(h, emb_BD, train=train)
        if self.attention[i]:
          h = xf(i, f'up{i}_attn{j}')(h, context_BSE)
      if i > 0:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest x2
        h = _conv(chans[i], name=f'up{i}_upsample', **kw)(h)

    h = nn.silu(_group_norm(self.groups, 1e-5, 'norm_out', **kw)(h))
    return _conv(self.out_channels, zero=True, name='conv_out', **kw)(h)

  def _text_time(self, text_embeds_BP, time_ids_BK, b: int, width: int):
    """SDXL's added embedding: [pooled text, sinusoids of each micro-conditioning id]
    -> Linear -> SiLU -> Linear, added to the timestep embedding (diffusers'
    addition_embed_type='text_time')."""
    k, p = self.addition_time_ids, self.addition_text_dim
    if text_embeds_BP is None or time_ids_BK is None:
      if not self.is_initializing():
        raise ConfigError(f'UNet: addition_time_embed_dim={self.addition_time_embed_dim} '
                          f'needs text_embeds_BP (B, {p}) and time_ids_BK (B, {k})')
      # init only, as with the context: the shapes come from the attributes
      text_embeds_BP = jnp.zeros((b, p)) if text_embeds_BP is None else text_embeds_BP
      time_ids_BK = jnp.zeros((b, k)) if time_ids_BK is None else time_ids_BK
    if text_embeds_BP.shape[1:] != (p,) or time_ids_BK.shape[1:] != (k,):
      raise ValueError(f'UNet: text_embeds_BP {text_embeds_BP.shape} and time_ids_BK '
                       f'{time_ids_BK.shape} must be (B, {p}) and (B, {k})')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    d = self.addition_time_embed_dim
    ids_BKF = timestep_embedding(time_ids_BK.reshape(-1), d).reshape(b, k * d)
    h = jnp.concatenate([text_embeds_BP.astype(jnp.float32), ids_BKF], axis=-1)
    h = _dense(width, (None, 'embed'), name='add_linear_1', **kw)(h)
    return _dense(width, ('embed', 'mlp'), name='add_linear_2', **kw)(nn.silu(h))


Model = UNet  # 'generative.diffusion_unet'

VARIANTS = {
    # Stable Diffusion 1.5 (latents 64x64x4, CLIP ViT-L/14 text states of width 768).
    'sd15': dict(out_channels=4, block_channels=(320, 640, 1280, 1280),
                 attention=(True, True, True, False), layers_per_block=2, num_heads=8,
                 context_dim=768),
    # SDXL base 1.0 (latents 128x128x4; the two text encoders' states concatenated to
    # 768 + 1280 = 2048, OpenCLIP bigG's pooled 1280 and 6 size/crop ids added to the time
    # embedding): heads of width 64, 1 / 2 / 10 transformer blocks a level.
    'sdxl': dict(out_channels=4, block_channels=(320, 640, 1280), attention=(False, True, True),
                 layers_per_block=2, num_heads=(5, 10, 20), transformer_depth=(1, 2, 10),
                 context_dim=2048, linear_projection=True, addition_time_embed_dim=256,
                 addition_time_ids=6, addition_text_dim=1280),
    # 8x8 digits: two levels (8x8, 4x4), self-attention at 4x4 and in the middle.
    'digits': dict(out_channels=1, block_channels=(32, 64), attention=(False, True),
                   layers_per_block=2, num_heads=4, context_dim=None, groups=8),
    # Tests.
    'tiny': dict(out_channels=1, block_channels=(8, 16), attention=(False, True),
                 layers_per_block=1, num_heads=2, context_dim=None, groups=4),
}
