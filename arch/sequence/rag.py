"""RAG: retrieval-augmented generation with marginalisation over retrieved passages (Lewis
et al. 2020, "Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks").

An input x (the `prefix` bytes of a window) is a query to a database of passages cut from
the train text. As in RAG the document index is fixed: a passage's key is a FROZEN
network's mean-pooled states of its first `prefix` bytes (`config.frozen.encoder`, the
same key function and database as RETRO, arch/sequence/retro.py), computed once and kept in
the checkpoint. The query encoder is DPR-style and trainable: the same frozen network's
pooled states of x followed by a trainable affine head (initialised to the identity, so
training starts from the frozen k-NN). Retrieval is exact k-NN in L2 distance (retro's
`nearest`, with its own-document filter during training) of x's frozen key
(`frozen_search`; or of the trained query), and the retriever's distribution over the top
K passages is p(z|x) = softmax_z(-s * |q(x) - d(z)|^2) with a trainable scale s
(log-parameterised).

The generator: the paper's is BART (an encoder-decoder reading [passage ; x]); here it is
the usual decoder-only form, a GPT (arch/sequence/gpt.py) reading [passage ; x ; y] in its
context and predicting the target continuation y; with `aligned` (Generator) block 0 also
reads, at each position, the passage byte aligned with the byte it predicts (a passage
keyed by x verbatim holds y at a fixed offset). Marginalisation (`marginal`):
  'sequence' (RAG-Sequence): p(y|x) = sum_z p(z|x) prod_i p(y_i | x, z, y<i)
  'token'    (RAG-Token):    p(y|x) = prod_i sum_z p(z|x) p(y_i | x, z, y<i)
The loss is -log p(y|x) per target byte; its gradient reaches the query head through
p(z|x). `retrieval=False` is the same generator reading [x ; y] alone: the baseline.

Sampling (`python -m train.sample`) decodes with RAG-Token's per-step mixture for both
forms: each of the K passages keeps its own KV cache, and the next byte is drawn from (at
temperature 0: the argmax of) sum_z p(z|x) p(y_i | x, z, y<i), with the prompt as x.

Data: windows of prefix + target bytes of the pydoc train topics minus `held_out`; eval
on the config's packed split (`pydoc_retro` validation, whose chunks recur verbatim in
train). Training queries exclude database passages from the documents of their own
window (retro's filter), so the model cannot copy its own future.

Dimension key: B batch, K passages, P prefix (x) length, Y target (y) length, R passage
length (2 * prefix), L generator length, V vocabulary, E key width, N database entries.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch import vocab
from arch.sequence import decoding, gpt, lm, retro
from arch.task import ConfigError, Task, parse_options

Dtype = Any

MARGINALS = ('sequence', 'token')

# ------------------------------------------------------------------------ marginals


def marginal_nll(logp_z_BK, logp_y_BKY, weights_BY, marginal: str):
  """-log p(y|x) per example (B,): `logp_z_BK` the retriever's log p(z|x) over the K
  passages, `logp_y_BKY` the generator's log p(y_i | x, z, y<i), `weights_BY` 1 for the
  target bytes that count (0 for <pad>)."""
  if marginal == 'sequence':
    seq_BK = jnp.sum(logp_y_BKY * weights_BY[:, None], axis=-1)
    return -jax.nn.logsumexp(logp_z_BK + seq_BK, axis=-1)
  if marginal == 'token':
    tok_BY = jax.nn.logsumexp(logp_z_BK[:, :, None] + logp_y_BKY, axis=1)
    return -jnp.sum(tok_BY * weights_BY, axis=-1)
  raise ValueError(f'marginal must be one of {MARGINALS}, got {marginal!r}')


def token_mixture(logp_z_BK, logp_BKV):
  """log sum_z p(z|x) p(. | x, z, ...) (B, V): RAG-Token's next-token distribution."""
  return jax.nn.logsumexp(logp_z_BK[:, :, None] + logp_BKV, axis=1)


