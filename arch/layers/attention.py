"""Multi-head attention for every sequence family: MHA, GQA and MQA (Vaswani et al. 2017;
Ainslie et al. 2023; Shazeer 2019), masks, rotary positions (Su et al. 2021), T5's relative
position bias (Raffel et al. 2020) and a KV cache for decoding.

Dimension key:
  B batch   T query length   S key/value length   D model width
  N query heads   K key/value heads (N = K * G)   G query heads per key/value head
  H head width

The attention itself goes through `jax.nn.dot_product_attention` (cuDNN flash attention
on GPU with `implementation='cudnn'`, XLA elsewhere); with attention dropout in training
it falls back to an explicit softmax, which that function does not offer.

KV cache. Called with `decode=True`, `Attention` keeps 'cached_key'/'cached_value'
(head-major: keys (B, K, H, S_max), values (B, K, S_max, H)) and 'cache_index' in the
'cache' collection. Initialise them by calling the model once with `decode=True` on a
(B, S_max) input inside `init`; every later call writes its chunk of L tokens at the cache
index and attends to all cached positions up to each query's own, so a prompt can be fed
whole and the rest one token at a time, giving the logits of the full forward pass. A cached
call attends through `cached_attention`, which contracts each head's keys and values in the
layout they are stored in and writes the chunk after reading: with a (B, S_max, K, H) cache
XLA:CPU transposed the whole cache of every layer at every step, and reading the updated
cache made it copy the cache.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arch.layers import matmul

Dtype = Any
NEG_INF = -1e10  # large finite: a fully masked row gives uniform weights, never NaN


def causal_mask(q_pos_BT, k_pos_BS):
  """True where key position <= query position: (B, 1, T, S)."""
  return (k_pos_BS[:, None, None, :] <= q_pos_BT[:, None, :, None])


def padding_mask(q_valid_BT, k_valid_BS):
  """True where both query and key are real tokens: (B, 1, T, S)."""
  return q_valid_BT[:, None, :, None] & k_valid_BS[:, None, None, :]


def key_mask(k_valid_BS):
  """True where the key is a real token, for every query: (B, 1, 1, S)."""
  return k_valid_BS[:, None, None, :]


def combine_masks(*masks):
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  return functools.reduce(jnp.logical_and, masks)


def token_positions(module: nn.Module, b: int, t: int, decode: bool = False):
  """Positions (B, T) of a chunk: 0..T-1, or, when decoding, continuing from the
  position counter the calling model keeps in its 'cache' collection."""
  pos_BT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  if decode:
    initialised = module.has_variable('cache', 'position')
    counter = module.variable('cache', 'position', lambda: jnp.array(0, jnp.int32))
    if initialised:
      pos_BT = pos_BT + counter.value
      counter.value = counter.value + t
  return pos_BT


# ---------------------------------------------------------------------------------------
# Rotary position embedding
# ---------------------------------------------------------------------------------------

def rope_frequencies(head_dim: int, max_wavelength: float = 10_000.0):
  """Angular frequency of each rotated pair: (H/2,)."""
  if head_dim % 2:
    raise ValueError(f'rotary embedding needs an even head width, got {head_dim}')
  return max_wavelength ** (-np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)


def apply_rope(x_BTNH, positions_BT, max_wavelength: float = 10_000.0, scale: float = 1.0):
  """Rotates each (x[i], x[i + H/2]) pair by angle position * freq[i] (half-split layout).

  `scale` > 1 is linear position interpolation (Chen et al. 2023): positions / scale, to
  stretch a trained context length. Computed in float32.
  """
  h = x_BTNH.shape[-1]
  freq = jnp.asarray(rope_frequencies(h, max_wavelength))
  angle_BTF = positions_BT.astype(jnp.float32)[..., None] / scale * freq
  sin, cos = jnp.sin(angle_BTF)[:, :, None, :], jnp.cos(angle_BTF)[:, :, None, :]
  x = x_BTNH.astype(jnp.float32)
  x1, x2 = x[..., :h // 2], x[..., h // 2:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTNH.dtype)


# ---------------------------------------------------------------------------------------
# T5 relative position bias
# ---------------------------------------------------------------------------------------

def relative_position_bucket(relative_BTS, bidirectional: bool, num_buckets: int,
                             max_distance: int):
  """T5's bucketing of key_pos - query_pos: exact for small distances, log-spaced up to
  `max_distance`, one bucket beyond. Bidirectional uses half the buckets per sign."""
  rel = relative_BTS
  bucket = jnp.zeros_like(rel)
  if bidirectional:
    num_buckets //= 2
    bucket = bucket + (rel > 0).astype(rel.dtype) * num_buckets
    dist = jnp.abs(rel)
  else:
    dist = jnp.maximum(-rel, 0)  # only the past is visible
  exact = num_buckets // 2
  is_small = dist < exact
  log_ratio = jnp.log(jnp.maximum(dist, 1).astype(jnp.float32) / exact) / np.log(
      max_distance / exact)
  large = exact + (log_ratio * (num_buckets - exact)).astype(rel.dtype)
  large = jnp.minimum(large, num_buckets - 1)
  return bucket + jnp.where(is_small, dist, large)


class RelativePositionBias(nn.Module):
  """T5's learned per-head bias on the attention logits, by bucketed relative position."""
  num_heads: int
  bidirectional: bool = True
  num_buckets: int = 32
  max_distance: int = 128
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, q_pos_BT, k_pos_BS):
    """Bias (B, N, T, S) for queries at `q_pos_BT` and keys at `k_pos_BS`."""
    table = self.param('rel_embedding', nn.with_logical_partitioning(
        nn.initializers.normal(1.0), ('relpos_buckets', 'heads')),
        (self.num_buckets, self.num_heads), self.param_dtype)
    rel_BTS = k_pos_BS[:, None, :] - q_pos_BT[:, :, None]
    bucket_BTS = relative_position_bucket(rel_BTS, self.bidirectional, self.num_buckets,
                                          self.max_distance)
    bias_BTSN = jnp.take(jnp.asarray(table, self.dtype), bucket_BTS, axis=0)
    return bias_BTSN.transpose(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------

def dot_product_attention(q_BTNH, k_BSKH, v_BSKH, *, bias=None, mask=None, scale=None,
                          dropout_rate=0.0, dropout_rng=None, implementation=None):
  """softmax(q k^T * scale + bias, masked) v with GQA; (B, T, N, H).

  Without dropout this is `jax.nn.dot_product_attention` (the fused/flash path where the
  platform has one); with dropout, or float16 inputs, an explicit float32 softmax.
  """
  b, t, n, h = q_BTNH.shape
  k_heads = k_BSKH.shape[2]
  if n % k_heads:
    raise ValueError(f'{n} query heads are not a multiple of {k_heads} key/value heads')
  scale = h ** -0.5 if scale is None else scale
  dropout = bool(dropout_rate) and dropout_rng is not None
  # jax.nn.dot_product_attention asks float16 inputs for float32 accumulation, which
  # XLA:CPU's dot refuses ('F16_F16_F32'); float16 takes the explicit path below.
  if not dropout and q_BTNH.dtype != jnp.float16:
    if bias is not None:
      bias = bias.astype(q_BTNH.dtype)
    return jax.nn.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, bias=bias, mask=mask,
                                        scale=scale, implementation=implementation)
  g = n // k_heads
  q_BTKGH = q_BTNH.reshape(b, t, k_heads, g, h)
  logits_BKGTS = jnp.einsum('BTKGH,BSKH->BKGTS', q_BTKGH, k_BSKH,
                            preferred_element_type=jnp.float32) * scale
  s = k_BSKH.shape[1]
  if bias is not None:
    logits_BKGTS += jnp.broadcast_to(bias, (b, n, t, s)).reshape(b, k_heads, g, t, s)
  if mask is not None:
    mask_BKGTS = jnp.broadcast_to(mask, (b, n, t, s)).reshape(b, k_heads, g, t, s)
    logits_BKGTS = jnp.where(mask_BKGTS, logits_BKGTS, NEG_INF)
  weights = jax.nn.softmax(logits_BKGTS, axis=-1)  # float32 for the softmax
  if dropout:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  weights = weights.astype(v_BSKH.dtype)
  out_BTKGH = jnp.einsum('BKGTS,BSKH->BTKGH', weights, v_BSKH)
  return out_BTKGH.reshape(b, t, n, h)


