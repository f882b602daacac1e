"""ProphetNet: future n-gram prediction with n-stream self-attention (Qi et al. 2020,
"ProphetNet: Predicting Future N-gram for Sequence-to-Sequence Pre-training").

The network is Hugging Face's `ProphetNetForConditionalGeneration` layout: one token
embedding shared by the encoder, the decoder and the tied LM head (no bias, no rescale);
per-stack learned positions (a table of `max_positions` rows, HF's
max_position_embeddings, looked up at position + 1: row 0 is the padding row); a
LayerNorm right after the embeddings of each stack; post-LayerNorm blocks with
exact-GELU MLPs and biases everywhere; normal(0.02) initialisation. The encoder is
BART's stack with those positions. The decoder runs 1 + n streams through every layer:

- the main stream h: the shifted target's tokens at positions 1..T, causal self-attention
  over the main stream alone: exactly a causal Transformer decoder (its last layer's
  output is read by nothing);
- n predicting streams: stream s (1..n) at position t starts from a learned stream
  embedding plus the position embedding of t + 2 (no token), and attends to the main
  stream's states at positions <= t - s + 1 (the main state at t has read the targets
  before t) and to its own state at t, never to another predicting position. It predicts
  target t: s tokens past the last one it has seen. Stream 1 is next-token prediction,
  stream 2 the token after it, ...

Every stream shares the layer's weights (query/key/value/out, cross-attention, MLP, norms).
Self-attention adds ProphetNet's relative-position logits: a projection of the query
stream's own state to (buckets, heads), read at the T5 bucket of key - query position
(unidirectional, 32 buckets up to 128); a predicting stream's main keys count from
position t + 1. The main stream's key 0 (the start token, which carries no target) is
visible to every predicting stream, as in HF and fairseq (it keeps the first positions of
far streams from attending to themselves alone). Stream s's embedding is row (s - 2) mod n
of `ngram_embed`: HF's (and fairseq's) order, kept so its checkpoints map row for row.

Decoding (`decode`, what seq2seq's greedy/beam decoding calls) runs the main stream with a
KV cache and only the first predicting stream, whose logits are the next-token logits; the
streams that predict further are switched off, as ProphetNet does at inference. The
future streams' logits come from `ngram_logits` (training).

Parameter counts equal HF's `sum(p.numel() for p in model.parameters())` (tied embedding
once): prophetnet-large-uncased 391,321,600 (`LARGE`, configs/prophetnet_pydoc.py).

The task (`make`): MASS's span masking (arch/sequence/mass.py: one contiguous fragment of
half of each window hidden from the encoder; the decoder reads the fragment shifted right,
<mask> elsewhere) with the future n-gram loss over the fragment: the weighted sum over
streams of each stream's mean negative log-likelihood, weights alpha_j = gamma^j / sum_i
gamma^i (j = 0..n-1; the paper's power attenuation). `gamma` = 1 (equal weights) is what
the released code and HF's loss compute. Config: `task_kwargs` (`Options`). Train metrics
`loss` (the weighted sum), `loss_stream_{s}`, `token_accuracy` (stream 1, over the
fragment: MASS's metric), `future_accuracy` (stream 2); eval `loss`, `token_accuracy`,
`perplexity` of stream 1 and `future_accuracy`, with a fixed noise key.

Measured (2026-12-07, 2-core CPU shared, load 2-15): it sits on the unigram plateau far
longer than MASS. tiny (1+1 layers, width 64), batch 16: 600 steps give validation
fragment loss 3.379, token accuracy 0.213 (the most frequent byte everywhere; MASS's
decoder, same size and steps: 0.372), both streams' losses equal to 5 digits, and the
decoder's final states nearly constant across positions and windows; ngram=1 and lr 3e-4
(to step 300) the same, small (2+2, width 128) 600 steps too (3.381, 0.213). With 2,000
steps tiny leaves the plateau near step 750-1,000: validation loss 2.533, accuracy 0.366,
stream 2 (two bytes ahead) 0.311, train losses 2.72 / 2.94 by stream (MASS tiny, 2,000
steps: 2.240, 0.385). A predicting stream has no token of its own in its residual: what
it knows comes through attention to the main stream, which takes long to learn from the
constant solution (MASS's decoder reads the previous byte in its own residual and learns
bigrams at once). The stream path itself is sound: on a counting sequence a 1+1-layer
model's two streams went from 3.69 to 0.13 nats in 300 steps of Adam 1e-3.

Dimension key: B batch, S source / key length, T target length, G streams (1 + P),
P predicting streams, D width, N heads, H head width, K relative buckets, V vocabulary.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch import vocab
from arch.layers.attention import (NEG_INF, Attention, Projection, key_mask,
                                   relative_position_bucket, token_positions)
from arch.layers.embed import LearnedPositions, Mlp, norm, token_embed
from arch.layers.transformer import Block, EncoderDecoder, run_blocks
from arch.sequence import lm, mass
from arch.task import ConfigError, Task, parse_options

Dtype = Any
INIT_STD = 0.02
POSITION_OFFSET = 1  # row 0 of each position table is HF's padding row


def stream_masks(q_pos_T, k_pos_S, num_streams: int):
  """Which main-stream keys each query sees: the main stream's causal mask (T, S) and the
  predicting streams' (P, T, S): stream s at position t sees main keys <= t - s + 1, and
  key 0."""
  causal_TS = k_pos_S[None, :] <= q_pos_T[:, None]
  shift_P = jnp.arange(num_streams)[:, None, None]
  predict_PTS = ((k_pos_S[None, None, :] <= q_pos_T[None, :, None] - shift_P)
                 | (k_pos_S == 0)[None, None, :])
  return causal_TS, predict_PTS


class NgramSelfAttention(nn.Module):
  """ProphetNet's n-stream self-attention: (B, G, T, D) -> (B, G, T, D), stream 0 the
  main stream. With decode=True the main stream's keys and values are cached
  ('cached_key', 'cached_value': (B, S_max, N, H)); `q_pos_T` are the chunk's positions."""
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  dropout_rate: float = 0.0  # on the attention weights
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BGTD, q_pos_T, *, deterministic: bool = True, decode: bool = False):
    b, g, t, d = x_BGTD.shape
    n, nb = self.num_heads, self.num_buckets
    if d % n:
      raise ValueError(f'model width {d} is not divisible by {n} heads')
    h = d // n
    proj = functools.partial(Projection, init_stddev=INIT_STD, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    q_BGTNH = proj((n, h), ('embed', 'heads', 'kv'), name='query')(x_BGTD) * h ** -0.5
    k_BGTNH = proj((n, h), ('embed', 'heads', 'kv'), name='key')(x_BGTD)
    v_BGTNH = proj((n, h), ('embed', 'heads', 'kv'), name='value')(x_BGTD)
    # HF's relative_pos_embeddings: (buckets, heads) logits from the query's own state.
    rel_BGTKN = proj((nb, n), ('embed', None, 'heads'), name='relative_pos')(x_BGTD)
    rel_BGTKN = rel_BGTKN.astype(jnp.float32)

    k_BSNH, v_BSNH, k_pos_S = k_BGTNH[:, 0], v_BGTNH[:, 0], q_pos_T
    if decode:
      initialised = self.has_variable('cache', 'cached_key')
      cached_k = self.variable('cache', 'cached_key', jnp.zeros, (b, t, n, h), k_BSNH.dtype)
      cached_v = self.variable('cache', 'cached_value', jnp.zeros, (b, t, n, h), v_BSNH.dtype)
      if initialised:
        i = q_pos_T[0]
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BSNH, (0, i, 0, 0))
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BSNH, (0, i, 0, 0))
        k_BSNH, v_BSNH = cached_k.value, cached_v.value
        k_pos_S = jnp.arange(k_BSNH.shape[1], dtype=q_pos_T.dtype)
    p = g - 1
    causal_TS, predict_PTS = stream_masks(q_pos_T, k_pos_S, p)
    bucket = lambda rel: jax.nn.one_hot(relative_position_bucket(
        rel, False, nb, self.max_distance), nb, dtype=jnp.float32)
    rel_TS = k_pos_S[None, :] - q_pos_T[:, None]
    drop = nn.Dropout(self.dropout_rate)

    # Main stream: causal over itself.
    logits_BNTS = jnp.einsum('BTNH,BSNH->BNTS', q_BGTNH[:, 0], k_BSNH,
                             preferred_element_type=jnp.float32)
    logits_BNTS += jnp.einsum('BTKN,TSK->BNTS', rel_BGTKN[:, 0], bucket(rel_TS))
    probs_BNTS = jax.nn.softmax(jnp.where(causal_TS, logits_BNTS, NEG_INF), axis=-1)
    probs_BNTS = drop(probs_BNTS, deterministic=deterministic).astype(v_BSNH.dtype)
    outs = [jnp.einsum('BNTS,BSNH->BTNH', probs_BNTS, v_BSNH)[:, None]]

    if p:
      # Predicting streams: the main stream's earlier states, and their own state.
      q_BPTNH, rel_BPTKN = q_BGTNH[:, 1:], rel_BGTKN[:, 1:]
      main_BPNTS = jnp.einsum('BPTNH,BSNH->BPNTS', q_BPTNH, k_BSNH,
                              preferred_element_type=jnp.float32)
      main_BPNTS += jnp.einsum('BPTKN,TSK->BPNTS', rel_BPTKN, bucket(rel_TS - 1))
      main_BPNTS = jnp.where(predict_PTS[None, :, None], main_BPNTS, NEG_INF)
      own_BPNT = jnp.einsum('BPTNH,BPTNH->BPNT', q_BPTNH, k_BGTNH[:, 1:],
                            preferred_element_type=jnp.float32)
      own_BPNT += rel_BPTKN[:, :, :, 0].transpose(0, 1, 3, 2)  # distance 0: bucket 0
      probs = jax.nn.softmax(jnp.concatenate([main_BPNTS, own_BPNT[..., None]], -1), -1)
      probs = drop(probs, deterministic=deterministic).astype(v_BSNH.dtype)
      out_BPTNH = jnp.einsum('BPNTS,BSNH->BPTNH', probs[..., :-1], v_BSNH)
      out_BPTNH += probs[..., -1].transpose(0, 1, 3, 2)[..., None] * v_BGTNH[:, 1:]
      outs.append(out_BPTNH)
    out_BGTNH = jnp.concatenate(outs, 1)
    return proj((d,), ('heads', 'kv', 'embed'), num_in=2, name='out')(out_BGTNH)


