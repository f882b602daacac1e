"""RETRO: a retrieval-enhanced Transformer LM (Borgeaud et al. 2021, "Improving language
models by retrieving from trillions of tokens").

The input (length T = U * M) is cut into U chunks of M tokens. Each chunk is a query to a
database of (chunk, continuation) pairs of 2M tokens cut from the train text; the K nearest
entries by L2 distance between keys (a frozen network's mean-pooled states of the chunk;
the paper used frozen BERT) are the chunk's neighbours. A bidirectional encoder reads every
neighbour, each of its blocks cross-attending to the hidden states of the chunk that
retrieved it (taken at the first retrieval layer). Chunked cross-attention (CCA) layers
after the decoder blocks in `cca_layers` let the decoder read the encoded neighbours with
the paper's causal shift: the hidden states are shifted left by M - 1, so positions
u*M + M - 1 ... (u+1)*M + M - 2 (the last token of chunk u up to the second-to-last of chunk
u + 1) attend to the neighbours of chunk u; the first M - 1 positions attend to nothing.
No token sees retrieval keyed on tokens after it. `retrieval=False` is the same decoder
without the encoder and the CCA layers: the baseline of the comparison.

Differences from the paper: CCA sits after each chosen block's MLP (the paper puts it between
a block's attention and its MLP); CCA's relative positions are a learned logit bias per head
and distance between a query's place in its chunk group and a neighbour position (the
paper's are sinusoidal relative encodings), the neighbour encoder has none (it adds a
learned table over the 2M neighbour positions); and the key encoder is a frozen GPT run of
this codebase (`config.frozen.encoder`) instead of BERT.

The causal-LM task here owns retrieval: the database (the M-token chunk at every
`database_stride`-th token of the train stream, default M as in the paper, with its
continuation and document ids) and its keys are the non-parameter
collection 'index' of the train state, so the index persists in the run's checkpoints in
the workdir and is rebuilt (by the first train step, with the frozen encoder) only when a
fresh run has none. Training queries exclude database entries from the documents their
chunk and its continuation come from (the paper's filter), so the model cannot copy its own
future. Exact k-NN: one matmul and top-k over the keys. The train chunks' neighbours are
searched once, when the index is built (the paper precomputes the training set's too), and
kept in the index ('neighbours'): the train step gathers them by the batch's chunk numbers
instead of searching (a search of 64 chunks over 420 K keys took 0.4-0.6 s at load 10,
about half the decoder's whole step); evaluation and sampling search.

Data: the pydoc help() topics minus `held_out` (the config passes the validation split of
train/datasets/pydoc_retro.py, documents with near neighbours in the rest); see
configs/retro_pydoc.py for the split's numbers and the measured effect of retrieval.

Dimension key: B batch, T length, D width, V vocabulary, U chunks, M chunk length,
K neighbours, R neighbour length (2M), S K*R, N database entries, E key width, Q queries.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch import vocab
from arch.layers.attention import Attention
from arch.layers.embed import LearnedPositions, norm, token_embed
from arch.layers.transformer import Block
from arch.sequence import decoding, lm
from arch.task import ConfigError, Task, parse_options

Dtype = Any

# ------------------------------------------------------------------------------- data


def byte_ids(text: str) -> list[int]:
  """The byte tokenizer's ids (train/text.py's 'byte': byte + the special ids)."""
  return [b + vocab.NUM_SPECIAL for b in text.encode('utf-8')]


def token_stream(docs: dict, names) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, doc): the named documents' byte ids, each followed by </s>, concatenated,
  and the index (into `names`) of the document each token belongs to."""
  ids, doc = [], []
  for i, name in enumerate(names):
    row = byte_ids(docs[name]) + [vocab.EOS]
    ids.extend(row)
    doc.extend([i] * len(row))
  return np.asarray(ids, np.int32), np.asarray(doc, np.int32)


