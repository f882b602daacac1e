"""Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers"): the denoising network of a diffusion model as a ViT over patches of the
noisy image (or latent), conditioned on the timestep and the class through adaLN-Zero.

The network plugs into the diffusion objective (arch/generative/diffusion.py) through the
denoiser interface every diffusion network here has:

  net(x_BHWC, t_B, label_B=None, context_BSE=None, *, train) -> (B, H, W, out_channels)

t_B is the (float) timestep in [0, num_timesteps); label_B the int class in
[0, num_classes], where num_classes is the null class of classifier-free guidance (the
objective drops labels to it; the table has that extra row when `class_dropout`, as the
paper's code has when its label-dropout probability is > 0). A missing label means the
null class. DiT takes no context sequence: passing one is an error.

The network, as in the paper and its code (facebookresearch/DiT):
- patchify: a p x p conv of stride p to the hidden width D (Xavier-uniform over the
  flattened patch), plus a FIXED 2-D sin-cos position table (computed, not a parameter,
  so any grid size works; arch/layers/embed.sincos_2d, whose first half of the channels
  codes the row: the reference's codes the column first, a fixed relabelling of the table
  that the learned patch embedding absorbs);
- conditioning c = timestep embedding + label embedding: the timestep's 256 sinusoidal
  frequencies (cos half, then sin half, max period 10,000) -> Linear -> SiLU -> Linear,
  both N(0, 0.02); the label a learned (num_classes + 1, D) table, N(0, 0.02);
- N DiT blocks with adaLN-Zero: SiLU(c) -> one zero-initialised Linear to 6D giving
  (shift, scale, gate) for attention and for the MLP; x += gate * attn(LN(x) * (1 + scale)
  + shift), likewise for the MLP (ratio 4, GELU tanh approximation); the LayerNorms have no
  affine parameters (eps 1e-6). With the gates zero every block starts as the identity;
- the final layer: LN modulated by (shift, scale) from another zero-initialised SiLU +
  Linear, then a zero-initialised Linear to p * p * out_channels per token, which
  unpatchify puts back in place (each token's vector is its patch in (row, column,
  channel) order). The whole network outputs exactly zero at init.
`learn_sigma`: out_channels = 2 * in_channels, the noise prediction then the
interpolation of the variance (Nichol & Dhariwal 2021's learned range), as DiT trains; the
diffusion objective sets `out_channels` itself (2C with variance='learned_range'), which
overrides it.
The attention (q/k/v with biases, 1/sqrt(head width) scale) and MLP are the shared
layers; their kernels are normal with the variance of the reference's Xavier-uniform
(fused q/k/v: 1/(2D); out projection: 1/D; MLP: 2/(5D)).

Sizes (the paper's table 1; `VARIANTS`): S (12 layers, width 384, 6 heads), B (12, 768,
12), L (24, 1024, 16), XL (28, 1152, 16), each with patch 2, 4 or 8 ('S/2' ... 'XL/8'),
and 'tiny' for tests. Parameter counts at the paper's ImageNet 256x256 setting (32x32x4
latents, 1000 classes + the null class, learn_sigma): DiT-XL/2 has 674,834,720
parameters. The official repo prints 675,129,632, which includes its frozen pos_embed
nn.Parameter (256 tokens x 1152 = 294,912; here a computed constant). diffusers'
DiTTransformer2DModel counts 749,826,464 for the same network because each of its 28
blocks keeps its own timestep MLP and label table (2,777,472 parameters) where the
official model has one shared pair: 749,826,464 - 27 x 2,777,472 = 674,834,720. Every
variant's count, with diffusers' extra copies taken out the same way, equals this one's
(tests/test_dit.py). diffusers also computes two things otherwise (its timestep
frequencies 10000^(-i / 127), its MLP LayerNorm's eps 1e-5): the fields frequency_shift and
mlp_norm_eps reproduce them for its imported weights (train/port.py's `dit`); the
defaults are the paper's.

Dimension key: B batch, H W height and width, C channels, T tokens (patches), D width,
P patch size, E context width (unused).
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.attention import Attention
from arch.layers.embed import Mlp, PatchEmbed, sincos_2d, timestep_embedding
from arch.layers.transformer import remat_policy

Dtype = Any


# ---------------------------------------------------------------------------- helpers


def patchify(x_BHWC, p: int):
  """(B, H, W, C) -> (B, H/p * W/p, p * p * C): row-major patches, each flattened in
  (row, column, channel) order, the order of a p x p conv's kernel taps."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x_BTK, p: int, h: int, w: int):
  """The inverse of patchify for an (h, w) image: (B, T, p * p * C) -> (B, h, w, C)."""
  b, _, k = x_BTK.shape
  c = k // (p * p)
  x = x_BTK.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