class DecoderLayer(nn.Module):
  """Post-LN decoder layer over all streams: n-stream self-attention, cross-attention to
  the encoder, GELU MLP; each branch dropped out, added and normalised."""
  num_heads: int
  mlp_dim: int
  num_buckets: int = 32
  max_distance: int = 128
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  activation_dropout_rate: float = 0.0
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BGTD, enc_BSD, enc_mask_BS, q_pos_T, *, train: bool = False,
               decode: bool = False):
    b, g, t, d = x_BGTD.shape
    det = not train
    ln = lambda name: norm('layer', self.norm_eps, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=name)
    drop = lambda y: nn.Dropout(self.dropout_rate)(y, deterministic=det)
    y = NgramSelfAttention(self.num_heads, self.num_buckets, self.max_distance,
                           self.attention_dropout_rate, dtype=self.dtype,
                           param_dtype=self.param_dtype, name='self_attn')(
                               x_BGTD, q_pos_T, deterministic=det, decode=decode)
    x_BLD = ln('self_attn_norm')(x_BGTD + drop(y)).reshape(b, g * t, d)
    y = Attention(self.num_heads, dropout_rate=self.attention_dropout_rate,
                  init_stddev=INIT_STD, dtype=self.dtype, param_dtype=self.param_dtype,
                  name='cross_attn')(x_BLD, enc_BSD, mask=key_mask(enc_mask_BS),
                                     deterministic=det)
    x_BLD = ln('cross_attn_norm')(x_BLD + drop(y))
    y = Mlp(self.mlp_dim, 'gelu', dropout_rate=self.activation_dropout_rate,
            init_stddev=INIT_STD, dtype=self.dtype, param_dtype=self.param_dtype,
            name='mlp')(x_BLD, det)
    return ln('mlp_norm')(x_BLD + drop(y)).reshape(b, g, t, d)