def database(tokens: np.ndarray, doc: np.ndarray, chunk: int, stride: int = 0):
  """Entries of the database: the chunk starting at every `stride`-th token of the stream
  (default `chunk`: the paper's disjoint chunks) followed by its continuation,
  {'tokens': (N, 2M) (<pad> past the end), 'doc': (N, 2) the documents of the entry's
  first and last token}."""
  stride = stride or chunk
  n = -(-(len(tokens) - chunk + 1) // stride)
  padded = np.full((len(tokens) + 2 * chunk,), vocab.PAD, np.int32)
  padded[:len(tokens)] = tokens
  docs = np.concatenate([doc, np.full((2 * chunk,), doc[-1], np.int32)])
  starts = np.arange(n) * stride
  rows = starts[:, None] + np.arange(2 * chunk)
  ends = np.minimum(starts + 2 * chunk - 1, len(tokens) - 1)
  return {'tokens': padded[rows], 'doc': np.stack([docs[starts], docs[ends]], 1)}


def nearest(query_QE, keys_NE, k: int, query_doc_QJ=None, key_doc_NJ=None):
  """Indices (Q, k) of the k keys nearest each query in L2 distance, nearest first; keys
  sharing a document id with the query (any of the J ids on either side, ids < 0 match
  nothing) are excluded."""
  d_QN = (jnp.sum(query_QE ** 2, -1)[:, None] - 2.0 * query_QE @ keys_NE.T
          + jnp.sum(keys_NE ** 2, -1)[None, :])
  if query_doc_QJ is not None:
    same = jnp.any((query_doc_QJ[:, None, :, None] == key_doc_NJ[None, :, None, :])
                   & (query_doc_QJ[:, None, :, None] >= 0), axis=(2, 3))
    d_QN = jnp.where(same, jnp.inf, d_QN)
  return jax.lax.top_k(-d_QN, k)[1]


# ------------------------------------------------------------------------------ model


def chunked_cross_attention(attend, x_BTD, enc_BUSD, chunk: int):
  """RETRO's CCA: positions shifted left by M - 1 are grouped into chunks; chunk u's group
  (the last token of chunk u to the second-to-last of chunk u + 1) attends to enc[:, u].
  Returns (B, T, D) with zeros at the first M - 1 positions."""
  b, t, d = x_BTD.shape
  u = t // chunk
  shift = chunk - 1
  h_BTD = jnp.pad(x_BTD[:, shift:], ((0, 0), (0, shift), (0, 0)))
  h_QMD = h_BTD.reshape(b * u, chunk, d)
  y_QMD = attend(h_QMD, enc_BUSD.reshape(b * u, -1, enc_BUSD.shape[-1]))
  y_BTD = y_QMD.reshape(b, t, -1)
  return jnp.pad(y_BTD[:, :t - shift], ((0, 0), (shift, 0), (0, 0)))


def relative_bias(table, chunk: int, k: int):
  """CCA's logit bias (1, heads, M, K*R) from a table (heads, 3M - 1) over the distances
  r - i in [1 - M, 2M - 1] between query i of a chunk's group and position r of each
  neighbour."""
  dist_MR = np.arange(2 * chunk)[None, :] - np.arange(chunk)[:, None] + chunk - 1
  return jnp.tile(table[:, dist_MR], (1, 1, k))[None]


def aligned_init(chunk: int, value: float):
  """The table's init: `value` at distance M (query i reads neighbour position M + i, where
  a neighbour's continuation lines up with the chunk being predicted), 0 elsewhere."""
  def init(key, shape, dtype):
    del key
    return jnp.zeros(shape, dtype).at[:, 2 * chunk - 1].set(value)
  return init


class Model(nn.Module):
  """RETRO: tokens (B, T) and neighbours (B, U, K, 2M) -> next-token logits (B, T, V)."""
  vocab_size: int = 260
  num_layers: int = 4
  num_heads: int = 4
  embed_dim: int = 128
  mlp_dim: Optional[int] = None  # default 4 * embed_dim
  max_length: int = 128
  chunk_length: int = 32  # M (the paper: 64)
  num_neighbours: int = 2  # K (the paper: 2)
  encoder_layers: int = 2
  cca_layers: tuple = (1, 3)  # decoder blocks followed by CCA (the paper: 6, 9, 12, ...)
  retrieval: bool = True  # False: the same decoder without encoder and CCA (the baseline)
  # CCA logits get a learned per-head bias by the distance r - i from a query (i-th of its
  # group) to a neighbour position r, as the paper's relative positions do
  cca_position_bias: bool = True
  # its initial value at distance M (the neighbour's continuation lined up with the chunk
  # being predicted: query i reads position M + i); 0: no prior
  cca_aligned_init: float = 0.0
  dropout_rate: float = 0.0
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _block(self, name, cross=False):
    return Block(num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.embed_dim,
                 pre_norm=True, norm_eps=self.norm_eps, activation='gelu_tanh',
                 cross_attention=cross, dropout_rate=self.dropout_rate,
                 attention_dropout_rate=self.dropout_rate, init_stddev=0.02,
                 out_init_stddev=0.02 / np.sqrt(2 * self.num_layers), dtype=self.dtype,
                 param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, tokens_BT, neighbours_BUKR=None, *, train: bool = False):
    b, t = tokens_BT.shape
    m = self.chunk_length
    if t > self.max_length:
      raise ValueError(f'sequence length {t} exceeds max_length {self.max_length}')
    if self.retrieval and (neighbours_BUKR is None or t % m):
      raise ValueError(f'RETRO needs neighbours and a length divisible by {m}, got {t}')
    embed = token_embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='wte')
    pos_BT = jnp.broadcast_to(jnp.arange(t), (b, t))
    x_BTD = embed(tokens_BT) + LearnedPositions(self.max_length, self.embed_dim,
                                                param_dtype=self.param_dtype,
                                                name='wpe')(pos_BT)
    x_BTD = nn.Dropout(self.dropout_rate)(x_BTD.astype(self.dtype), deterministic=not train)
    enc_BUSD = None
    for i in range(self.num_layers):
      x_BTD = self._block(f'h{i}')(x_BTD, causal=True, deterministic=not train)
      if self.retrieval and i in self.cca_layers:
        if enc_BUSD is None:  # the encoder reads the chunks' states at the first CCA layer
          enc_BUSD = self.encode(embed, neighbours_BUKR, x_BTD, train)
        cca = Attention(self.num_heads, init_stddev=0.02,
                        out_init_stddev=0.02 / np.sqrt(2 * self.num_layers),
                        dtype=self.dtype, param_dtype=self.param_dtype, name=f'cca{i}')
        h_BTD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                     name=f'cca{i}_norm')(x_BTD)
        bias = None
        if self.cca_position_bias:
          table = self.param(f'cca{i}_rel', aligned_init(m, self.cca_aligned_init),
                             (self.num_heads, 3 * m - 1), self.param_dtype)
          bias = relative_bias(jnp.asarray(table, self.dtype), m, self.num_neighbours)
        y_BTD = chunked_cross_attention(lambda q, kv: cca(q, kv, bias=bias), h_BTD, enc_BUSD,
                                        m)
        x_BTD = x_BTD + nn.Dropout(self.dropout_rate)(y_BTD, deterministic=not train)
    x_BTD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='ln_f')(x_BTD)
    return embed.attend(x_BTD).astype(jnp.float32)

  def encode(self, embed, neighbours_BUKR, x_BTD, train):
    """The neighbour encoder: each neighbour bidirectionally, cross-attending to the hidden
    states of the chunk that retrieved it. Returns (B, U, K*R, D)."""
    b, u, k, r = neighbours_BUKR.shape
    m = self.chunk_length
    n_QR = neighbours_BUKR.reshape(b * u * k, r)
    e_QRD = embed(n_QR) + LearnedPositions(r, self.embed_dim, param_dtype=self.param_dtype,
                                           name='enc_wpe')(jnp.arange(r)[None])
    ctx_BUMD = x_BTD.reshape(b, u, m, -1)
    ctx_QMD = jnp.repeat(ctx_BUMD, k, axis=1).reshape(b * u * k, m, -1)
    for j in range(self.encoder_layers):
      e_QRD = self._block(f'enc{j}', cross=True)(e_QRD, ctx_QMD, deterministic=not train)
    e_QRD = norm('layer', self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='enc_ln')(e_QRD)
    return e_QRD.reshape(b, u, k * r, -1)