def retrieve(query_BE, scale, index, k: int, query_doc_BJ=None, search_BE=None):
  """(indices (B, K) of the K nearest passages in L2 distance, nearest first, and
  log p(z|x) (B, K) = log_softmax(-scale * distance^2)). The K are the nearest to
  `search_BE` (default the query itself); passages sharing a document id with a query's
  `query_doc_BJ` are excluded (retro's filter). Gradients reach the query and the scale
  through the distances; the choice of the K is not differentiable."""
  search_BE = query_BE if search_BE is None else search_BE
  idx_BK = retro.nearest(jax.lax.stop_gradient(search_BE), index['keys'], k, query_doc_BJ,
                         None if query_doc_BJ is None else index['doc'])
  d_BK = jnp.sum((query_BE[:, None, :] - index['keys'][idx_BK]) ** 2, axis=-1)
  return idx_BK, jax.nn.log_softmax(-scale * d_BK, axis=-1)


# ------------------------------------------------------------------------------ model


def _identity(key, shape, dtype=jnp.float32):
  del key
  return jnp.eye(*shape, dtype=dtype)


class Generator(gpt.Model):
  """The GPT generator with an aligned read of the passage (`aligned`): block 0's input
  at each position also holds an embedding of `context` (B, T), the passage byte aligned
  with the byte that position predicts (<pad> where there is none)."""

  def layer(self, i: int, x_BTD, pos_BT, *, train: bool, decode: bool, context=None):
    if i == 0 and context is not None:
      x_BTD = x_BTD + nn.Embed(self.vocab_size, self.embed_dim, param_dtype=self.param_dtype,
                               embedding_init=nn.initializers.normal(0.02),
                               name='aligned')(context).astype(x_BTD.dtype)
    return super().layer(i, x_BTD, pos_BT, train=train, decode=decode)


class Model(nn.Module):
  """RAG's trainable parts: the generator (a GPT: tokens (B, L) -> logits (B, L, V)) and
  the query head (`query`: pooled frozen states (B, E) -> query key (B, E), scale)."""
  vocab_size: int = 260
  num_layers: int = 4
  num_heads: int = 4
  embed_dim: int = 128
  mlp_dim: Optional[int] = None  # default 4 * embed_dim
  max_length: int = 256  # passage + prefix + target - 1
  positions: str = 'learned'  # or 'rope': relative positions (a copy at a fixed offset)
  key_dim: int = 32  # E: the frozen encoder's width (its pooled states are the keys)
  retrieval: bool = True  # False: the generator alone, reading [x ; y] (the baseline)
  # True: block 0 also reads the passage byte aligned with each predicted byte (Generator)
  aligned: bool = False
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    aligned = self.retrieval and self.aligned
    self.generator = (Generator if aligned else gpt.Model)(
        vocab_size=self.vocab_size, num_layers=self.num_layers, num_heads=self.num_heads,
        embed_dim=self.embed_dim, mlp_dim=self.mlp_dim, max_length=self.max_length,
        positions=self.positions, dropout_rate=self.dropout_rate, dtype=self.dtype,
        param_dtype=self.param_dtype)
    if self.retrieval:
      self.query_head = nn.Dense(self.key_dim, kernel_init=_identity,
                                 param_dtype=self.param_dtype)
      self.log_scale = self.param('log_scale', nn.initializers.zeros, (), self.param_dtype)

  def __call__(self, tokens_BL, aligned_BL=None, *, train: bool = False,
               decode: bool = False):
    if not (self.retrieval and self.aligned):
      aligned_BL = None
    elif aligned_BL is None:
      aligned_BL = jnp.full_like(tokens_BL, vocab.PAD)
    return self.generator(tokens_BL, train=train, decode=decode, context=aligned_BL)

  def query(self, pooled_BE):
    """(query key (B, E) in float32, the retriever's scale s > 0)."""
    return (self.query_head(pooled_BE.astype(jnp.float32)).astype(jnp.float32),
            jnp.exp(self.log_scale.astype(jnp.float32)))

  def init_all(self, tokens_BL, pooled_BE=None):
    """Creates every parameter (init's entry point)."""
    logits = self(tokens_BL)
    return logits if pooled_BE is None else (logits, self.query(pooled_BE))


TINY = dict(num_layers=2, num_heads=2, embed_dim=32, max_length=64)

# ------------------------------------------------------------------------------- task