class Encoder(nn.Module):
  """Token + learned positions (from row 1), layernorm_embedding, dropout, post-LN
  blocks under the source padding mask: (B, S) -> (B, S, D)."""
  embed: nn.Module
  block: Callable[..., nn.Module]
  num_layers: int
  max_positions: int
  dropout_rate: float = 0.0
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BS, enc_BSD=None, enc_mask_BS=None, *, train: bool = False,
               decode: bool = False):
    del enc_BSD, decode
    b, s = tokens_BS.shape
    if s + POSITION_OFFSET > self.max_positions:
      raise ValueError(f'source length {s} needs more than max_positions='
                       f'{self.max_positions} position rows')
    pos_BS = token_positions(self, b, s) + POSITION_OFFSET
    x = self.embed(tokens_BS) + LearnedPositions(
        self.max_positions, self.embed.features, param_dtype=self.param_dtype,
        name='embed_positions')(pos_BS)
    x = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
             name='layernorm_embedding')(x.astype(self.dtype))
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return run_blocks(self.block, self.num_layers, x, is_decoder=False,
                      enc_mask_BS=enc_mask_BS, train=train)


class Decoder(nn.Module):
  """The n-stream decoder: shifted target (B, T) -> the streams' last states (B, 1 + P, T, D),
  stream 0 the main stream. `num_streams` predicting streams are computed (default all n;
  decoding computes 1, 0 leaves the main stream alone)."""
  embed: nn.Module
  num_layers: int
  num_heads: int
  mlp_dim: int
  max_positions: int
  ngram: int = 2
  num_buckets: int = 32
  max_distance: int = 128
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  activation_dropout_rate: float = 0.0
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT, enc_BSD, enc_mask_BS, *, train: bool = False,
               decode: bool = False, num_streams=None):
    b, t = tokens_BT.shape
    if t + POSITION_OFFSET + 1 > self.max_positions:
      raise ValueError(f'target length {t} needs more than max_positions='
                       f'{self.max_positions} position rows (the predicting streams read '
                       'one row past the main stream)')
    p = (1 if decode else self.ngram) if num_streams is None else num_streams
    pos_BT = token_positions(self, b, t, decode)
    d = self.embed.features
    positions = LearnedPositions(self.max_positions, d, param_dtype=self.param_dtype,
                                 name='embed_positions')
    ngram_ND = self.param('ngram_embed', nn.with_logical_partitioning(
        nn.initializers.normal(INIT_STD), (None, 'embed')), (self.ngram, d), self.param_dtype)
    main_BTD = self.embed(tokens_BT) + positions(pos_BT + POSITION_OFFSET)
    ahead_BTD = positions(pos_BT + POSITION_OFFSET + 1)
    streams = [main_BTD] + [ahead_BTD + ngram_ND[(s - 1) % self.ngram] for s in range(p)]
    x_BGTD = jnp.stack(streams, 1)
    x_BGTD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                  name='layernorm_embedding')(x_BGTD.astype(self.dtype))
    x_BGTD = nn.Dropout(self.dropout_rate)(x_BGTD, deterministic=not train)
    for i in range(self.num_layers):
      x_BGTD = DecoderLayer(
          self.num_heads, self.mlp_dim, self.num_buckets, self.max_distance,
          self.dropout_rate, self.attention_dropout_rate, self.activation_dropout_rate,
          self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
          name=f'layers_{i}')(x_BGTD, enc_BSD, enc_mask_BS, pos_BT[0], train=train,
                              decode=decode)
    return x_BGTD


