"""T5 v1.0: the text-to-text encoder-decoder of Raffel et al. 2020, "Exploring the limits
of transfer learning with a unified text-to-text transformer".

Hugging Face's `T5ForConditionalGeneration` layout (t5-small, t5-base): one token
embedding shared by the encoder, the decoder and the tied LM head, which reads the
decoder output rescaled by D^-1/2; no position embeddings but a learned relative
position bias on the self-attention logits (32 buckets by relative distance, log-spaced
up to 128; bidirectional in the encoder, causal in the decoder), one table per stack,
computed once and added in every layer of that stack (HF keeps the table in layer 0);
pre-norm blocks with RMS LayerNorm (scale only, eps 1e-6), a final RMS norm per stack,
ReLU MLPs, no biases anywhere and no 1/sqrt(d) attention scaling. (T5 folds that scale
into the query's initialisation, std (D*H)^-1/2; the shared Attention initialises every
projection LeCun-normal, so here initial attention logits are sqrt(H) larger.) Dropout on
the embeddings, each residual branch, the attention weights, the MLP's hidden units and
the final norm's output, where HF has it. A tiny HF model's weights ported into this one
give the same logits (to 2e-6, with padded sources and distances past 128).

Parameter counts equal HF's `sum(p.numel() for p in model.parameters())` (the tied
embedding once): t5-small 60,506,624, t5-base 222,903,552.

The Switch Transformer (Fedus et al. 2022) is this model with a Mixture-of-Experts layer
(arch/layers/moe.py: top-1 routing, capacity and token dropping) in place of the MLP in
every `sparse_step`-th layer of both stacks (`moe`): HF's
SwitchTransformersForConditionalGeneration, switch-base-8 619,339,008 parameters
(t5-base's plus 7 more experts and a router in each of 12 layers). Its router is HF's
`mlp/router/classifier`, its experts `mlp/experts/expert_{e}/wi|wo` stacked as mlp/wi, wo.

encode / decode / __call__ are `arch.layers.transformer.EncoderDecoder`'s (the seq2seq
and denoising tasks and the beam-search sampler call them). With decode=True the decoder's
self-attention keeps a KV cache in the 'cache' collection (created by
`init(rngs, src_BS, tgt_BT_of_max_len, decode=True)`); positions continue from the cache
and the relative bias is that of the new queries' positions against every cache slot.

Dimension key: B batch, S source length, T target length (query length in attention),
D width, N heads, V vocabulary.
"""

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from arch.layers.attention import RelativePositionBias, token_positions
from arch.layers.embed import norm, token_embed
from arch.layers.moe import MoEBlock, is_sparse
from arch.layers.transformer import Block, EncoderDecoder, run_blocks
from arch import vocab

Dtype = Any


class Stack(nn.Module):
  """T5's encoder (is_decoder=False) or decoder: embeddings, dropout, pre-RMS-norm blocks
  sharing one relative position bias, final RMS norm, dropout. Returns (B, T, D)."""
  embed: nn.Module  # the shared token embedding
  block: Callable[..., nn.Module]  # functools.partial(Block, ...) without cross_attention
  num_layers: int
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  is_decoder: bool = False
  sparse_block: Optional[Callable[..., nn.Module]] = None  # the MoE layers' (Switch)
  sparse_step: int = 0  # an MoE layer every sparse_step layers (moe.is_sparse)
  scan_layers: bool = False  # the blocks as one nn.scan (run_blocks)
  dropout_rate: float = 0.0
  norm_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, enc_BSD=None, enc_mask_BS=None, *, train: bool = False,
               decode: bool = False):
    b, t = tokens_BT.shape
    decode = decode and self.is_decoder
    q_pos_1T = token_positions(self, 1, t, decode)  # the same for every row
    k_pos_1S = q_pos_1T
    if decode:
      # One entry per KV-cache slot, made with the cache: only its length is read (the
      # sampler zero-fills caches; batch-major so beam search can repeat and gather it).
      # Queries see every slot; the causal mask and the attention's own mask of
      # unwritten slots do the rest.
      initialised = self.has_variable('cache', 'key_slots')
      slots = self.variable('cache', 'key_slots', jnp.zeros, (b, t), jnp.bool_)
      if initialised:
        k_pos_1S = jnp.arange(slots.value.shape[1], dtype=jnp.int32)[None]
    bias_1NTS = RelativePositionBias(
        self.num_heads, bidirectional=not self.is_decoder, num_buckets=self.num_buckets,
        max_distance=self.max_distance, dtype=self.dtype, param_dtype=self.param_dtype,
        name='relative_attention_bias')(q_pos_1T, k_pos_1S)
    pos_BT = jnp.broadcast_to(q_pos_1T, (b, t))

    x_BTD = nn.Dropout(self.dropout_rate)(self.embed(tokens_BT).astype(self.dtype),
                                          deterministic=not train)
    blocks = [self.sparse_block if self.sparse_block and is_sparse(i, self.sparse_step)
              else self.block for i in range(self.num_layers)]
    if self.scan_layers and not self.sparse_block:
      blocks = self.block  # identical blocks: one scanned layer
    x_BTD = run_blocks(blocks, self.num_layers, x_BTD, is_decoder=self.is_decoder,
                       enc_BSD=enc_BSD, enc_mask_BS=enc_mask_BS, self_bias=bias_1NTS,
                       positions_BT=pos_BT, train=train, decode=decode,
                       scan=self.scan_layers)
    x_BTD = norm('rms', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='final_norm')(x_BTD)
    return nn.Dropout(self.dropout_rate)(x_BTD, deterministic=not train)