@dataclasses.dataclass(frozen=True)
class Options:
  """RAG's task options."""
  # pydoc topics kept out of the database and the train windows (the validation split)
  held_out: tuple = ()
  prefix: int = 64  # P: bytes of x; also the keyed chunk of a passage (passages are 2P)
  target: int = 64  # Y: bytes of y, the continuation the loss is on
  num_passages: int = 4  # K
  marginal: str = 'sequence'  # or 'token'
  database_stride: int = 0  # a passage starts every this many bytes (0: prefix)
  window_stride: int = 16  # train windows start every this many bytes of the stream
  index_batch: int = 1024  # database chunks the frozen encoder embeds at once
  # True: the K nearest to x's frozen key (the index's own key function); the trainable
  # query head only scores them (p(z|x)). False: the K nearest to the trained query.
  frozen_search: bool = True


class Windows(retro.ShuffledWindows):
  """The train input: windows of `length` tokens starting every `stride` tokens of the
  train stream, shuffled each epoch (seeded), with the documents of their first and last
  token {'tokens': (B, length), 'doc': (B, 2)}; the state is the global batches drawn."""

  def __init__(self, tokens, doc, length, stride, batch_size, seed, pidx, pcount):
    super().__init__(len(tokens), length, stride, batch_size, seed, pidx, pcount)
    self.tokens, self.doc = tokens, doc

  def __next__(self):
    starts = self.next_starts()
    rows = starts[:, None] + np.arange(self.length)
    return {'tokens': self.tokens[rows],
            'doc': np.stack([self.doc[starts], self.doc[starts + self.length - 1]], -1)}