class Model(EncoderDecoder):
  """ProphetNet: source (B, S) and shifted target (B, T) int -> next-token logits
  (B, T, V) float32 (the first predicting stream's); `ngram_logits` gives every stream's."""
  vocab_size: int = 30522
  num_encoder_layers: int = 12
  num_decoder_layers: int = 12
  num_heads: int = 16
  embed_dim: int = 1024
  mlp_dim: int = 4096
  max_positions: int = 512  # rows of each position table (HF's max_position_embeddings)
  ngram: int = 2  # predicting streams
  num_buckets: int = 32
  relative_max_distance: int = 128
  dropout_rate: float = 0.0  # ProphetNet trained with 0.1 (here and the two below)
  attention_dropout_rate: float = 0.0
  activation_dropout_rate: float = 0.0
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def max_length(self):
    """The longest target (and source) the position tables hold."""
    return self.max_positions - POSITION_OFFSET - 1

  def setup(self):
    if self.ngram < 1:
      raise ValueError(f'ngram={self.ngram}: ProphetNet needs at least one predicting stream')
    self.shared = token_embed(self.vocab_size, self.embed_dim, stddev=INIT_STD,
                              dtype=self.dtype, param_dtype=self.param_dtype)
    block = functools.partial(
        Block, self.num_heads, self.mlp_dim, pre_norm=False, norm_eps=self.norm_eps,
        activation='gelu', use_bias=True, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate,
        mlp_dropout_rate=self.activation_dropout_rate, init_stddev=INIT_STD,
        dtype=self.dtype, param_dtype=self.param_dtype)
    self.encoder = Encoder(self.shared, block, self.num_encoder_layers, self.max_positions,
                           self.dropout_rate, self.norm_eps, dtype=self.dtype,
                           param_dtype=self.param_dtype)
    self.decoder = Decoder(self.shared, self.num_decoder_layers, self.num_heads, self.mlp_dim,
                           self.max_positions, self.ngram, self.num_buckets,
                           self.relative_max_distance, self.dropout_rate,
                           self.attention_dropout_rate, self.activation_dropout_rate,
                           self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)

  def logits(self, x_BTD):
    return self.shared.attend(x_BTD)

  def streams(self, tgt_in_BT, encoded, *, train: bool = False, decode: bool = False,
              num_streams=None):
    """The decoder's last states of every stream computed (B, 1 + P, T, D)."""
    return self.decoder(tgt_in_BT, encoded['hidden'], encoded['mask'], train=train,
                        decode=decode, num_streams=num_streams)

  def decode(self, tgt_in_BT, encoded, *, train: bool = False, decode: bool = False):
    """Next-token logits (B, T, V) float32: the first predicting stream's (with
    decode=True only the main stream and that stream run)."""
    x_BGTD = self.streams(tgt_in_BT, encoded, train=train, decode=decode,
                          num_streams=1 if decode else None)
    return self.logits(x_BGTD[:, 1]).astype(jnp.float32)

  def ngram_logits(self, src_BS, tgt_in_BT, *, train: bool = False):
    """Every predicting stream's logits (B, n, T, V) float32: stream s at t predicts
    target t from the targets before t - s + 1."""
    x_BGTD = self.streams(tgt_in_BT, self.encode(src_BS, train=train), train=train)
    return self.logits(x_BGTD[:, 1:]).astype(jnp.float32)