class Model(EncoderDecoder):
  """T5: source (B, S) and shifted target (B, T) int -> target logits (B, T, V) float32."""
  vocab_size: int = 32128
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  num_heads: int = 8
  embed_dim: int = 512
  head_dim: int = 64  # T5's d_kv; N * H need not equal D
  mlp_dim: int = 2048
  num_buckets: int = 32
  max_distance: int = 128
  dropout_rate: float = 0.0  # HF's T5Config default (fine-tuning): 0.1
  norm_eps: float = 1e-6
  # Switch Transformer: MoE fields (arch/layers/moe.py: num_experts, top_k, ...; the
  # experts' width is mlp_dim) for an MoE layer every `sparse_step` layers of each stack.
  moe: Optional[dict] = None
  sparse_step: int = 2
  # Each stack's blocks as one nn.scan (compile time flat in depth), params and caches
  # stacked under encoder/layers and decoder/layers (`stack_layers(tree, 'layers', L,
  # lambda i: f'layers_{i}')` converts); not with MoE layers, which differ from the rest.
  scan_layers: bool = False
  remat: str = ''  # activation checkpointing of each block (arch/layers/transformer.py)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.shared = token_embed(self.vocab_size, self.embed_dim, stddev=1.0, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    block = functools.partial(
        Block, self.num_heads, self.mlp_dim, head_dim=self.head_dim, pre_norm=True,
        norm='rms', norm_eps=self.norm_eps, activation='relu', use_bias=False,
        attention_scale=1.0, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.dropout_rate, mlp_dropout_rate=self.dropout_rate,
        remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype)
    sparse = None
    if self.moe:
      sparse = functools.partial(MoEBlock, self.num_heads, self.mlp_dim, moe=dict(
          self.moe, expert_dim=self.mlp_dim), head_dim=self.head_dim, pre_norm=True,
          norm='rms', norm_eps=self.norm_eps, activation='relu', use_bias=False,
          attention_scale=1.0, dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.dropout_rate, mlp_dropout_rate=self.dropout_rate,
          remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype)
    stack = functools.partial(Stack, self.shared, block, sparse_block=sparse,
                              sparse_step=self.sparse_step if self.moe else 0,
                              scan_layers=self.scan_layers,
                              num_heads=self.num_heads,
                              num_buckets=self.num_buckets, max_distance=self.max_distance,
                              dropout_rate=self.dropout_rate, norm_eps=self.norm_eps,
                              dtype=self.dtype, param_dtype=self.param_dtype)
    self.encoder = stack(num_layers=self.num_encoder_layers, is_decoder=False)
    self.decoder = stack(num_layers=self.num_decoder_layers, is_decoder=True)

  def logits(self, x_BTD):
    # The tied head reads the output rescaled by D^-1/2, as T5 does.
    return self.shared.attend(x_BTD * self.embed_dim ** -0.5)


# Hugging Face's t5-small and t5-base (T5ForConditionalGeneration, vocabulary 32128).
VARIANTS = {
    'small': dict(num_encoder_layers=6, num_decoder_layers=6, num_heads=8, embed_dim=512,
                  head_dim=64, mlp_dim=2048),
    'base': dict(num_encoder_layers=12, num_decoder_layers=12, num_heads=12, embed_dim=768,
                 head_dim=64, mlp_dim=3072),
    # google/switch-base-8 (SwitchTransformersConfig: t5-base's sizes, 8 experts of width
    # 3072 in every other layer from the second, top-1; the paper's (Fedus et al. 2022)
    # capacity factors 1.25 in training and 2.0 in evaluation, balance loss weight 1e-2,
    # and ST-MoE's router z-loss weight 1e-3).
    'switch-base-8': dict(num_encoder_layers=12, num_decoder_layers=12, num_heads=12,
                          embed_dim=768, head_dim=64, mlp_dim=3072, sparse_step=2,
                          moe=dict(num_experts=8, top_k=1, normalize_gates=False,
                                   capacity_factor=1.25, eval_capacity_factor=2.0,
                                   balance_loss_weight=0.01,
                                   z_loss_weight=0.001)),
}
TINY = dict(vocab_size=vocab.BYTE_VOCAB_SIZE, num_encoder_layers=2, num_decoder_layers=2,
            num_heads=4, embed_dim=64, head_dim=16, mlp_dim=256)