def dense_init(stddev: Optional[float] = None, num_in: int = 1, ndim: int = 2):
  """Normal(stddev) if given, else LeCun normal with fan-in over the first `num_in` axes."""
  if stddev:
    return nn.initializers.normal(stddev)
  return nn.initializers.lecun_normal(in_axis=tuple(range(num_in)),
                                      out_axis=tuple(range(num_in, ndim)))


class Projection(nn.Module):
  """x @ W from the last `num_in` axes of x to `out_shape`, as one dot (`matmul.dot_general`:
  bfloat16 on the matrix units); kernel axes named `axes` (in axes then out axes), bias
  axes the out ones."""
  out_shape: tuple
  axes: tuple
  num_in: int = 1
  use_bias: bool = True
  init_stddev: Optional[float] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    in_shape = x.shape[x.ndim - self.num_in:]
    shape = (*in_shape, *self.out_shape)
    kernel = self.param('kernel', nn.with_logical_partitioning(
        dense_init(self.init_stddev, self.num_in, len(shape)), self.axes),
        shape, self.param_dtype)
    n = self.num_in
    y = matmul.dot_general(jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype),
                           ((tuple(range(x.ndim - n, x.ndim)), tuple(range(n))), ((), ())))
    if self.use_bias:
      bias = self.param('bias', nn.with_logical_partitioning(
          nn.initializers.zeros, self.axes[self.num_in:]), self.out_shape, self.param_dtype)
      bias = jnp.asarray(bias, self.dtype)
      y = matmul.add_bias(y, bias.reshape(-1)) if bias.ndim == 1 else y + bias
    return y