# Hugging Face's microsoft/prophetnet-large-uncased (ProphetNetForConditionalGeneration).
LARGE = dict(vocab_size=30522, num_encoder_layers=12, num_decoder_layers=12, num_heads=16,
             embed_dim=1024, mlp_dim=4096, max_positions=512, ngram=2, num_buckets=32,
             relative_max_distance=128)


# ---------------------------------------------------------------------------------------
# The task: MASS's span masking with the future n-gram loss
# ---------------------------------------------------------------------------------------

def stream_weights(n: int, gamma: float):
  """alpha_j = gamma^j / sum_i gamma^i, j = 0..n-1 (the paper's power attenuation)."""
  w = np.asarray([gamma ** j for j in range(n)], np.float64)
  return (w / w.sum()).astype(np.float32)


def ngram_loss(logits_BPTV, targets_BT, weights_BT, alpha_P):
  """(the weighted sum over streams of each stream's mean NLL over the weighted targets,
  that mean per stream (P,)). Every stream predicts the same targets: stream s at t has
  seen the targets before t - s + 1."""
  nll_BPT = optax.softmax_cross_entropy_with_integer_labels(
      logits_BPTV, jnp.broadcast_to(targets_BT[:, None], logits_BPTV.shape[:3]))
  per_stream_P = (nll_BPT * weights_BT[:, None]).sum((0, 2)) / jnp.maximum(weights_BT.sum(), 1.0)
  return (jnp.asarray(alpha_P) * per_stream_P).sum(), per_stream_P


