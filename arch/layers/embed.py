"""Token and position embeddings: learned tables, sinusoids (Vaswani et al. 2017), and the
norms and MLP blocks transformers share. Parameters carry logical axes.

Dimension key: B batch, T length, D width, V vocabulary, F MLP hidden width.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from arch.layers.attention import Projection

Dtype = Any


def sinusoids(length: int, dim: int, max_wavelength: float = 10_000.0) -> np.ndarray:
  """The Transformer's fixed position table (length, dim): sin on even, cos on odd dims."""
  pos = np.arange(length, dtype=np.float64)[:, None]
  rate = max_wavelength ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
  table = np.zeros((length, dim), np.float32)
  table[:, 0::2] = np.sin(pos * rate)
  table[:, 1::2] = np.cos(pos * rate[:dim // 2])
  return table


def sincos_2d(grid_h: int, grid_w: int, dim: int,
              max_wavelength: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D position table (grid_h * grid_w, dim) in row-major order (MAE, DiT): the
  first half of the channels encodes the row, the second the column, each as 1-D
  sinusoids (sin half, then cos half)."""
  if dim % 4:
    raise ValueError(f'a 2-D sin-cos table needs dim divisible by 4, got {dim}')
  def one(pos, d):
    rate = max_wavelength ** (-np.arange(d // 2, dtype=np.float64) / (d // 2))
    angle = pos.reshape(-1)[:, None] * rate[None]
    return np.concatenate([np.sin(angle), np.cos(angle)], axis=1)
  rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64),
                           np.arange(grid_w, dtype=np.float64), indexing='ij')
  return np.concatenate([one(rows, dim // 2), one(cols, dim // 2)], 1).astype(np.float32)



def timestep_embedding(t_B, dim: int, max_period: float = 10_000.0, shift: float = 0.0):
  """Sinusoids of (float) diffusion timesteps: (B, dim) = [cos(t f_i), sin(t f_i)],
  f_i = max_period^(-i / (dim/2 - shift)) (ADM's, DiT's, diffusers' flip_sin_to_cos=True;
  `shift` is diffusers' downscale_freq_shift, 1 in its DiT)."""
  half = dim // 2
  freqs = jnp.asarray(np.exp(-np.log(max_period) * np.arange(half) / (half - shift)),
                      jnp.float32)
  angle_BF = jnp.asarray(t_B, jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(angle_BF), jnp.sin(angle_BF)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def token_embed(vocab_size: int, dim: int, stddev: float = 0.02, dtype=jnp.float32,
                param_dtype=jnp.float32, name: Optional[str] = None) -> nn.Embed:
  """nn.Embed with axes ('vocab', 'embed'); `.attend(x)` gives tied output logits."""
  return nn.Embed(vocab_size, dim, dtype=dtype, param_dtype=param_dtype, name=name,
                  embedding_init=nn.with_logical_partitioning(
                      nn.initializers.normal(stddev), ('vocab', 'embed')))


class LearnedPositions(nn.Module):
  """A learned (max_length, D) table, looked up at the given positions."""
  max_length: int
  dim: int
  stddev: float = 0.02
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, positions_BT):
    table = self.param('embedding', nn.with_logical_partitioning(
        nn.initializers.normal(self.stddev), ('length', 'embed')),
        (self.max_length, self.dim), self.param_dtype)
    return jnp.take(table, positions_BT, axis=0)



def norm(kind: str = 'layer', eps: float = 1e-5, use_bias: bool = True, dtype=jnp.float32,
         param_dtype=jnp.float32, name: Optional[str] = None) -> nn.Module:
  """LayerNorm ('layer') or RMSNorm ('rms', T5's scale-only norm), axes ('embed',)."""
  scale = nn.with_logical_partitioning(nn.initializers.ones, ('embed',))
  if kind == 'rms':
    return nn.RMSNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, scale_init=scale,
                      name=name)
  if kind != 'layer':
    raise ValueError(f'unknown norm {kind!r}; valid: layer, rms')
  return nn.LayerNorm(epsilon=eps, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                      scale_init=scale, name=name,
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)))


class PatchEmbed(nn.Module):
  """Non-overlapping patches to tokens (Dosovitskiy et al. 2021): a patch x patch conv with
  stride patch, (B, H, W, C) -> (B, H/p * W/p, D) in row-major patch order, or the grid
  (B, H/p, W/p, D) with `flatten=False`. H and W must be multiples of the patch size."""
  dim: int
  patch_size: int
  flatten: bool = True
  use_bias: bool = True  # CLIP's patch embedding has none
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    p = self.patch_size
    h, w = x_BHWC.shape[1:3]
    if h % p or w % p:
      raise ValueError(f'image size {h}x{w} is not a multiple of the patch size {p}')
    x = nn.Conv(self.dim, (p, p), strides=(p, p), padding='VALID', dtype=self.dtype,
                use_bias=self.use_bias, param_dtype=self.param_dtype, name='proj',
                kernel_init=nn.with_logical_partitioning(
                    self.kernel_init, (None, None, 'conv_in', 'embed')),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)))(
                    jnp.asarray(x_BHWC, self.dtype))
    return x.reshape(x.shape[0], -1, self.dim) if self.flatten else x


ACTIVATIONS = {
    'relu': nn.relu,
    'gelu': lambda x: nn.gelu(x, approximate=False),  # BERT, BART
    'gelu_tanh': lambda x: nn.gelu(x, approximate=True),  # GPT-2's "gelu_new"
    'silu': nn.silu,
    'quick_gelu': lambda x: x * nn.sigmoid(1.702 * x),  # CLIP's GELU approximation
}


class Mlp(nn.Module):
  """Position-wise feed-forward block D -> F -> D; `gated` is a GLU (Shazeer 2020):
  act(x W_gate) * (x W_up)."""
  hidden_dim: int
  activation: str = 'gelu'
  gated: bool = False
  use_bias: bool = True
  dropout_rate: float = 0.0  # on the hidden activations
  init_stddev: Optional[float] = None
  out_init_stddev: Optional[float] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, deterministic: bool = True):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'unknown activation {self.activation!r}; valid: {", ".join(ACTIVATIONS)}')
    act = ACTIVATIONS[self.activation]
    d = x_BTD.shape[-1]
    dense = lambda features, axes, stddev, name: Projection(
        (features,), axes, use_bias=self.use_bias, init_stddev=stddev, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    h_BTF = act(dense(self.hidden_dim, ('embed', 'mlp'), self.init_stddev, 'wi')(x_BTD))
    if self.gated:
      h_BTF = h_BTF * dense(self.hidden_dim, ('embed', 'mlp'), self.init_stddev, 'wi_up')(x_BTD)
    h_BTF = nn.Dropout(self.dropout_rate)(h_BTF, deterministic=deterministic)
    return dense(d, ('mlp', 'embed'), self.out_init_stddev or self.init_stddev, 'wo')(h_BTF)
