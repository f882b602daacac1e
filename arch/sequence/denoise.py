"""BART's denoising objective (Lewis et al. 2020): reconstruct a text window from a
corrupted copy, over any encoder-decoder network (`encode`/`decode`, e.g. BART).

Corruption runs on device inside `loss` and `evaluate`, with static shapes:
  text infilling  span lengths ~ Poisson(`poisson_lambda`) are drawn until they cover
                  `mask_ratio` of the window's real tokens (the last one cut to fit); each
                  span becomes ONE <mask> in the source, a 0-length span inserts a <mask>;
                  spans sit in uniformly random gaps between the kept tokens, never overlap;
  sentence permutation (`permute_sentences`, off by default) shuffles the sentences, which
                  end at the `sentence_end_ids` tokens (byte tokenizer default: </s> and '.'),
                  before infilling, as BART does.
The source is re-packed left-aligned and padded with <pad> to `src_length` (default: the
window length; tokens past it are dropped, which Poisson(3) spans at 30% never need).
Target = the original window; decoder input = the target shifted right behind <s>.

Config: `task_kwargs` (`Options`): mask_ratio (0.3), poisson_lambda (3.0), permute_sentences
(False), sentence_end_ids (), src_length (0: config.data.pack). Batches: {'tokens': (B, L)}
windows of the packed text (train/text.py), L = config.data.pack. Loss: cross-entropy
over the target's non-<pad> tokens. Train metrics `loss`, `token_accuracy`,
`masked_token_accuracy` (on the tokens the source lacks), `masked_fraction` (and, for a
network with Mixture-of-Experts layers, `aux_loss`, added to the objective, and the
layers' diagnostics: arch/layers/moe.py); eval reports
the split's per-token `loss`, `token_accuracy`, `masked_token_accuracy`,
`unmasked_token_accuracy` (on the tokens the source keeps: copying), `perplexity`.
Sampler (`python -m train.sample`): each passage (a prompt, or eval window j) is corrupted
by the training noise unless it holds <mask> already (the text '<mask>' with the byte
tokenizer); the output is the corrupted source and the decoder's reconstruction (greedy by
default; sampling and beam search as for seq2seq).
Noise is keyed by each window's content, so it does not depend on the batch layout;
`evaluate` uses a fixed key.

Dimension key: B batch, L window length, S source length, K spans (<= L).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch import vocab
from arch.layers import moe
from arch.sequence import lm, seq2seq
from arch.task import ConfigError, Task, parse_options

BYTE_FULL_STOP = ord('.') + vocab.NUM_SPECIAL
EVAL_SEED = 0


def _exclusive_cumsum(x):
  return jnp.cumsum(x) - x


def _infill_one(rng, tokens_L, mask_ratio, poisson_lambda, src_length):
  """Text infilling of one left-aligned window (see the module docstring).

  Returns the source (S,), the span lengths (K,) in source order (-1: unused), and the
  window positions (L,) that the source lacks.
  """
  l = tokens_L.shape[0]
  k = l  # static bound on the number of spans (the budget is met far sooner)
  valid_L = tokens_L != vocab.PAD
  n = valid_L.sum()
  budget = jnp.ceil(mask_ratio * n).astype(jnp.int32)
  len_rng, gap_rng = jax.random.split(rng)
  lengths_K = jax.random.poisson(len_rng, poisson_lambda, (k,)).astype(jnp.int32)
  before_K = _exclusive_cumsum(lengths_K)
  used_K = before_K < budget  # draw spans until the budget is covered, cut the last
  lengths_K = jnp.where(used_K, jnp.minimum(lengths_K, budget - before_K), 0)
  kept = n - lengths_K.sum()
  # Each span goes into one of the kept + 1 gaps between kept tokens (gap g: before kept
  # token g); sorted by gap, span r then starts at g_r + (tokens of the spans before it).
  gap_K = jnp.minimum((jax.random.uniform(gap_rng, (k,)) * (kept + 1)).astype(jnp.int32), kept)
  gap_K = jnp.where(used_K, gap_K, 2 * l + 1)
  order_K = jnp.argsort(gap_K, stable=True)
  gap_K, lengths_K, used_K = gap_K[order_K], lengths_K[order_K], used_K[order_K]
  start_K = gap_K + _exclusive_cumsum(lengths_K)
  drop = l + 1
  edges = (jnp.zeros((l + 1,), jnp.int32)
           .at[jnp.where(used_K, start_K, drop)].add(1, mode='drop')
           .at[jnp.where(used_K, start_K + lengths_K, drop)].add(-1, mode='drop'))
  masked_L = jnp.cumsum(edges)[:l] > 0
  keep_L = valid_L & ~masked_L
  rank_L = jnp.cumsum(keep_L) - 1  # index among kept tokens
  # Kept token u lands after the u kept tokens before it and one <mask> per span in gaps <= u.
  dst_L = rank_L + jnp.searchsorted(gap_K, rank_L, side='right')
  src_S = jnp.full((src_length,), vocab.PAD, tokens_L.dtype)
  src_S = src_S.at[jnp.where(keep_L, dst_L, src_length)].set(tokens_L, mode='drop')
  mask_dst_K = jnp.where(used_K, gap_K + jnp.arange(k), src_length)
  src_S = src_S.at[mask_dst_K].set(vocab.MASK, mode='drop')
  return src_S, jnp.where(used_K, lengths_K, -1), masked_L


def _permute_one(rng, tokens_L, end_ids):
  """Shuffles the sentences (each ends at an `end_ids` token) of a left-aligned window;
  returns the permuted window and the source position of each of its tokens."""
  ends_L = jnp.isin(tokens_L, jnp.asarray(end_ids, tokens_L.dtype))
  sentence_L = jnp.cumsum(ends_L) - ends_L  # the end token belongs to its sentence
  key_L = jax.random.uniform(rng, tokens_L.shape)[sentence_L]
  key_L = jnp.where(tokens_L != vocab.PAD, key_L, 2.0)  # padding stays last
  order_L = jnp.argsort(key_L, stable=True)  # stable: a sentence keeps its token order
  return tokens_L[order_L], order_L


def row_keys(rng, tokens_BL):
  """One key per window, from its content: noise independent of the batch layout."""
  weights = jnp.arange(1, tokens_BL.shape[1] + 1, dtype=jnp.uint32)
  digest_B = (tokens_BL.astype(jnp.uint32) * weights * jnp.uint32(2654435761)).sum(-1)
  return jax.vmap(lambda d: jax.random.fold_in(rng, d))(digest_B)


def corrupt(rng, tokens_BL, *, mask_ratio=0.3, poisson_lambda=3.0, src_length=None,
            permute_sentences=False, sentence_end_ids=(vocab.EOS, BYTE_FULL_STOP)):
  """BART's noise on a batch of left-aligned windows (B, L), jit-able.

  Returns the source (B, S) and {'span_lengths': (B, K) in source order, -1 unused;
  'masked': (B, L) window positions the source lacks}.
  """
  src_length = src_length or tokens_BL.shape[1]
  keys_B = row_keys(rng, tokens_BL)
  perm_keys_B, infill_keys_B = jax.vmap(lambda r: tuple(jax.random.split(r)))(keys_B)
  windows_BL = tokens_BL
  if permute_sentences:
    windows_BL, order_BL = jax.vmap(lambda r, t: _permute_one(r, t, sentence_end_ids))(
        perm_keys_B, tokens_BL)
  src_BS, spans_BK, masked_BL = jax.vmap(
      lambda r, t: _infill_one(r, t, mask_ratio, poisson_lambda, src_length))(
          infill_keys_B, windows_BL)
  if permute_sentences:  # masked positions back in the original window's order
    masked_BL = jax.vmap(lambda m, o: jnp.zeros_like(m).at[o].set(m))(masked_BL, order_BL)
  return src_BS, {'span_lengths': spans_BK, 'masked': masked_BL}


def shift_right(tokens_BT):
  """Decoder input: <s> then the target without its last token."""
  bos = jnp.full((tokens_BT.shape[0], 1), vocab.BOS, tokens_BT.dtype)
  return jnp.concatenate([bos, tokens_BT[:, :-1]], axis=1)


def mask_text_ids(ids, byte_level: bool):
  """A prompt's ids with each literal '<mask>' (its byte ids, for the byte tokenizer)
  replaced by the <mask> id."""
  ids = list(ids)
  if not byte_level:
    return ids
  pattern = [b + vocab.NUM_SPECIAL for b in b'<mask>']
  out, i = [], 0
  while i < len(ids):
    if ids[i:i + len(pattern)] == pattern:
      out.append(vocab.MASK)
      i += len(pattern)
    else:
      out.append(ids[i])
      i += 1
  return out


@dataclasses.dataclass(frozen=True)
class Options:
  """BART denoising's task_kwargs."""
  mask_ratio: float = 0.3  # of the window's real tokens, covered by infilled spans
  poisson_lambda: float = 3.0  # the span lengths' mean
  permute_sentences: bool = False
  sentence_end_ids: tuple = ()  # () with the byte tokenizer: </s> and '.'
  src_length: int = 0  # the source's padded length; 0: config.data.pack