TINY = dict(num_layers=2, num_heads=2, embed_dim=32, max_length=32, chunk_length=16,
            num_neighbours=2, encoder_layers=1, cca_layers=(1,))


# ------------------------------------------------------------------------------- task


@dataclasses.dataclass(frozen=True)
class Options:
  """RETRO's task options."""
  # pydoc topics kept out of the database and the train windows (the validation split)
  held_out: tuple = ()
  index_batch: int = 1024  # database chunks the frozen encoder embeds at once
  # database entries start every this many tokens (0: the chunk length, the paper's
  # disjoint chunks); smaller strides hold copies of a passage at more alignments
  database_stride: int = 0


def corpus(held_out=()):
  """(docs, train names): the pydoc topics and the names not `held_out`."""
  from pydoc_data import topics
  docs = dict(topics.topics)
  missing = set(held_out) - set(docs)
  if missing:
    raise ConfigError(f'held_out names no pydoc topic: {", ".join(sorted(missing))}')
  return docs, [n for n in sorted(docs) if n not in set(held_out)]


class ShuffledWindows:
  """Windows of `length` tokens starting every `stride` tokens of a token stream, in a
  seeded permutation per epoch: `next_starts()` is this process's rows of the next global
  batch (rows offset + [0, local) of it); the state is the number of global batches drawn,
  so a resumed run continues exactly. Subclasses make a batch from the starts (RETRO's
  `WindowInput`, RAG's `arch.sequence.rag.Windows`)."""

  def __init__(self, num_tokens, length, stride, batch_size, seed, pidx, pcount):
    self.length = length
    self.starts = np.arange(0, num_tokens - length + 1, stride)
    self.batch, self.seed, self.local = batch_size, seed, batch_size // pcount
    self.offset = pidx * self.local
    self.drawn = 0

  def next_starts(self) -> np.ndarray:
    g = self.drawn * self.batch + self.offset + np.arange(self.local)
    n = len(self.starts)
    perms = {e: np.random.default_rng([self.seed, e]).permutation(n) for e in set(g // n)}
    self.drawn += 1
    return self.starts[[perms[e][p] for e, p in zip(g // n, g % n)]]

  def __iter__(self):
    return self

  def get_state(self):
    return {'drawn': self.drawn}

  def set_state(self, state):
    self.drawn = int(state['drawn'])


class WindowInput(ShuffledWindows):
  """The train input: windows of U*M + 1 tokens starting at chunk-aligned offsets of the
  train stream, shuffled each epoch (seeded), with each chunk's document ids and its
  number in the stream (its start / M) {'tokens': (B, T+1), 'doc': (B, U, 2), 'chunk':
  (B, U)}; the state is the number of global batches drawn."""

  def __init__(self, tokens, doc, chunk, length, batch_size, seed, pidx, pcount):
    super().__init__(len(tokens), length, chunk, batch_size, seed, pidx, pcount)
    self.tokens, self.doc, self.chunk = tokens, doc, chunk

  def __next__(self):
    starts = self.next_starts()
    rows = starts[:, None] + np.arange(self.length)
    u = (self.length - 1) // self.chunk
    c0 = starts[:, None] + np.arange(u) * self.chunk
    last = np.minimum(c0 + 2 * self.chunk - 1, len(self.tokens) - 1)
    return {'tokens': self.tokens[rows], 'doc': np.stack([self.doc[c0], self.doc[last]], -1),
            'chunk': (c0 // self.chunk).astype(np.int32)}


def frozen_key_fn(config):
  """keys(encoder_variables, chunks_QM) -> (Q, E): the frozen encoder's mean over positions
  of its final-norm states ('ln_f') of each chunk."""
  entry = (config.get('frozen') or {}).get('encoder')
  if not entry or not entry.get('config'):
    raise ConfigError("RETRO needs config.frozen.encoder = dict(spec='configs/X.py', "
                      "workdir=''): the frozen network whose states key the database")
  enc = arch.model_from_config(entry.config)

  def keys(variables, chunks_QM):
    _, state = enc.apply(variables, chunks_QM, capture_intermediates=lambda mdl, _: (
        mdl.name == 'ln_f'), mutable=['intermediates'])
    return jnp.mean(state['intermediates']['ln_f']['__call__'][0], axis=1)

  return enc, keys


def make(config) -> Task:
  opts = parse_options(Options, config)
  vocab.check_model(config)
  model = arch.model_from_config(config)
  length = int(config.data.get('pack') or 0)
  m, k = model.chunk_length, model.num_neighbours
  if length < 2 or (length - 1) % m:
    raise ConfigError(f'RETRO needs config.data.pack = U * chunk_length + 1, got {length}')
  docs, train_names = corpus(opts.held_out)
  stream, stream_doc = token_stream(docs, train_names)
  db = database(stream, stream_doc, m, opts.database_stride)
  n = len(db['tokens'])
  stride = opts.database_stride or m
  # Train chunks (the M tokens at every multiple of M of the stream) are database entries
  # when the stride divides M: their neighbours are searched once, with the index (the
  # paper precomputes the training set's neighbours too), and the train step gathers them.
  chunks = (len(stream) - m) // m + 1 if m % stride == 0 else 0
  if model.retrieval:
    encoder, key_fn = frozen_key_fn(config)

  def init(rng, batch):
    params = model.init({'params': rng, 'dropout': rng}, *_model_inputs(
        jnp.zeros((batch['tokens'].shape[0], length - 1), jnp.int32)), train=False)
    if not model.retrieval:
      return params
    enc_vars = encoder.init(rng, jnp.zeros((1, m), jnp.int32))
    e = jax.eval_shape(lambda: key_fn(enc_vars, jnp.zeros((1, m), jnp.int32))).shape[-1]
    index = {'keys': jnp.zeros((n, e), jnp.float32), 'tokens': jnp.asarray(db['tokens']),
             'doc': jnp.asarray(db['doc']), 'built': jnp.zeros((), jnp.int32),
             'neighbours': jnp.zeros((chunks, k), jnp.int32)}
    return {**params, 'encoder': enc_vars, 'index': index}

  def _model_inputs(inputs_BT):
    if not model.retrieval:
      return (inputs_BT,)
    b, t = inputs_BT.shape
    return inputs_BT, jnp.zeros((b, t // m, k, 2 * m), jnp.int32)

  def build_index(variables):
    """The index with its keys and the train chunks' neighbours: built by the frozen
    encoder when it has none yet."""
    index = variables['index']

    def build(index):
      pad = -n % opts.index_batch
      blocks = jnp.pad(index['tokens'][:, :m], ((0, pad), (0, 0)))
      keys = jax.lax.map(lambda c: key_fn(variables['encoder'], c),
                         blocks.reshape(-1, opts.index_batch, m))
      keys = keys.reshape(-1, keys.shape[-1])[:n]
      index = dict(index, keys=keys, built=jnp.ones((), jnp.int32))
      if not chunks:
        return index
      # train chunk c is entry c * M / stride; its own documents are left out as in training
      q = 128  # queries per search: a (q, N) distance matrix at a time
      entry = np.arange(chunks + (-chunks % q)) % chunks * (m // stride)
      nbrs = jax.lax.map(lambda e: nearest(keys[e], keys, k, index['doc'][e], index['doc']),
                         jnp.asarray(entry.reshape(-1, q)))
      return dict(index, neighbours=nbrs.reshape(-1, k)[:chunks].astype(jnp.int32))

    return jax.lax.cond(index['built'] > 0, lambda i: i, build, index)

  def retrieve(variables, index, inputs_BT, doc_BUJ=None):
    """Neighbour tokens (B, U, K, 2M) of every chunk of the inputs."""
    b, t = inputs_BT.shape
    u = t // m
    q_QE = key_fn(variables['encoder'], inputs_BT.reshape(b * u, m))
    q_doc = None if doc_BUJ is None else doc_BUJ.reshape(b * u, -1)
    idx_QK = nearest(q_QE, index['keys'], k, q_doc, index['doc'])
    return index['tokens'][idx_QK].reshape(b, u, k, 2 * m)

  def logits_of(variables, inputs_BT, doc_BUJ=None, train=False, rngs=None, chunk_BU=None):
    """Logits, and the non-param variables; the neighbours come from the precomputed table
    when the batch names its train chunks (`chunk_BU`), else from a search."""
    params = {'params': variables['params']}
    if not model.retrieval:
      return model.apply(params, inputs_BT, train=train, rngs=rngs), {}
    index = build_index(variables)
    if chunk_BU is not None and chunks:
      b, u = chunk_BU.shape
      neighbours = index['tokens'][index['neighbours'][chunk_BU]].reshape(b, u, k, 2 * m)
    else:
      neighbours = retrieve(variables, index, inputs_BT, doc_BUJ)
    return (model.apply(params, inputs_BT, neighbours, train=train, rngs=rngs),
            {'encoder': variables['encoder'], 'index': index})

  def split(batch):
    tokens = batch['tokens']
    return tokens[:, :-1], tokens[:, 1:], (tokens[:, 1:] != vocab.PAD).astype(jnp.float32)

  def loss(variables, batch, rng):
    inputs, targets, weights = split(batch)
    logits, extra = logits_of(variables, inputs, batch.get('doc'), True, {'dropout': rng},
                              batch.get('chunk'))
    nw = jnp.maximum(weights.sum(), 1.0)
    ce = (optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights).sum() / nw
    acc = ((logits.argmax(-1) == targets) * weights).sum() / nw
    return ce, ({'loss': ce, 'accuracy': acc}, extra)

  def evaluate(variables, batch):
    inputs, targets, weights = split(batch)
    logits, _ = logits_of(variables, inputs, batch.get('doc'))
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return {'nll': (nll * weights).sum(-1),
            'correct': ((logits.argmax(-1) == targets) * weights).sum(-1),
            'tokens': weights.sum(-1)}

  def finalize_eval(sums, count):
    del count
    return lm.token_metrics(sums)

  def example_batch(batch_size):
    out = {'tokens': jax.ShapeDtypeStruct((batch_size, length), jnp.int32)}
    return out

  def train_input(pidx, pcount):
    return WindowInput(stream, stream_doc, m, length, config.batch_size, config.seed, pidx,
                       pcount)

  def prompt_batch(prompts, num_samples):
    rows = [[vocab.BOS] + list(p) for p in prompts]
    if len({len(r) for r in rows}) > 1:
      raise ConfigError('RETRO prompts in one batch must have the same length')
    del num_samples
    return {'prompt': np.asarray(rows, np.int32)}

  def sample(variables, batch, rng, *, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
             beam_size=1, row_ids=None):
    """Continues batch['prompt'] (B, P). No KV cache: each new token re-reads the window
    of the last `max_length` tokens (padded to whole chunks) with fresh retrieval for its
    complete chunks, so a chunk's neighbours change the logits only once it is complete."""
    if beam_size > 1:
      raise ConfigError('RETRO samples without beam search')
    prompt = batch['prompt']
    b, p = prompt.shape
    window = (length - 1)
    total = p + max_new_tokens
    buf = jnp.full((b, total + window), vocab.PAD, jnp.int32).at[:, :p].set(prompt)

    def logits_at(buf, pos):
      """Logits for the token after position pos - 1, from the window ending there."""
      start = jnp.maximum(pos - window, 0)
      win = jax.lax.dynamic_slice_in_dim(buf, start, window, axis=1)
      logits, _ = logits_of(variables, win)
      return jnp.take(logits, pos - 1 - start, axis=1)

    def step(tokens, cache):
      buf, pos = cache
      buf = jax.lax.dynamic_update_slice_in_dim(buf, tokens, pos, axis=1)
      return logits_at(buf, pos + 1), (buf, pos + 1)

    first = logits_at(buf, jnp.asarray(p))
    tokens = decoding.generate(step, (buf, jnp.asarray(p)), first, rng, max_new_tokens,
                               eos_id=vocab.EOS, pad_id=vocab.PAD, row_ids_B=row_ids,
                               temperature=temperature, top_k=top_k, top_p=top_p)
    return {'tokens': tokens}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch, sample=sample, prompt_batch=prompt_batch,
              continues_prompt=True, input=train_input)