def modulate(x_BTD, shift_BD, scale_BD):
  return x_BTD * (1 + scale_BD[:, None]) + shift_BD[:, None]


def dense(features: int, axes, init, name: str, dtype, param_dtype):
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=nn.with_logical_partitioning(init, axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))


def plain_norm(dtype, eps: float = 1e-6):
  """LayerNorm without scale and bias (adaLN supplies them), eps 1e-6 (the official DiT's)."""
  return nn.LayerNorm(epsilon=eps, use_scale=False, use_bias=False, dtype=dtype)


# ---------------------------------------------------------------------------- blocks


class TimestepEmbed(nn.Module):
  """t (B,) float -> (B, D): 256 sinusoidal frequencies -> Linear -> SiLU -> Linear."""
  dim: int
  frequency_dim: int = 256
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  frequency_shift: float = 0.0  # diffusers' DiT: 1 (arch/layers/embed.timestep_embedding)

  @nn.compact
  def __call__(self, t_B):
    init = nn.initializers.normal(0.02)
    f_BF = timestep_embedding(t_B, self.frequency_dim, shift=self.frequency_shift)
    # an MLP with a hidden width of D: column- then row-parallel under a tensor axis
    h = dense(self.dim, (None, 'mlp'), init, 'fc1', self.dtype, self.param_dtype)(f_BF)
    return dense(self.dim, ('mlp', 'embed'), init, 'fc2', self.dtype,
                 self.param_dtype)(nn.silu(h))


class Block(nn.Module):
  """One DiT block with adaLN-Zero: (x (B, T, D), c (B, D)) -> (B, T, D)."""
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  mlp_norm_eps: float = 1e-6

  @nn.compact
  def __call__(self, x_BTD, c_BD):
    d = x_BTD.shape[-1]
    mod = dense(6 * d, ('embed', 'mlp'), nn.initializers.zeros, 'adaln', self.dtype,
                self.param_dtype)(nn.silu(c_BD))
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod, 6, axis=-1)
    attn = Attention(self.num_heads, use_bias=True, init_stddev=math.sqrt(1 / (2 * d)),
                     out_init_stddev=math.sqrt(1 / d), dtype=self.dtype,
                     param_dtype=self.param_dtype, name='attn')
    x_BTD = x_BTD + gate_a[:, None] * attn(modulate(plain_norm(self.dtype)(x_BTD),
                                                    shift_a, scale_a))
    mlp = Mlp(int(d * self.mlp_ratio), 'gelu_tanh', init_stddev=math.sqrt(2 / (5 * d)),
              dtype=self.dtype, param_dtype=self.param_dtype, name='mlp')
    return x_BTD + gate_m[:, None] * mlp(modulate(plain_norm(self.dtype, self.mlp_norm_eps)(
        x_BTD), shift_m, scale_m))


class ScanBlock(Block):
  """A DiT block as the body of `nn.scan`: carry x in and out, the condition broadcast."""

  def __call__(self, x_BTD, c_BD):
    return super().__call__(x_BTD, c_BD), None


class FinalLayer(nn.Module):
  """adaLN (shift, scale) -> zero-initialised Linear: (B, T, D) -> (B, T, features)."""
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, c_BD):
    d = x_BTD.shape[-1]
    mod = dense(2 * d, ('embed', 'mlp'), nn.initializers.zeros, 'adaln', self.dtype,
                self.param_dtype)(nn.silu(c_BD))
    shift, scale = jnp.split(mod, 2, axis=-1)
    x_BTD = modulate(plain_norm(self.dtype)(x_BTD), shift, scale)
    return dense(self.features, ('embed', None), nn.initializers.zeros, 'linear',
                 self.dtype, self.param_dtype)(x_BTD)


# ---------------------------------------------------------------------------- the network


