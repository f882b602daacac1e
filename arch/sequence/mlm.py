"""Masked-LM and next-sentence prediction: BERT's pre-training objective (Devlin et al. 2019).

Batches hold `tokens` (B, L) int: windows of L consecutive token ids of concatenated
documents (`config.data.pack = L`; ids 0-3 special, `arch/sequence/vocab.py`). Everything
else is built on device, inside `loss` and `evaluate`:

  sentence pairs (nsp=True): with h = L // 2, segment A is the window's tokens [2, h) and
      segment B its tokens [h, L - 1), so A and B are consecutive text; with probability
      1/2 B is replaced by the same span of the previous example in the batch (a roll), and
      the NSP label is 1 ("B does not follow A") exactly when the B that was put in differs
      from the window's own. Laid out as [BOS] A [EOS] B [EOS] (BOS plays [CLS]): L tokens,
      token types 0 up to the first EOS and 1 after. With nsp=False: [BOS] window[:L-1].
  masking: `mask_rate` of each row's non-special tokens (rounded, at least one), chosen
      uniformly; of those, 80% become MASK, 10% a random non-special id of the data's
      vocabulary, 10% stay (`mask_token_rate`, `random_token_rate`). Special ids and
      padding are never chosen.

Loss = mean cross-entropy over the masked positions of the batch + `nsp_weight` x NSP
cross-entropy. `evaluate` draws each row's masks and coin from a key derived from the
row's tokens, so it is deterministic and a row's result depends only on it and its NSP
partner (the previous row); it returns per-example sums, and `finalize_eval` divides the
MLM sums by the number of masked tokens of the split (token-weighted, not a mean of
per-row means).

Config keys read: `model_name`, `model` (a model taking `tokens_BT, token_types_BT=,
train=` and returning 'mlm_logits' and 'nsp_logits', e.g. 'sequence.bert'),
`data.pack`, `data.tokenizer`, `data.vocab_size`, and `task_kwargs`, the fields of
`Options`: mask_rate (0.15), mask_token_rate (0.8), random_token_rate (0.1), nsp (True),
nsp_weight (1.0). With nsp=False (RoBERTa) 'nsp_logits' is not read.

Masking is dynamic (RoBERTa's, Liu et al. 2019): `loss` draws each row's mask from the
step's rng, which the loop folds with the step number, so a window seen again in a later
epoch gets a fresh mask (BERT's original pipeline masked each sequence once, when it
prepared the data).

Dimension key: B batch, L window length (= model input length), V vocabulary.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch import vocab
from arch.task import ConfigError, Task, parse_options

MIN_NSP_LENGTH = 8


@dataclasses.dataclass(frozen=True)
class Options:
  """The masked-LM task's task_kwargs."""
  mask_rate: float = 0.15  # of each row's non-special tokens
  mask_token_rate: float = 0.8  # of the chosen ones: become MASK
  random_token_rate: float = 0.1  # ... become a random id (the rest stay)
  nsp: bool = True  # sentence pairs and next-sentence prediction
  nsp_weight: float = 1.0


def data_vocab_size(config, model_vocab_size: int) -> int:
  """Ids the data can hold: the tokenizer's vocabulary (the model's when there is none)."""
  kind = config.data.get('tokenizer', '')
  if kind == 'byte':
    return vocab.BYTE_VOCAB_SIZE
  if kind == 'bpe':
    return int(config.data.get('vocab_size') or 0)
  return model_vocab_size


def sentence_pair(window_L, other_L, coin):
  """[BOS] A [EOS] B [EOS] from one window, B from `other_L` when `coin` and that gives a
  different, non-empty B. Returns tokens (L,), token types (L,) and the NSP label ():
  1 when B was replaced (Hugging Face's convention: 0 = B follows A)."""
  length = window_L.shape[0]
  h = length // 2
  own_b, other_b = window_L[h:length - 1], other_L[h:length - 1]
  use_other = coin & jnp.any(other_b != vocab.PAD) & jnp.any(other_b != own_b)
  b = jnp.where(use_other, other_b, own_b)
  bos, eos = jnp.array([vocab.BOS], window_L.dtype), jnp.array([vocab.EOS], window_L.dtype)
  tokens_L = jnp.concatenate([bos, window_L[2:h], eos, b, eos])
  types_L = (jnp.arange(length) >= h).astype(jnp.int32)
  return tokens_L, types_L, use_other.astype(jnp.int32)