def _chunk_keys(x, i, t: int):
  """The part of a mask or bias over the cache's S slots (last axis) that covers slots
  i..i+t-1: the keys of the chunk being written there."""
  if x is None or x.shape[-1] == 1:
    return x
  return jax.lax.dynamic_slice_in_dim(x, i, t, axis=x.ndim - 1)


def cached_attention(q_BTNH, k_BKHS, v_BKSH, k_BTKH, v_BTKH, *, mask=None, bias=None,
                     chunk_mask=None, chunk_bias=None, scale=None, dropout_rate=0.0,
                     dropout_rng=None):
  """Attention of a chunk's queries over a KV cache and over the chunk's own keys and
  values, with one float32 softmax over both; (B, T, N, H).

  The cache is head-major, keys transposed (B, K, H, S) and values (B, K, S, H): each
  head's block is contracted in the layout it is stored in, nothing of size S is copied.
  The chunk's keys (B, T, K, H) are not in the cache yet (the caller writes them after
  this reads it, so XLA updates the cache in place). mask/bias cover the S cache slots,
  chunk_mask/chunk_bias the T chunk keys (both broadcastable to (B, N, T, .)).
  """
  b, t, n, h = q_BTNH.shape
  k_heads, s = k_BKHS.shape[1], k_BKHS.shape[3]
  if n % k_heads:
    raise ValueError(f'{n} query heads are not a multiple of {k_heads} key/value heads')
  g = n // k_heads
  scale = h ** -0.5 if scale is None else scale
  q_BKGTH = q_BTNH.reshape(b, t, k_heads, g, h).transpose(0, 2, 3, 1, 4)

  def logits(keys, spec, width, bias, mask):
    logits_BKGTS = jnp.einsum(spec, q_BKGTH, keys, preferred_element_type=jnp.float32) * scale
    if bias is not None:
      logits_BKGTS += jnp.broadcast_to(bias, (b, n, t, width)).reshape(b, k_heads, g, t, width)
    if mask is not None:
      mask_BKGTS = jnp.broadcast_to(mask, (b, n, t, width)).reshape(b, k_heads, g, t, width)
      logits_BKGTS = jnp.where(mask_BKGTS, logits_BKGTS, NEG_INF)
    return logits_BKGTS

  weights = jax.nn.softmax(jnp.concatenate([
      logits(k_BKHS, 'BKGTH,BKHS->BKGTS', s, bias, mask),
      logits(k_BTKH, 'BKGTH,BUKH->BKGTU', t, chunk_bias, chunk_mask)], axis=-1), axis=-1)
  if dropout_rate and dropout_rng is not None:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  weights = weights.astype(v_BKSH.dtype)
  out_BKGTH = (jnp.einsum('BKGTS,BKSH->BKGTH', weights[..., :s], v_BKSH)
               + jnp.einsum('BKGTU,BUKH->BKGTH', weights[..., s:], v_BTKH))
  return out_BKGTH.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


