"""The Transformer block every attention family is built from: self-attention, optional
cross-attention and a position-wise MLP, each in a residual branch with its norm before
(pre-norm: GPT-2, T5) or after (post-norm: the original Transformer, BERT, BART).

Dimension key: B batch, T length, S source length, D width.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.attention import Attention
from arch.layers.embed import Mlp, norm

Dtype = Any


class Block(nn.Module):
  """One layer: [norm] self-attn [norm] -> [norm] cross-attn [norm] -> [norm] MLP [norm]."""
  num_heads: int
  mlp_dim: int
  num_kv_heads: Optional[int] = None
  head_dim: Optional[int] = None
  pre_norm: bool = True
  norm: str = 'layer'  # 'layer' | 'rms'
  norm_eps: float = 1e-5
  activation: str = 'gelu'
  gated_mlp: bool = False
  use_bias: bool = True  # in attention and MLP projections
  cross_attention: bool = False
  rope: bool = False
  attention_scale: Optional[float] = None  # default 1/sqrt(H)
  dropout_rate: float = 0.0  # on each residual branch's output
  attention_dropout_rate: float = 0.0
  mlp_dropout_rate: float = 0.0  # on the MLP's hidden activations
  init_stddev: Optional[float] = None
  out_init_stddev: Optional[float] = None  # projections into the residual stream
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _norm(self, name):
    return norm(self.norm, self.norm_eps, use_bias=self.norm == 'layer', dtype=self.dtype,
                param_dtype=self.param_dtype, name=name)

  def _attention(self, name):
    return Attention(self.num_heads, head_dim=self.head_dim, num_kv_heads=self.num_kv_heads,
                     use_bias=self.use_bias, dropout_rate=self.attention_dropout_rate,
                     rope=self.rope, scale=self.attention_scale, init_stddev=self.init_stddev,
                     out_init_stddev=self.out_init_stddev, dtype=self.dtype,
                     param_dtype=self.param_dtype, name=name)

  def _residual(self, x, branch, name, deterministic):
    """x + branch(x) with the norm before the branch (pre) or after the sum (post)."""
    y = branch(self._norm(f'{name}_norm')(x) if self.pre_norm else x)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = x + y
    return x if self.pre_norm else self._norm(f'{name}_norm')(x)

  @nn.compact
  def __call__(self, x_BTD, enc_BSD=None, *, self_mask=None, self_bias=None,
               causal: bool = False, cross_mask=None, cross_bias=None, positions_BT=None,
               deterministic: bool = True, decode: bool = False):
    x_BTD = nn.with_logical_constraint(x_BTD, ('batch', 'length', 'embed'))
    self_attn = self._attention('self_attn')
    x_BTD = self._residual(x_BTD, lambda h: self_attn(
        h, mask=self_mask, bias=self_bias, causal=causal, positions_BT=positions_BT,
        deterministic=deterministic, decode=decode), 'self_attn', deterministic)
    if self.cross_attention:
      if enc_BSD is None:
        raise ValueError('a cross-attention block needs the encoder output')
      cross_attn = self._attention('cross_attn')
      x_BTD = self._residual(x_BTD, lambda h: cross_attn(
          h, enc_BSD, mask=cross_mask, bias=cross_bias, deterministic=deterministic),
          'cross_attn', deterministic)
    mlp = Mlp(self.mlp_dim, self.activation, gated=self.gated_mlp, use_bias=self.use_bias,
              dropout_rate=self.mlp_dropout_rate, init_stddev=self.init_stddev,
              out_init_stddev=self.out_init_stddev, dtype=self.dtype,
              param_dtype=self.param_dtype, name='mlp')
    return self._residual(x_BTD, lambda h: mlp(h, deterministic), 'mlp', deterministic)