class Model(nn.Module):
  """DiT: (x (B, H, W, C), t (B,), label (B,)) -> (B, H, W, out_channels) float32."""
  hidden_dim: int = 1152
  depth: int = 28
  num_heads: int = 16
  patch_size: int = 2
  mlp_ratio: float = 4.0
  num_classes: int = 1000  # 0: unconditional (no label embedding)
  class_dropout: bool = True  # a null-class row (label num_classes) for guidance
  learn_sigma: bool = True  # out_channels = 2 * in_channels (noise, variance interpolation)
  out_channels: Optional[int] = None  # set by the diffusion objective; overrides learn_sigma
  frequency_dim: int = 256  # sinusoidal features of the timestep
  # diffusers' DiTTransformer2DModel computes two things otherwise than the official DiT
  # (train/port.py imports it): frequencies 10000^(-i / (F/2 - 1)) (frequency_shift=1)
  # and the MLP's LayerNorm eps from its config's norm_eps (1e-5). Defaults: the paper's.
  frequency_shift: float = 0.0
  mlp_norm_eps: float = 1e-6
  # The blocks as one nn.scan (compile time flat in depth): parameters stacked along a
  # leading 'layers' axis under `block`; stack_layers(params, 'block', depth) converts
  # an unrolled checkpoint (block0, block1, ...), unstack_layers back.
  scan_layers: bool = False
  # Activation checkpointing of each block: '' (none) | 'block' | 'dots' | 'offload', the
  # policies of arch/layers/transformer.py (what the backward pass keeps; the rest it
  # recomputes). The parameters keep their names; with scan_layers it is remat in scan.
  remat: str = ''
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _block_class(self, block):
    """`block` (Block or ScanBlock), wrapped in nn.remat under the `remat` policy."""
    policy = remat_policy(self.remat)  # an unknown name fails here
    return nn.remat(block, policy=policy) if self.remat else block

  @nn.compact
  def __call__(self, x_BHWC, t_B, label_B=None, context_BSE=None, *, train: bool = False):
    del train  # DiT has no dropout; label dropout for guidance is the objective's
    if context_BSE is not None:
      raise ValueError('DiT conditions on the timestep and a class label only; it takes no '
                       'context sequence (context_BSE)')
    b, h, w, c = x_BHWC.shape
    p, d = self.patch_size, self.hidden_dim
    if d % 4:
      raise ValueError(f'DiT width {d} must be divisible by 4 (2-D sin-cos positions)')
    xavier = nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform', in_axis=(0, 1, 2),
                                              out_axis=-1)
    x_BTD = PatchEmbed(d, p, kernel_init=xavier, dtype=self.dtype,
                       param_dtype=self.param_dtype, name='patch_embed')(x_BHWC)
    x_BTD = x_BTD + jnp.asarray(sincos_2d(h // p, w // p, d), self.dtype)[None]

    c_BD = TimestepEmbed(d, self.frequency_dim, self.dtype, self.param_dtype,
                         self.frequency_shift, name='t_embed')(t_B)
    if self.num_classes:
      rows = self.num_classes + int(self.class_dropout)
      if label_B is None:
        if not self.class_dropout:
          raise ValueError('this DiT is class-conditional without a null class '
                           '(class_dropout=False): pass label_B')
        label_B = jnp.full((b,), self.num_classes, jnp.int32)
      table = nn.Embed(rows, d, dtype=self.dtype, param_dtype=self.param_dtype,
                       name='label_embed', embedding_init=nn.with_logical_partitioning(
                           nn.initializers.normal(0.02), ('classes', 'embed')))
      c_BD = c_BD + table(jnp.asarray(label_B, jnp.int32))
    elif label_B is not None:
      raise ValueError('this DiT is unconditional (num_classes=0) and takes no label_B')

    if self.scan_layers:
      blocks = nn.scan(self._block_class(ScanBlock), variable_axes={'params': 0},
                       split_rngs={'params': True}, in_axes=(nn.broadcast,), length=self.depth,
                       metadata_params={nn.PARTITION_NAME: 'layers'})
      x_BTD, _ = blocks(self.num_heads, self.mlp_ratio, self.dtype, self.param_dtype,
                        self.mlp_norm_eps, name='block')(x_BTD, c_BD)
    for i in range(0 if self.scan_layers else self.depth):
      x_BTD = self._block_class(Block)(self.num_heads, self.mlp_ratio, self.dtype,
                                       self.param_dtype, self.mlp_norm_eps,
                                       name=f'block{i}')(x_BTD, c_BD)
    out_c = self.out_channels or (2 * c if self.learn_sigma else c)
    x_BTK = FinalLayer(p * p * out_c, self.dtype, self.param_dtype, name='final')(x_BTD, c_BD)
    return unpatchify(x_BTK, p, h, w).astype(jnp.float32)


def _dit(depth, width, heads, patch):
  return dict(depth=depth, hidden_dim=width, num_heads=heads, patch_size=patch)


_SIZES = {'S': (12, 384, 6), 'B': (12, 768, 12), 'L': (24, 1024, 16), 'XL': (28, 1152, 16)}
# The paper's table 1 at patch 2, 4 and 8: 'S/2', ..., 'XL/8'.
VARIANTS = {f'{name}/{p}': _dit(*size, p) for name, size in _SIZES.items() for p in (2, 4, 8)}
VARIANTS['tiny'] = _dit(2, 32, 2, 2)