def make(config) -> Task:
  opts = parse_options(Options, config)
  vocab.check_model(config)
  if opts.marginal not in MARGINALS:
    raise ConfigError(f'config.task_kwargs.marginal={opts.marginal!r}; valid: '
                      f'{", ".join(MARGINALS)}')
  model = arch.model_from_config(config)
  p, y, k = opts.prefix, opts.target, opts.num_passages
  r = 2 * p
  length = int(config.data.get('pack') or 0)
  if length != p + y:
    raise ConfigError(f'RAG needs config.data.pack = prefix + target = {p + y}, got {length}')
  gen_length = (r if model.retrieval else 0) + p + y - 1
  if gen_length > model.max_length:
    raise ConfigError(f'the generator reads {gen_length} tokens (passage {r} + prefix {p} + '
                      f'target {y} - 1) but config.model.max_length={model.max_length}')
  docs, train_names = retro.corpus(opts.held_out)
  stream, stream_doc = retro.token_stream(docs, train_names)
  db = retro.database(stream, stream_doc, p, opts.database_stride)
  n = len(db['tokens'])
  if model.retrieval:
    encoder, key_fn = retro.frozen_key_fn(config)

  def init(rng, batch):
    b = batch['tokens'].shape[0]
    tokens = jnp.zeros((b, gen_length), jnp.int32)
    if not model.retrieval:
      return model.init({'params': rng, 'dropout': rng}, tokens, method=Model.init_all)
    enc_vars = encoder.init(rng, jnp.zeros((1, p), jnp.int32))
    e = jax.eval_shape(lambda: key_fn(enc_vars, jnp.zeros((1, p), jnp.int32))).shape[-1]
    if e != model.key_dim:
      raise ConfigError(f'config.model.key_dim={model.key_dim} but the frozen encoder\'s '
                        f'keys have {e} numbers')
    params = model.init({'params': rng, 'dropout': rng}, tokens,
                        jnp.zeros((b, e), jnp.float32), method=Model.init_all)
    index = {'keys': jnp.zeros((n, e), jnp.float32), 'tokens': jnp.asarray(db['tokens']),
             'doc': jnp.asarray(db['doc']), 'built': jnp.zeros((), jnp.int32)}
    return {**params, 'encoder': enc_vars, 'index': index}

  def build_index(variables):
    """The index with its keys: built by the frozen encoder when it has none yet."""
    index = variables['index']

    def build(index):
      pad = -n % opts.index_batch
      blocks = jnp.pad(index['tokens'][:, :p], ((0, pad), (0, 0))).reshape(
          -1, opts.index_batch, p)
      keys = jax.lax.map(lambda c: key_fn(variables['encoder'], c), blocks)
      return dict(index, keys=keys.reshape(-1, keys.shape[-1])[:n],
                  built=jnp.ones((), jnp.int32))

    return jax.lax.cond(index['built'] > 0, lambda i: i, build, index)

  def passages(variables, index, x_BP, doc_BJ=None):
    """(passages (B, K, R), log p(z|x) (B, K)) for the prefixes x."""
    params = {'params': variables['params']}
    pooled_BE = key_fn(variables['encoder'], x_BP)
    q_BE, scale = model.apply(params, pooled_BE, method=Model.query)
    # the K are searched with the frozen key of x (a trained query head drifted off the
    # verbatim copies: after 200 steps the top passage held x for 0.1% of validation
    # windows); the trainable head scores them: p(z|x)
    idx_BK, logp_z_BK = retrieve(q_BE, scale, index, k, doc_BJ,
                                 pooled_BE if opts.frozen_search else None)
    return index['tokens'][idx_BK], logp_z_BK

  def log_probs(variables, batch, train=False, rngs=None):
    """(log p(z|x) (B, K), log p(y_i | x, z, y<i) (B, K, Y), the generator's token
    distributions at the targets (B, K, Y, V), weights (B, Y), updated collections);
    K is 1 without retrieval."""
    tokens = batch['tokens']
    x_BP, y_BY = tokens[:, :p], tokens[:, p:]
    weights_BY = (y_BY != vocab.PAD).astype(jnp.float32)
    b = tokens.shape[0]
    params = {'params': variables['params']}
    if model.retrieval:
      index = build_index(variables)
      pass_BKR, logp_z_BK = passages(variables, index, x_BP, batch.get('doc'))
      extra = {'encoder': variables['encoder'], 'index': index}
    else:
      pass_BKR, logp_z_BK, extra = jnp.zeros((b, 1, 0), jnp.int32), jnp.zeros((b, 1)), {}
    kk, rr = pass_BKR.shape[1:]
    xy_BKL = jnp.broadcast_to(tokens[:, None, :-1], (b, kk, p + y - 1))
    seq_BKL = jnp.concatenate([pass_BKR, xy_BKL], axis=-1)
    # the aligned read: position j of x ; y predicts byte j + 1, which a verbatim passage
    # holds at j + 1 (its first P bytes were keyed like x); none at the passage's positions
    hint_BKL = jnp.concatenate([jnp.full_like(pass_BKR, vocab.PAD),
                                aligned_bytes(pass_BKR, jnp.arange(1, p + y))], axis=-1)
    logits = model.apply(params, seq_BKL.reshape(b * kk, -1), hint_BKL.reshape(b * kk, -1),
                         train=train, rngs=rngs)
    logits_BKLV = logits.reshape(b, kk, -1, logits.shape[-1])
    logp_BKYV = jax.nn.log_softmax(logits_BKLV[:, :, rr + p - 1:])
    logp_y_BKY = jnp.take_along_axis(
        logp_BKYV, jnp.broadcast_to(y_BY[:, None, :, None], (b, kk, y, 1)), axis=-1)[..., 0]
    return logp_z_BK, logp_y_BKY, logp_BKYV, weights_BY, extra

  def aligned_bytes(pass_BKR, idx_T):
    """(B, K, T): the passages' bytes at indices `idx_T`, <pad> outside the passage."""
    r = pass_BKR.shape[-1]
    got = jnp.take(pass_BKR, jnp.clip(idx_T, 0, max(r - 1, 0)), axis=-1) if r else (
        jnp.zeros(pass_BKR.shape[:2] + idx_T.shape, jnp.int32))
    return jnp.where((idx_T >= 0) & (idx_T < r), got, vocab.PAD)

  def loss(variables, batch, rng):
    logp_z, logp_y, logp_v, w, extra = log_probs(variables, batch, True, {'dropout': rng})
    nll_B = marginal_nll(logp_z, logp_y, w, opts.marginal)
    nw = jnp.maximum(w.sum(), 1.0)
    ce = nll_B.sum() / nw
    targets = batch['tokens'][:, p:]
    acc = ((token_mixture_argmax(logp_z, logp_v) == targets) * w).sum() / nw
    metrics = {'loss': ce, 'accuracy': acc}
    if model.retrieval:  # how peaked the retriever is: mean max_z p(z|x)
      metrics['p_top'] = jnp.mean(jnp.exp(jnp.max(logp_z, -1)))
    return ce, (metrics, extra)

  def token_mixture_argmax(logp_z_BK, logp_BKYV):
    """The argmax per target position of RAG-Token's mixture (the `accuracy` metric)."""
    return jnp.argmax(jax.nn.logsumexp(logp_z_BK[:, :, None, None] + logp_BKYV, axis=1), -1)

  def evaluate(variables, batch):
    logp_z, logp_y, logp_v, w, _ = log_probs(variables, batch)
    targets = batch['tokens'][:, p:]
    return {'nll': marginal_nll(logp_z, logp_y, w, opts.marginal),
            'correct': ((token_mixture_argmax(logp_z, logp_v) == targets) * w).sum(-1),
            'tokens': w.sum(-1)}

  def finalize_eval(sums, count):
    del count
    return lm.token_metrics(sums)

  def example_batch(batch_size):
    return {'tokens': jax.ShapeDtypeStruct((batch_size, length), jnp.int32)}

  def train_input(pidx, pcount):
    return Windows(stream, stream_doc, length, opts.window_stride, config.batch_size,
                   config.seed, pidx, pcount)

  def prompt_batch(prompts, num_samples):
    """{'prompt': (B, 1 + P')}: </s> (a document starts, as after </s> in the train
    stream) then the prompt ids, the same length for every row."""
    rows = [[vocab.EOS] + list(q) for q in prompts]
    if len({len(row) for row in rows}) > 1:
      raise ConfigError('RAG prompts in one batch must have the same length')
    del num_samples
    return {'prompt': np.asarray(rows, np.int32)}

  def sample(variables, batch, rng, *, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
             beam_size=1, row_ids=None):
    """Continues batch['prompt'] (B, P'): its last `prefix` tokens retrieve K passages,
    then RAG-Token's per-step mixture over the K passages' KV caches picks each byte."""
    if beam_size > 1:
      raise ConfigError('RAG samples without beam search')
    prompt = batch['prompt']
    b, pp = prompt.shape
    params = {'params': variables['params']}
    if model.retrieval:
      index = build_index(variables)
      pass_BKR, logp_z_BK = passages(variables, index, prompt[:, -p:])
    else:
      pass_BKR, logp_z_BK = jnp.zeros((b, 1, 0), jnp.int32), jnp.zeros((b, 1))
    kk, rr = pass_BKR.shape[1:]
    total = rr + pp + max_new_tokens
    if total > model.max_length:
      raise ConfigError(f'passage {rr} + prompt {pp} + max_new_tokens {max_new_tokens} = '
                        f'{total} exceeds the generator\'s max_length {model.max_length}')
    seq = jnp.concatenate([pass_BKR, jnp.broadcast_to(prompt[:, None], (b, kk, pp))], -1)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(
        (b * kk, total), jnp.int32), decode=True))['cache']
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    # prompt position m aligns with passage byte m - (P' - P) (x is the prompt's last P)
    hint = jnp.concatenate([jnp.full_like(pass_BKR, vocab.PAD), aligned_bytes(
        pass_BKR, jnp.arange(pp) + p - pp + 1)], -1)

    def run(tokens_NT, hint_NT, cache):
      logits, mutated = model.apply({**params, 'cache': cache}, tokens_NT, hint_NT,
                                    decode=True, mutable=['cache'])
      logp_BKV = jax.nn.log_softmax(logits[:, -1]).reshape(b, kk, -1)
      return token_mixture(logp_z_BK, logp_BKV), mutated['cache']

    def step(tokens_B1, carry):
      cache, n = carry  # n: the new token's index after the prompt
      hint_N1 = aligned_bytes(pass_BKR, p + n + 1 + jnp.zeros((1,), jnp.int32))
      logits, cache = run(jnp.repeat(tokens_B1, kk, axis=0), hint_N1.reshape(b * kk, 1),
                          cache)
      return logits, (cache, n + 1)

    first, cache = run(seq.reshape(b * kk, -1), hint.reshape(b * kk, -1), cache)
    cache = (cache, jnp.zeros((), jnp.int32))
    tokens = decoding.generate(step, cache, first, rng, max_new_tokens, eos_id=vocab.EOS,
                               pad_id=vocab.PAD, row_ids_B=row_ids, temperature=temperature,
                               top_k=top_k, top_p=top_p)
    return {'tokens': tokens}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch, sample=sample, prompt_batch=prompt_batch,
              continues_prompt=True, input=train_input)