def mask_tokens(tokens_L, rng, *, vocab_size, mask_rate=0.15, mask_token_rate=0.8,
                random_token_rate=0.1):
  """BERT's corruption of one row. Returns (inputs (L,), chosen (L,) bool): the chosen
  positions are the prediction targets; specials (ids < NUM_SPECIAL) are never chosen."""
  choose_rng, kind_rng, id_rng = jax.random.split(rng, 3)
  maskable = tokens_L >= vocab.NUM_SPECIAL
  n = maskable.sum()
  k = jnp.maximum(jnp.round(mask_rate * n), jnp.minimum(n, 1))
  noise = jnp.where(maskable, jax.random.uniform(choose_rng, tokens_L.shape), 2.0)
  chosen = (jnp.argsort(jnp.argsort(noise)) < k) & maskable
  u = jax.random.uniform(kind_rng, tokens_L.shape)
  to_mask = chosen & (u < mask_token_rate)
  to_random = chosen & (u >= mask_token_rate) & (u < mask_token_rate + random_token_rate)
  random_ids = jax.random.randint(id_rng, tokens_L.shape, vocab.NUM_SPECIAL, vocab_size,
                                  tokens_L.dtype)
  inputs = jnp.where(to_mask, vocab.MASK, jnp.where(to_random, random_ids, tokens_L))
  return inputs.astype(tokens_L.dtype), chosen


def pretraining_inputs(tokens_BL, keys_B, *, vocab_size, nsp=True, mask_rate=0.15,
                       mask_token_rate=0.8, random_token_rate=0.1):
  """A batch of windows -> (inputs, token types, MLM targets, MLM chosen, NSP labels):
  sentence pairs (B from the previous row when its coin says so) and masking, per row."""
  def row(window_L, other_L, key):
    coin_rng, mask_rng = jax.random.split(key)
    if nsp:
      seq_L, types_L, label = sentence_pair(window_L, other_L, jax.random.bernoulli(coin_rng))
    else:
      seq_L = jnp.concatenate([jnp.array([vocab.BOS], window_L.dtype), window_L[:-1]])
      types_L, label = jnp.zeros_like(seq_L), jnp.zeros((), jnp.int32)
    inputs_L, chosen_L = mask_tokens(seq_L, mask_rng, vocab_size=vocab_size,
                                     mask_rate=mask_rate, mask_token_rate=mask_token_rate,
                                     random_token_rate=random_token_rate)
    return inputs_L, types_L, seq_L, chosen_L, label
  tokens_BL = tokens_BL.astype(jnp.int32)
  return jax.vmap(row)(tokens_BL, jnp.roll(tokens_BL, 1, axis=0), keys_B)


def row_keys(tokens_BL, seed: int = 0):
  """One PRNG key per row, a function of the row's tokens only (for deterministic eval)."""
  weights = jnp.asarray((np.arange(tokens_BL.shape[1], dtype=np.uint64) * 2654435761 + 97)
                        % 2**32, jnp.uint32)
  hashes = (tokens_BL.astype(jnp.uint32) * weights).sum(axis=1, dtype=jnp.uint32)
  return jax.vmap(lambda h: jax.random.fold_in(jax.random.key(seed), h))(hashes)