@dataclasses.dataclass(frozen=True)
class Options:
  """ProphetNet's task_kwargs."""
  fragment_ratio: float = 0.5  # MASS's noise (arch/sequence/mass.py)
  mask_prob: float = 0.8
  random_prob: float = 0.1
  gamma: float = 1.0  # stream j's loss weight is proportional to gamma^j


def make(config) -> Task:
  opts = parse_options(Options, config)
  length, noise = mass.noise_options(opts, config, 'ProphetNet')
  if not float(opts.gamma) > 0:
    raise ConfigError(f'task_kwargs.gamma={opts.gamma}: must be > 0')
  model = arch.model_from_config(config)
  if not hasattr(model, 'ngram_logits'):
    raise ConfigError(f'the ProphetNet task needs a network with ngram_logits (the n-stream '
                      f'decoder, sequence.prophetnet); {config.model_name!r} has none')
  if length > model.max_length:
    raise ConfigError(f'config.model.max_positions={model.max_positions} holds windows of '
                      f'at most {model.max_length} tokens (data.pack={length})')
  alpha = stream_weights(int(model.ngram), float(opts.gamma))

  def forward(variables, batch, rng, train, dropout_rng=None):
    tokens = batch['tokens']
    src, dec_in, frag = mass.corrupt(rng, tokens, **noise)
    rngs = {'dropout': dropout_rng} if dropout_rng is not None else None
    logits = model.apply(variables, src, dec_in, train=train, rngs=rngs,
                         method=Model.ngram_logits)
    return logits, tokens, frag.astype(jnp.float32)

  def init(rng, batch):
    tokens = batch['tokens']
    return model.init({'params': rng, 'dropout': rng}, tokens, tokens, train=False)

  def loss(variables, batch, rng):
    noise_rng, dropout_rng = jax.random.split(rng)
    logits, tokens, w = forward(variables, batch, noise_rng, True, dropout_rng)
    total, per_stream = ngram_loss(logits, tokens, w, alpha)
    n = jnp.maximum(w.sum(), 1.0)
    correct_BP = ((logits.argmax(-1) == tokens[:, None]) * w[:, None]).sum(-1)
    metrics = {'loss': total, 'token_accuracy': correct_BP[:, 0].sum() / n,
               'fragment_fraction': w.sum() / jnp.maximum((tokens != vocab.PAD).sum(), 1)}
    for s in range(per_stream.shape[0]):
      metrics[f'loss_stream_{s + 1}'] = per_stream[s]
    if per_stream.shape[0] > 1:
      metrics['future_accuracy'] = correct_BP[:, 1].sum() / n
    return total, (metrics, {})

  def evaluate(variables, batch):
    logits, tokens, w = forward(variables, batch, jax.random.key(mass.EVAL_SEED), False)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits[:, 0], tokens) * w
    correct_BP = ((logits.argmax(-1) == tokens[:, None]) * w[:, None]).sum(-1)
    out = {'nll': nll.sum(-1), 'correct': correct_BP[:, 0], 'tokens': w.sum(-1)}
    if logits.shape[1] > 1:
      out['future_correct'] = correct_BP[:, 1]
    return out

  def finalize_eval(sums, count):
    del count
    out = lm.token_metrics(sums, 'token_accuracy')
    n = out['tokens']
    if 'future_correct' in sums:
      out['future_accuracy'] = float(sums['future_correct']) / n
    return out

  def example_batch(batch_size):
    return {'tokens': jax.ShapeDtypeStruct((batch_size, length), jnp.int32)}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch)