class Attention(nn.Module):
  """Multi-head attention: self-attention (kv_BSD=None) or cross-attention.

  num_kv_heads < num_heads is grouped-query attention (1: multi-query). `rope` rotates
  queries and keys by their positions. `scale` defaults to 1/sqrt(H) (T5 uses 1.0).
  """
  num_heads: int
  head_dim: Optional[int] = None  # default D / num_heads
  num_kv_heads: Optional[int] = None  # default num_heads
  out_dim: Optional[int] = None  # default D
  use_bias: bool = True
  out_bias: Optional[bool] = None  # default use_bias
  dropout_rate: float = 0.0
  rope: bool = False
  rope_max_wavelength: float = 10_000.0
  rope_scale: float = 1.0
  scale: Optional[float] = None
  init_stddev: Optional[float] = None  # normal(stddev) kernels; None: LeCun normal
  out_init_stddev: Optional[float] = None  # e.g. GPT-2's 0.02/sqrt(2*layers); default init_stddev
  implementation: Optional[str] = None  # jax.nn.dot_product_attention's: None|'xla'|'cudnn'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, kv_BSD=None, *, mask=None, bias=None, causal: bool = False,
               positions_BT=None, deterministic: bool = True, decode: bool = False):
    """Attention output (B, T, out_dim).

    mask: bool, broadcastable to (B, N, T, S), True = attend. bias: additive logits
    broadcastable to (B, N, T, S). causal: add the causal mask (self-attention).
    positions_BT: token positions for RoPE and the causal mask (default 0..T-1, or the
    cache index onward when decoding).
    """
    b, t, d = x_BTD.shape
    n = self.num_heads
    k_heads = self.num_kv_heads or n
    h = self.head_dim or d // n
    if not self.head_dim and d % n:
      raise ValueError(f'model width {d} is not divisible by {n} heads')
    out_dim = self.out_dim or d
    self_attention = kv_BSD is None
    kv_BSD = x_BTD if self_attention else kv_BSD
    proj = functools.partial(Projection, use_bias=self.use_bias,
                             init_stddev=self.init_stddev, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    q_BTNH = proj((n, h), ('embed', 'heads', 'kv'), name='query')(x_BTD)
    # Key/value heads have a logical name of their own: a tensor axis wider than K (GQA)
    # can leave them replicated, ('kv_heads', None), while it splits the query heads.
    k_BSKH = proj((k_heads, h), ('embed', 'kv_heads', 'kv'), name='key')(kv_BSD)
    v_BSKH = proj((k_heads, h), ('embed', 'kv_heads', 'kv'), name='value')(kv_BSD)

    default_positions = positions_BT is None
    if default_positions:
      positions_BT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    use_cache = decode and self_attention
    if use_cache:
      initialised = self.has_variable('cache', 'cached_key')
      # Head-major, keys transposed (see cached_attention); created at S_max = t.
      cached_k = self.variable('cache', 'cached_key', jnp.zeros, (b, k_heads, h, t),
                               k_BSKH.dtype)
      cached_v = self.variable('cache', 'cached_value', jnp.zeros, (b, k_heads, t, h),
                               v_BSKH.dtype)
      index = self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
      if initialised:
        i = index.value
        if default_positions:
          positions_BT = positions_BT + i
    if self.rope:
      q_BTNH = apply_rope(q_BTNH, positions_BT, self.rope_max_wavelength, self.rope_scale)
      if self_attention:
        k_BSKH = apply_rope(k_BSKH, positions_BT, self.rope_max_wavelength, self.rope_scale)

    dropout_rng = None
    if self.dropout_rate and not deterministic:
      dropout_rng = self.make_rng('dropout')
    if use_cache and initialised:
      # The chunk (slots i..i+t-1) attends to the slots written before it (never to the
      # zeros past them) and to itself, then is written into the cache.
      s_max = cached_v.value.shape[2]
      slots_BS = jnp.broadcast_to(jnp.arange(s_max, dtype=jnp.int32), (b, s_max))
      chunk_BT = i + jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
      cache_mask = combine_masks(mask, key_mask(slots_BS < i))
      chunk_mask = _chunk_keys(mask, i, t)
      if causal:
        cache_mask = combine_masks(cache_mask, causal_mask(positions_BT, slots_BS))
        chunk_mask = combine_masks(chunk_mask, causal_mask(positions_BT, chunk_BT))
      out_BTNH = cached_attention(
          q_BTNH, cached_k.value, cached_v.value, k_BSKH, v_BSKH, mask=cache_mask, bias=bias,
          chunk_mask=chunk_mask, chunk_bias=_chunk_keys(bias, i, t), scale=self.scale,
          dropout_rate=self.dropout_rate, dropout_rng=dropout_rng)
      # XLA updates the cache in place only where the write provably follows the reads
      # (XLA:CPU dropped an optimization_barrier's order and copied every cache twice a
      # step): the written chunk depends on the output through a zero it cannot fold.
      after_BTK1 = jnp.minimum(jnp.abs(out_BTNH.reshape(b, t, k_heads, -1)[..., :1]), 0)
      k_BSKH = k_BSKH + after_BTK1.astype(k_BSKH.dtype)
      v_BSKH = v_BSKH + after_BTK1.astype(v_BSKH.dtype)
      cached_k.value = jax.lax.dynamic_update_slice(
          cached_k.value, k_BSKH.transpose(0, 2, 3, 1).astype(cached_k.value.dtype), (0, 0, 0, i))
      cached_v.value = jax.lax.dynamic_update_slice(
          cached_v.value, v_BSKH.transpose(0, 2, 1, 3).astype(cached_v.value.dtype), (0, 0, i, 0))
      index.value = i + t
    else:
      if causal:
        k_pos_BS = positions_BT if self_attention else None
        mask = combine_masks(mask, causal_mask(positions_BT, k_pos_BS))
      out_BTNH = dot_product_attention(q_BTNH, k_BSKH, v_BSKH, bias=bias, mask=mask,
                                       scale=self.scale, dropout_rate=self.dropout_rate,
                                       dropout_rng=dropout_rng,
                                       implementation=self.implementation)
    out_bias = self.use_bias if self.out_bias is None else self.out_bias
    return Projection((out_dim,), ('heads', 'kv', 'embed'), num_in=2, use_bias=out_bias,
                      init_stddev=self.out_init_stddev or self.init_stddev, dtype=self.dtype,
                      param_dtype=self.param_dtype, name='out')(out_BTNH)