def make(config) -> Task:
  opts = parse_options(Options, config)
  mask_rate, nsp = float(opts.mask_rate), bool(opts.nsp)
  mask_token_rate, random_token_rate = float(opts.mask_token_rate), float(opts.random_token_rate)
  nsp_weight = float(opts.nsp_weight)
  if not 0.0 < mask_rate <= 1.0:
    raise ConfigError(f'config.task_kwargs.mask_rate={mask_rate} must be in (0, 1]')
  if min(mask_token_rate, random_token_rate) < 0 or mask_token_rate + random_token_rate > 1:
    raise ConfigError(f'mask_token_rate={mask_token_rate} and random_token_rate='
                      f'{random_token_rate} must be >= 0 and sum to at most 1')
  length = int(config.data.get('pack') or 0)
  if length <= 0:
    raise ConfigError('the masked-LM task reads windows of packed text: set '
                      'config.data.pack to the window length (e.g. 128)')
  if nsp and length < MIN_NSP_LENGTH:
    raise ConfigError(f'config.data.pack={length} is too short for sentence pairs '
                      f'(at least {MIN_NSP_LENGTH}); or set task_kwargs.nsp=False')

  model = arch.model_from_config(config)
  model_vocab = getattr(model, 'vocab_size', None)
  if model_vocab is None:
    raise ConfigError(f'model {config.model_name!r} has no vocab_size; the masked-LM task '
                      f'needs a token model such as sequence.bert')
  ids = data_vocab_size(config, model_vocab)
  if ids <= vocab.NUM_SPECIAL:
    raise ConfigError(f'config.data.vocab_size={ids}: the {config.data.tokenizer!r} '
                      f'tokenizer needs a vocabulary larger than the {vocab.NUM_SPECIAL} '
                      f'special ids')
  if model_vocab < ids:
    raise ConfigError(f'config.model.vocab_size={model_vocab} is smaller than the '
                      f'{ids} ids of the {config.data.get("tokenizer") or "data"} '
                      f'tokenizer; make it at least {ids}')
  max_length = getattr(model, 'max_length', None)
  offset = getattr(model, 'position_offset', 0)  # RoBERTa's rows reserved before position 0
  if max_length is not None and max_length < length + offset:
    raise ConfigError(f'config.data.pack={length} exceeds config.model.max_length='
                      f'{max_length}' + (f' less position_offset={offset}' if offset else ''))
  if nsp and getattr(model, 'type_vocab_size', 2) < 2:
    raise ConfigError('next-sentence prediction needs config.model.type_vocab_size >= 2 '
                      '(or task_kwargs.nsp=False)')

  def forward(variables, batch, keys_B, train, rng=None):
    inputs, types, targets, chosen, labels = pretraining_inputs(
        batch['tokens'], keys_B, vocab_size=ids, nsp=nsp, mask_rate=mask_rate,
        mask_token_rate=mask_token_rate, random_token_rate=random_token_rate)
    out = model.apply(variables, inputs, token_types_BT=types, train=train,
                      rngs={'dropout': rng} if train else None)
    nll_BL = optax.softmax_cross_entropy_with_integer_labels(out['mlm_logits'], targets)
    correct_BL = out['mlm_logits'].argmax(-1) == targets
    w = chosen.astype(jnp.float32)
    sums = dict(mlm_nll=(nll_BL * w).sum(1), mlm_correct=(correct_BL * w).sum(1),
                mlm_count=w.sum(1))
    if nsp:  # without it the model needs no next-sentence head (RoBERTa has none)
      sums['nsp_loss'] = optax.softmax_cross_entropy_with_integer_labels(out['nsp_logits'],
                                                                         labels)
      sums['nsp_accuracy'] = (out['nsp_logits'].argmax(-1) == labels).astype(jnp.float32)
    return sums

  def summarize(sums, count):
    """Metrics from sums over examples (a batch or a split) and the number of examples."""
    masked = jnp.maximum(sums['mlm_count'], 1.0)
    out = {'mlm_loss': sums['mlm_nll'] / masked, 'mlm_accuracy': sums['mlm_correct'] / masked}
    out['loss'] = out['mlm_loss']
    if nsp:
      out['nsp_loss'] = sums['nsp_loss'] / count
      out['nsp_accuracy'] = sums['nsp_accuracy'] / count
      out['loss'] = out['loss'] + nsp_weight * out['nsp_loss']
    return out

  def init(rng, batch):
    tokens = batch['tokens'].astype(jnp.int32)
    return model.init({'params': rng, 'dropout': rng}, tokens,
                      token_types_BT=jnp.zeros_like(tokens), train=False)

  def loss(variables, batch, rng):
    data_rng, dropout_rng = jax.random.split(rng)
    keys_B = jax.random.split(data_rng, batch['tokens'].shape[0])
    per_example = forward(variables, batch, keys_B, True, dropout_rng)
    sums = {k: v.sum() for k, v in per_example.items()}
    metrics = summarize(sums, batch['tokens'].shape[0])
    return metrics['loss'], (metrics, {})

  def evaluate(variables, batch):
    return forward(variables, batch, row_keys(batch['tokens']), False)

  def finalize_eval(sums, count):
    return {k: float(v) for k, v in summarize(sums, count).items()}

  def example_batch(batch_size):
    return {'tokens': jax.ShapeDtypeStruct((batch_size, length), jnp.int32)}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch)