def make(config) -> Task:
  opts = parse_options(Options, config)
  vocab.check_model(config)
  length = int(config.data.get('pack') or 0)
  if length < 2:
    raise ConfigError(f'denoising needs config.data.pack >= 2 (the window length), got {length}')
  mask_ratio = float(opts.mask_ratio)
  lam = float(opts.poisson_lambda)
  src_length = int(opts.src_length or length)
  permute = bool(opts.permute_sentences)
  end_ids = tuple(int(i) for i in opts.sentence_end_ids or ())
  if not 0.0 <= mask_ratio < 1.0:
    raise ConfigError(f'task_kwargs.mask_ratio={mask_ratio}: must be in [0, 1)')
  if lam <= 0:
    raise ConfigError(f'task_kwargs.poisson_lambda={lam}: must be > 0')
  if permute and not end_ids:
    if config.data.get('tokenizer') != 'byte':
      raise ConfigError('task_kwargs.permute_sentences with a non-byte tokenizer needs '
                        'task_kwargs.sentence_end_ids (the ids that end a sentence)')
    end_ids = (vocab.EOS, BYTE_FULL_STOP)
  model = arch.model_from_config(config)
  if not (hasattr(model, 'encode') and hasattr(model, 'decode')):
    raise ConfigError(f'denoising needs an encoder-decoder (encode/decode methods); '
                      f'{config.model_name!r} has none')
  max_length = getattr(model, 'max_length', None)
  if max_length is not None and max(length, src_length) > max_length:
    raise ConfigError(f'config.model.max_length={max_length} is shorter than the window '
                      f'(data.pack={length}) or source (task_kwargs.src_length={src_length})')
  noise = dict(mask_ratio=mask_ratio, poisson_lambda=lam, src_length=src_length,
               permute_sentences=permute, sentence_end_ids=end_ids)

  def forward(variables, batch, rng, train, dropout_rng=None):
    tokens = batch['tokens']
    src, info = corrupt(rng, tokens, **noise)
    rngs = {'dropout': dropout_rng} if dropout_rng is not None else None
    logits, aux, aux_metrics = moe.apply(model, variables, src, shift_right(tokens),
                                         train=train, rngs=rngs)
    weights = (tokens != vocab.PAD).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens) * weights
    correct = (logits.argmax(-1) == tokens) * weights
    return nll, correct, weights, info['masked'] * weights, aux, aux_metrics

  def init(rng, batch):
    tokens = batch['tokens']
    src = jnp.zeros((tokens.shape[0], src_length), tokens.dtype)
    return moe.without_sown(model.init({'params': rng, 'dropout': rng}, src,
                                       shift_right(tokens), train=False))

  def loss(variables, batch, rng):
    noise_rng, dropout_rng = jax.random.split(rng)
    nll, correct, weights, masked, aux, aux_metrics = forward(variables, batch, noise_rng,
                                                              True, dropout_rng)
    n = jnp.maximum(weights.sum(), 1.0)
    ce = nll.sum() / n
    metrics = {'loss': ce, 'token_accuracy': correct.sum() / n,
               'masked_token_accuracy': (correct * masked).sum() / jnp.maximum(masked.sum(), 1.0),
               'masked_fraction': masked.sum() / n}
    if aux_metrics:  # Mixture-of-Experts layers (the Switch Transformer)
      metrics.update(aux_metrics, aux_loss=aux)
    return ce + aux, (metrics, {})

  def evaluate(variables, batch):
    nll, correct, weights, masked, _, _ = forward(variables, batch, jax.random.key(EVAL_SEED),
                                                  False)
    return {'nll': nll.sum(-1), 'correct': correct.sum(-1), 'tokens': weights.sum(-1),
            'masked_correct': (correct * masked).sum(-1), 'masked': masked.sum(-1)}

  def finalize_eval(sums, count):
    del count
    kept = float(sums['tokens']) - float(sums['masked'])
    return {**lm.token_metrics(sums, 'token_accuracy'),
            'masked_token_accuracy':
                float(sums['masked_correct']) / max(float(sums['masked']), 1.0),
            'unmasked_token_accuracy':
                (float(sums['correct']) - float(sums['masked_correct'])) / max(kept, 1.0)}

  def example_batch(batch_size):
    return {'tokens': jax.ShapeDtypeStruct((batch_size, length), jnp.int32)}

  byte_level = config.data.get('tokenizer') == 'byte'

  def prompt_batch(prompts, num_samples, examples=None):
    """{'tokens': (B, L)}: each sample's passage, the prompt's ids (a literal '<mask>' in
    the text becomes the <mask> id), or with an empty prompt eval window j, <pad>-padded
    and cut to the window length L."""
    rows = np.full((num_samples, length), vocab.PAD, np.int32)
    for j, ids in enumerate(prompts):
      ids = mask_text_ids(ids, byte_level)[:length]
      if not ids and examples is not None:
        ids = [int(i) for i in examples['tokens'][j] if i != vocab.PAD][:length]
      if not ids:
        raise ConfigError('denoising samples need a passage: --prompt TEXT (text to '
                          'corrupt, or text with <mask> where some is missing)')
      rows[j, :len(ids)] = ids
    return {'tokens': rows}

  def sample(variables, batch, rng, *, max_new_tokens=0, temperature=0.0, top_k=0,
             top_p=1.0, beam_size=1, length_penalty=0.0, row_ids=None):
    """The source and its reconstruction: {'source': (B, S) the corrupted passage (a
    passage that holds a <mask> already is the source as it is, else it gets the training
    noise, keyed by the row id where given), 'tokens': (B, N) the decoder's output, N = max_new_tokens cut to the window
    length L (0: L)}."""
    tokens = batch['tokens']
    if row_ids is None:
      noised, _ = corrupt(rng, tokens, **noise)
    else:  # each sample its own noise, from its row id: samples of one passage differ
      noised = jax.vmap(lambda i, t: corrupt(jax.random.fold_in(rng, i), t[None],
                                             **noise)[0][0])(row_ids, tokens)
    given = jnp.pad(tokens, ((0, 0), (0, max(src_length - length, 0))))[:, :src_length]
    src = jnp.where((tokens == vocab.MASK).any(-1, keepdims=True), given, noised)
    n = min(max_new_tokens or length, length)
    out = seq2seq.decode_source(model, variables, src, rng, max_new_tokens=n,
                                row_ids=row_ids, temperature=temperature, top_k=top_k,
                                top_p=top_p, beam_size=beam_size, length_penalty=length_penalty)
    return {'tokens': out, 'source': src}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch, sample=sample, prompt_batch=prompt_batch,
              prompt_examples=True)
