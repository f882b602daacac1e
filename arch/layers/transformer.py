"""The Transformer block every attention family is built from: self-attention, optional
cross-attention and a position-wise MLP, each in a residual branch with its norm before
(pre-norm: GPT-2, T5) or after (post-norm: the original Transformer, BERT, BART).

Dimension key: B batch, T length, S source length, D width.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.layers import pipeline
from arch.layers.attention import Attention, key_mask
from arch.layers.conv import DropPath
from arch.layers.embed import Mlp, norm
from arch.vocab import PAD

Dtype = Any

# Activation checkpointing (`Block.remat`): what the backward pass keeps of a block's
# forward; everything else it recomputes. 'block': only the block's input (the whole block
# runs twice); 'dots': the outputs of matmuls without batch dimensions (projections and
# MLP; attention scores and elementwise work are recomputed); 'offload': those same
# outputs moved to host memory, on backends that have one (GPU/TPU).
REMAT_POLICIES = {
    'block': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    'offload': jax.checkpoint_policies.offload_dot_with_no_batch_dims('device', 'pinned_host'),
}


def remat_policy(name: str):
  """The jax.checkpoint policy of a `remat` option ('' = none: keep every activation)."""
  if name and name not in REMAT_POLICIES:
    raise ValueError(f"unknown remat {name!r}; valid: '', {', '.join(REMAT_POLICIES)}")
  return REMAT_POLICIES.get(name)


class Block(nn.Module):
  """One layer: [norm] self-attn [norm] -> [norm] cross-attn [norm] -> [norm] MLP [norm];
  each branch optionally scaled (LayerScale) and dropped per example (stochastic depth)."""
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
  rope_max_wavelength: float = 10_000.0  # RoPE's base (LLaMA's theta)
  rope_scale: float = 1.0  # > 1: linear position interpolation (see apply_rope)
  attention_scale: Optional[float] = None  # default 1/sqrt(H)
  dropout_rate: float = 0.0  # on each residual branch's output
  attention_dropout_rate: float = 0.0
  mlp_dropout_rate: float = 0.0  # on the MLP's hidden activations
  init_stddev: Optional[float] = None
  out_init_stddev: Optional[float] = None  # projections into the residual stream
  # LayerScale (Touvron et al. 2021, CaiT): each branch's output times a learned
  # per-channel vector starting at this value (params `{branch}_scale`); None = off.
  layer_scale_init: Optional[float] = None
  drop_path_rate: float = 0.0  # stochastic depth on each residual branch (rng 'dropout')
  remat: str = ''  # activation checkpointing: '' | 'block' | 'dots' | 'offload' (above)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _norm(self, name):
    return norm(self.norm, self.norm_eps, use_bias=self.norm == 'layer', dtype=self.dtype,
                param_dtype=self.param_dtype, name=name)

  def make_attention(self, name):
    """The attention module of each attention branch; subclasses override it (CaiT's
    talking heads, T2T's bias-free q/k/v)."""
    return Attention(self.num_heads, head_dim=self.head_dim, num_kv_heads=self.num_kv_heads,
                     use_bias=self.use_bias, dropout_rate=self.attention_dropout_rate,
                     rope=self.rope, rope_max_wavelength=self.rope_max_wavelength,
                     rope_scale=self.rope_scale, scale=self.attention_scale,
                     init_stddev=self.init_stddev, out_init_stddev=self.out_init_stddev,
                     dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def _residual(self, x, branch, name, deterministic):
    """x + branch(x) with the norm before the branch (pre) or after the sum (post)."""
    y = branch(self._norm(f'{name}_norm')(x) if self.pre_norm else x)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    if self.layer_scale_init is not None:
      gamma = self.param(f'{name}_scale', nn.with_logical_partitioning(
          nn.initializers.constant(self.layer_scale_init), ('embed',)), (y.shape[-1],),
          self.param_dtype)
      y = y * jnp.asarray(gamma, self.dtype)
    y = DropPath(self.drop_path_rate)(y, train=not deterministic)
    x = x + y
    return x if self.pre_norm else self._norm(f'{name}_norm')(x)

  @nn.compact
  def __call__(self, x_BTD, enc_BSD=None, *, self_mask=None, self_bias=None,
               causal: bool = False, cross_mask=None, cross_bias=None, positions_BT=None,
               deterministic: bool = True, decode: bool = False):
    arrays = (x_BTD, enc_BSD, self_mask, self_bias, cross_mask, cross_bias, positions_BT)
    flags = dict(causal=causal, deterministic=deterministic, decode=decode)
    if not self.remat or decode:
      return self.layer(*arrays, **flags)
    # The Python flags are closed over (static); the arrays go through jax.checkpoint.
    # Parameters keep their names: the lifted function runs in this module's scope.
    layer = nn.remat(functools.partial(type(self).layer, **flags),
                     policy=remat_policy(self.remat))
    return layer(self, *arrays)

  def layer(self, x_BTD, enc_BSD, self_mask, self_bias, cross_mask, cross_bias,
            positions_BT, *, causal: bool, deterministic: bool, decode: bool):
    """The block's computation (what `remat` recomputes in the backward pass)."""
    x_BTD = nn.with_logical_constraint(x_BTD, ('batch', 'length', 'embed'))
    self_attn = self.make_attention('self_attn')
    x_BTD = self._residual(x_BTD, lambda h: self_attn(
        h, mask=self_mask, bias=self_bias, causal=causal, positions_BT=positions_BT,
        deterministic=deterministic, decode=decode), 'self_attn', deterministic)
    if self.cross_attention:
      if enc_BSD is None:
        raise ValueError('a cross-attention block needs the encoder output')
      cross_attn = self.make_attention('cross_attn')
      x_BTD = self._residual(x_BTD, lambda h: cross_attn(
          h, enc_BSD, mask=cross_mask, bias=cross_bias, deterministic=deterministic),
          'cross_attn', deterministic)
    mlp = self.make_mlp('mlp')
    return self._residual(x_BTD, lambda h: mlp(h, deterministic), 'mlp', deterministic)

  def make_mlp(self, name):
    """The feed-forward branch, called as mlp(x_BTD, deterministic) -> (B, T, D);
    subclasses override it (a Mixture-of-Experts layer in place of the dense MLP)."""
    return Mlp(self.mlp_dim, self.activation, gated=self.gated_mlp, use_bias=self.use_bias,
               dropout_rate=self.mlp_dropout_rate, init_stddev=self.init_stddev,
               out_init_stddev=self.out_init_stddev, dtype=self.dtype,
               param_dtype=self.param_dtype, name=name)


def run_blocks(block, num_layers: int, x_BTD, *, is_decoder: bool, enc_BSD=None,
               enc_mask_BS=None, self_bias=None, positions_BT=None, train: bool = False,
               decode: bool = False, scan: bool = False):
  """`num_layers` blocks named layers_{i}, made by `block` (a partial of `Block`, or a
  sequence of num_layers of them, one per layer): encoder blocks attend bidirectionally
  under the source padding mask; decoder blocks are causal and cross-attend to the
  encoder output (`enc_BSD`) under that mask. With `scan`, one nn.scan of identical
  blocks named 'layers', params and KV caches stacked along a leading 'layers' axis
  (`stack_layers(tree, 'layers', num_layers, lambda i: f'layers_{i}')` converts)."""
  enc_mask = None if enc_mask_BS is None else key_mask(enc_mask_BS)
  if scan:
    if isinstance(block, (tuple, list)) or getattr(block, 'func', None) is not Block:
      raise ValueError('scan_layers needs identical Blocks in every layer; this stack mixes '
                       'other layers in (e.g. Mixture-of-Experts ones): set scan_layers=False')
    step = nn.scan(StackStep, variable_axes={'params': 0, 'cache': 0},
                   split_rngs={'params': True, 'dropout': True}, in_axes=(nn.broadcast,) * 4,
                   length=num_layers, metadata_params={nn.PARTITION_NAME: 'layers'})
    x_BTD, _ = step(*block.args, **block.keywords, cross_attention=is_decoder,
                    is_decoder=is_decoder, deterministic=not train, decode=decode,
                    name='layers')(x_BTD, enc_BSD, enc_mask, self_bias, positions_BT)
    return x_BTD
  blocks = block if isinstance(block, (tuple, list)) else [block] * num_layers
  if len(blocks) != num_layers:
    raise ValueError(f'{len(blocks)} block factories for {num_layers} layers')
  for i, block in enumerate(blocks):
    if is_decoder:
      x_BTD = block(cross_attention=True, name=f'layers_{i}')(
          x_BTD, enc_BSD, self_bias=self_bias, causal=True, cross_mask=enc_mask,
          positions_BT=positions_BT, deterministic=not train, decode=decode)
    else:
      x_BTD = block(name=f'layers_{i}')(x_BTD, self_mask=enc_mask, self_bias=self_bias,
                                         positions_BT=positions_BT, deterministic=not train)
  return x_BTD


class EncoderDecoder(nn.Module):
  """The interface every encoder-decoder family shares (the seq2seq and denoising tasks
  and the beam-search sampler call it). A subclass's `setup` makes `self.encoder` and
  `self.decoder`, stacks called as stack(tokens_BT, enc_BSD, enc_mask_BS, train=,
  decode=) -> (B, T, D), and it defines `logits(x_BTD)` -> (B, T, V).

    encode(src_BS, *, train)                      -> {'hidden': (B,S,D), 'mask': (B,S)}
    decode(tgt_in_BT, encoded, *, train, decode)  -> logits (B,T,V) float32
    __call__(src_BS, tgt_in_BT, *, train, decode) -> logits (B,T,V) float32

  Token id 0 (<pad>) is padding in the source.
  """

  def logits(self, x_BTD):
    raise NotImplementedError(f'{type(self).__name__} must define logits(x_BTD)')

  def encode(self, src_BS, *, train: bool = False):
    """{'hidden': (B, S, D), 'mask': (B, S) bool, True at real (non-<pad>) tokens}."""
    mask_BS = src_BS != PAD
    return {'hidden': self.encoder(src_BS, None, mask_BS, train=train), 'mask': mask_BS}

  def decode(self, tgt_in_BT, encoded, *, train: bool = False, decode: bool = False):
    """Next-token logits (B, T, V) float32 of the decoder input given `encode`'s output."""
    x_BTD = self.decoder(tgt_in_BT, encoded['hidden'], encoded['mask'], train=train,
                         decode=decode)
    return self.logits(x_BTD).astype(jnp.float32)

  def __call__(self, src_BS, tgt_in_BT, *, train: bool = False, decode: bool = False):
    return self.decode(tgt_in_BT, self.encode(src_BS, train=train), train=train,
                       decode=decode)


# ---------------------------------------------------------------------------------------
# Scan over layers
# ---------------------------------------------------------------------------------------

class StackStep(Block):
  """One step of a scanned stack, a Block as a scan body (carry in, carry out; the flags
  the unrolled call passes as arguments are fields here, static): an encoder-decoder's
  encoder or decoder (`run_blocks(..., scan=True)`), or a decoder LM's stack
  (`scan_blocks`: no encoder, `causal`). The encoder output, its mask, the attention bias
  and the positions are broadcast to every layer."""
  is_decoder: bool = False  # causal, cross-attending to the encoder output under its mask
  causal: bool = False      # (not is_decoder) causal self-attention: a decoder LM's stack
  deterministic: bool = True
  decode: bool = False

  def __call__(self, x_BTD, enc_BSD, enc_mask, self_bias, positions_BT):
    if self.is_decoder:
      return super().__call__(x_BTD, enc_BSD, self_bias=self_bias, causal=True,
                              cross_mask=enc_mask, positions_BT=positions_BT,
                              deterministic=self.deterministic, decode=self.decode), None
    return super().__call__(x_BTD, self_mask=enc_mask, self_bias=self_bias,
                            causal=self.causal, positions_BT=positions_BT,
                            deterministic=self.deterministic, decode=self.decode), None


def scan_blocks(num_layers: int, x_BTD, positions_BT, *, name: str, causal: bool,
                deterministic: bool, decode: bool, **block):
  """`num_layers` Blocks made by `Block(**block)` as one `nn.scan` (Flax's lifted
  lax.scan): the layers' parameters (and KV caches) are stacked along a leading axis of
  size num_layers with the logical name 'layers', the program holds one layer's code, so
  its compile time stays flat in depth, and a `remat` policy bounds what the backward pass
  keeps per layer. Each layer draws its own init and dropout keys (split from the
  scan's), so a scanned stack starts from other values than the unrolled one;
  `stack_layers` / `unstack_layers` convert trained parameters between the layouts."""
  step = nn.scan(StackStep, variable_axes={'params': 0, 'cache': 0},
                 split_rngs={'params': True, 'dropout': True}, in_axes=(nn.broadcast,) * 4,
                 length=num_layers, metadata_params={nn.PARTITION_NAME: 'layers'})
  x_BTD, _ = step(causal=causal, deterministic=deterministic, decode=decode, name=name,
                  **block)(x_BTD, None, None, None, positions_BT)
  return x_BTD


def decoder_stack(model, base, x_BTD, pos_BT, *, train: bool, decode: bool, context,
                  name: str):
  """A decoder LM's blocks (gpt.Model, llama.Model): `model.layer(i, ...)` for each layer,
  or, with `model.scan_layers`, one `scan_blocks` of `Block(**model.block_fields())`
  stacked under `name`. Scanning needs identical blocks: a subclass of `base` that
  overrides `layer` (Flamingo's interleaved cross-attention, a Mixture-of-Experts LM)
  refuses it. A mesh axis of size S > 1 under the 'layers' rule (mesh.stage) runs the
  scanned stack as a GPipe pipeline of S stages (arch/layers/pipeline.py) over
  `model.pipeline_microbatches` microbatches (0: 2S), except at init and in decoding."""
  axis, stages = pipeline.stage_axis()
  if stages > 1:
    microbatches = (getattr(model, 'pipeline_microbatches', 0)
                    or pipeline.default_microbatches(stages))
    pipeline.check_stack(model.num_layers, stages, microbatches, model.scan_layers)
  if not model.scan_layers:
    for i in range(model.num_layers):
      x_BTD = model.layer(i, x_BTD, pos_BT, train=train, decode=decode, context=context)
    return x_BTD
  if context is not None or type(model).layer is not base.layer:
    raise ValueError(f'{type(model).__name__} interleaves layers of its own (layer() is '
                     f'overridden): it cannot scan identical blocks; set scan_layers=False')
  if stages > 1 and not decode and not model.is_initializing():
    return pipeline.pipelined_blocks(model, name, x_BTD, pos_BT, axis=axis, stages=stages,
                                     microbatches=microbatches, causal=True,
                                     deterministic=not train, **model.block_fields())
  return scan_blocks(model.num_layers, x_BTD, pos_BT, name=name, causal=True,
                     deterministic=not train, decode=decode, **model.block_fields())


def stack_layers(tree: dict, name: str, num_layers: int, unrolled_name=None) -> dict:
  """A tree with the unrolled layers {unrolled_name(i): subtree} (default f'{name}{i}')
  replaced by one subtree {name: stacked leaves (num_layers, ...)}, the layout of
  `scan_blocks`. The inverse of `unstack_layers`; other entries are kept as they are."""
  unrolled_name = unrolled_name or (lambda i: f'{name}{i}')
  keys = [unrolled_name(i) for i in range(num_layers)]
  missing = [k for k in keys if k not in tree]
  if missing:
    raise ValueError(f'no unrolled layers {", ".join(missing)} to stack')
  out = {k: v for k, v in tree.items() if k not in keys}
  out[name] = jax.tree.map(lambda *xs: jnp.stack(xs), *[tree[k] for k in keys])
  return out


def unstack_layers(tree: dict, name: str, num_layers: int, unrolled_name=None) -> dict:
  """The inverse of `stack_layers`: tree[name]'s leaves (num_layers, ...) split into one
  subtree per layer."""
  unrolled_name = unrolled_name or (lambda i: f'{name}{i}')
  if name not in tree:
    raise ValueError(f'no stacked layers {name!r} to unstack')
  stacked = tree[name]
  sizes = {x.shape[0] for x in jax.tree.leaves(stacked)}
  if sizes != {num_layers}:
    raise ValueError(f'{name!r} stacks {sorted(sizes)} layers, expected {num_layers}')
  out = {k: v for k, v in tree.items() if k != name}
  for i in range(num_layers):
    out[unrolled_name(i)] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return out
