"""Recurrent Memory Transformer (Bulatov, Kuratov & Burtsev 2022), decoder variant, and the
answer-scored objective it is trained with on segment-spanning recall.

A long sequence is cut into segments of `segment_length` tokens that one GPT-style decoder
(arch/sequence/gpt.py's layout and parameter names: wte, wpe, h{i}, ln_f, tied head)
processes one after another. `num_memory` memory vectors ride along: segment s reads the
layout

  [ read memory (M) ;  segment tokens (T) ;  write memory (M) ]

where both memory blocks start as the memory the previous segment wrote (the first segment
reads a learned initial memory, param `memory`), with learned positions 0..2M+T-1 added.
Attention is causal over the layout, except that the read block is visible to every
position and the write block attends within itself: segment tokens see the read memory and
earlier tokens only, the write slots see everything. The write slots' last residual states
(before the final norm, which only the tokens' logits go through) are the next segment's
memory. The recurrence is one `nn.scan` over segments (parameters shared), so the whole
sequence is one differentiable computation: backpropagation through time over all
segments, or, with `bptt_segments` = k, through the memory of the last k only (the read
memory of segments 1..N-k is a stop_gradient). `num_memory=0` is the same network reading
each segment alone, the no-memory baseline.

The objective (`make`): causal-LM cross-entropy on the scored positions only. A batch is
{'tokens': (B, L), 'targets': (B, L)} with the label at each scored position (the token
that follows it) and -1 elsewhere (train/datasets/recall.py). Eval reports `accuracy` and
`loss` over the answers and `exact` (the fraction of sequences with every answer right).
The network is any `Model(tokens_BL, *, train) -> logits_BLV`.

Measured (configs/rmt_recall.py has the numbers and commands): recalling a value stated
two segments back, across a noise segment, 8 memory slots take test accuracy from chance
(0.0565 without memory; chance 0.0625) to 0.749 in 1,500 steps (1.000 with no noise
segment between), after a plateau at chance whose length depended on the seed and batch
size. Deeper recurrences stayed at chance in the short runs this CPU allowed; the paper
trains them with a curriculum over the number of segments, not implemented here.

Dimension key: B batch, L sequence length, N segments, T segment length, M memory slots,
S = 2M + T the layout a segment runs through, D width, V vocabulary.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.layers.embed import LearnedPositions, norm, token_embed
from arch.layers.transformer import Block
from arch.sequence import decoding
from arch.task import ConfigError, Task, parse_options

Dtype = Any


def memory_mask(num_memory: int, segment_length: int) -> np.ndarray:
  """(1, 1, S, S) bool, True = query i attends to key j: causal, plus the read block (the
  first M) visible to all and the write block (the last M) attending within itself."""
  m, s = num_memory, 2 * num_memory + segment_length
  i, j = np.arange(s)[:, None], np.arange(s)[None, :]
  allowed = (j <= i) | (j < m) | ((i >= s - m) & (j >= s - m))
  return allowed[None, None]


class Segment(nn.Module):
  """One recurrence step: (memory (B, M, D), (tokens (B, T), index)) -> (next memory,
  logits (B, T, V))."""
  vocab_size: int
  num_memory: int
  num_segments: int  # of the sequence being read, for the BPTT cut
  bptt_segments: int
  num_layers: int
  num_heads: int
  embed_dim: int
  mlp_dim: Optional[int]
  dropout_rate: float
  norm_eps: float
  train: bool
  dtype: Dtype
  param_dtype: Dtype

  @nn.compact
  def __call__(self, mem_BMD, inputs):
    tokens_BT, index = inputs
    b, t = tokens_BT.shape
    m = self.num_memory
    k = self.bptt_segments
    if 0 < k < self.num_segments:  # truncated BPTT: no gradient into older segments
      mem_BMD = jnp.where((index >= 1) & (index <= self.num_segments - k),
                          jax.lax.stop_gradient(mem_BMD), mem_BMD)
    embed = token_embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='wte')
    x_BSD = jnp.concatenate([mem_BMD, embed(tokens_BT).astype(self.dtype), mem_BMD], axis=1)
    pos_BS = jnp.broadcast_to(jnp.arange(2 * m + t, dtype=jnp.int32), (b, 2 * m + t))
    x_BSD = x_BSD + LearnedPositions(2 * m + t, self.embed_dim, param_dtype=self.param_dtype,
                                     name='wpe')(pos_BS)
    x_BSD = nn.Dropout(self.dropout_rate)(x_BSD.astype(self.dtype),
                                          deterministic=not self.train)
    mask = jnp.asarray(memory_mask(m, t))
    for i in range(self.num_layers):
      x_BSD = Block(self.num_heads, self.mlp_dim or 4 * self.embed_dim, pre_norm=True,
                    norm_eps=self.norm_eps, activation='gelu_tanh',
                    dropout_rate=self.dropout_rate,
                    attention_dropout_rate=self.dropout_rate, init_stddev=0.02,
                    out_init_stddev=0.02 / np.sqrt(2 * self.num_layers), dtype=self.dtype,
                    param_dtype=self.param_dtype, name=f'h{i}')(
                        x_BSD, self_mask=mask, deterministic=not self.train)
    h_BTD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='ln_f')(x_BSD[:, m:m + t])
    logits_BTV = embed.attend(h_BTD).astype(jnp.float32)
    return x_BSD[:, m + t:], logits_BTV


class Model(nn.Module):
  """RMT: tokens (B, L) int, L a multiple of segment_length -> next-token logits (B, L, V)
  float32, the segments read in order with memory carried between them."""
  vocab_size: int = 50
  segment_length: int = 16
  num_memory: int = 8  # 0: every segment alone (the baseline)
  bptt_segments: int = 0  # 0: backpropagate through every segment
  num_layers: int = 2
  num_heads: int = 4
  embed_dim: int = 128
  mlp_dim: Optional[int] = None  # default 4 * embed_dim
  dropout_rate: float = 0.0
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BL, *, train: bool = False):
    b, l = tokens_BL.shape
    t = self.segment_length
    if l % t:
      raise ValueError(f'sequence length {l} is not a multiple of segment_length {t}')
    n = l // t
    if self.num_memory:
      mem_MD = self.param('memory', nn.with_logical_partitioning(
          nn.initializers.normal(0.02), (None, 'embed')), (self.num_memory, self.embed_dim),
          self.param_dtype)
      mem_BMD = jnp.broadcast_to(jnp.asarray(mem_MD, self.dtype),
                                 (b, self.num_memory, self.embed_dim))
    else:
      mem_BMD = jnp.zeros((b, 0, self.embed_dim), self.dtype)
    scan = nn.scan(Segment, variable_broadcast='params',
                   split_rngs={'params': False, 'dropout': True}, in_axes=0, out_axes=0,
                   length=n)
    segment = scan(self.vocab_size, self.num_memory, n, self.bptt_segments, self.num_layers,
                   self.num_heads, self.embed_dim, self.mlp_dim, self.dropout_rate,
                   self.norm_eps, train, self.dtype, self.param_dtype, name='segment')
    tokens_NBT = tokens_BL.reshape(b, n, t).transpose(1, 0, 2)
    _, logits_NBTV = segment(mem_BMD, (tokens_NBT, jnp.arange(n)))
    return logits_NBTV.transpose(1, 0, 2, 3).reshape(b, l, self.vocab_size)


@dataclasses.dataclass(frozen=True)
class Options:
  """task_kwargs of the answer-scored objective."""
  length: int = 48  # tokens per sequence (the recall dataset's)


def make(config) -> Task:
  opts = parse_options(Options, config)
  if opts.length < 2:
    raise ConfigError(f'config.task_kwargs.length must be >= 2, got {opts.length}')
  model = arch.model_from_config(config)

  def scored(logits_BLV, targets_BL):
    """Per-position cross-entropy, correctness and weight (1 at the answers)."""
    weights = (targets_BL >= 0).astype(jnp.float32)
    labels = jnp.maximum(targets_BL, 0)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, labels) * weights
    correct = (logits_BLV.argmax(-1) == labels) * weights
    return nll, correct, weights

  def init(rng, batch):
    return model.init({'params': rng, 'dropout': rng}, batch['tokens'], train=False)

  def loss(variables, batch, rng):
    logits = model.apply(variables, batch['tokens'], train=True, rngs={'dropout': rng})
    nll, correct, weights = scored(logits, batch['targets'])
    n = jnp.maximum(weights.sum(), 1.0)
    ce = nll.sum() / n
    return ce, ({'loss': ce, 'accuracy': correct.sum() / n}, {})

  def evaluate(variables, batch):
    logits = model.apply(variables, batch['tokens'], train=False)
    nll, correct, weights = scored(logits, batch['targets'])
    return {'nll': nll.sum(-1), 'correct': correct.sum(-1), 'answers': weights.sum(-1),
            'exact': (correct.sum(-1) == weights.sum(-1)).astype(jnp.float32)}

  def finalize_eval(sums, count):
    n = max(float(sums['answers']), 1.0)
    return {'loss': float(sums['nll']) / n, 'accuracy': float(sums['correct']) / n,
            'exact': float(sums['exact']) / max(float(count), 1.0), 'answers': n}

  def example_batch(batch_size):
    shape = jax.ShapeDtypeStruct((batch_size, opts.length), jnp.int32)
    return {'tokens': shape, 'targets': shape}

  def prompt_batch(prompts, num_samples, examples):
    """{'prompt': (B, P)}: the given prompts (one length), or where they are empty each
    row's eval example up to and including its first scored position (the queried key,
    whose next token is the answer)."""
    del num_samples
    if all(len(p) == 0 for p in prompts):
      tokens, targets = np.asarray(examples['tokens']), np.asarray(examples['targets'])
      first = (targets >= 0).argmax(1)
      if (targets < 0).all(1).any() or len(set(first.tolist())) > 1:
        raise ConfigError('the eval examples must share the position of their first answer')
      return {'prompt': tokens[:, :first[0] + 1].astype(np.int32)}
    if any(len(p) == 0 for p in prompts) or len({len(p) for p in prompts}) > 1:
      raise ConfigError('RMT prompts in one batch must have the same, nonzero length')
    return {'prompt': np.asarray(prompts, np.int32)}

  def sample(variables, batch, rng, *, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
             row_ids=None):
    """Continues batch['prompt'] (B, P) token by token. Each new token re-reads the whole
    sequence padded to whole segments: the logits of a position depend only on the
    segments before its own (through their memory) and on its segment's earlier tokens, so
    the padding after it changes nothing. Returns the new tokens and the prompt."""
    prompt = batch['prompt']
    b, p = prompt.shape
    t = config.model.segment_length
    buf = jnp.zeros((b, -(-(p + max_new_tokens) // t) * t), jnp.int32).at[:, :p].set(prompt)

    def logits_at(buf, pos):
      """Logits for the token at position pos, from the sequence before it."""
      logits = model.apply(variables, buf, train=False)
      return jax.lax.dynamic_index_in_dim(logits, pos - 1, axis=1, keepdims=False)

    def step(tokens, cache):
      buf, pos = cache
      buf = jax.lax.dynamic_update_slice_in_dim(buf, tokens, pos, axis=1)
      return logits_at(buf, pos + 1), (buf, pos + 1)

    first = logits_at(buf, jnp.asarray(p))
    tokens = decoding.generate(step, (buf, jnp.asarray(p)), first, rng, max_new_tokens,
                               eos_id=-1, row_ids_B=row_ids, temperature=temperature,
                               top_k=top_k, top_p=top_p)
    return {'tokens': tokens, 'prompt': prompt}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch, sample=sample, prompt_batch=prompt_batch,
              prompt_examples=True, continues_prompt=True)
