"""Sequence tagging: one label per token, cross-entropy over real (non-<pad>) tokens, over
any network `Model(...)(tokens_BT, *, train) -> logits_BTK` (e.g. 'sequence.rnn:Tagger').

Batches hold `tokens` (B, T) and `tags` (B, T) ints (tag -1 = no label). With
`task_kwargs.tags_from='segmentation'` the task makes its own labels from byte-level text
windows on the host: whitespace is removed and each remaining byte is tagged 1 if it
starts a word, else 0 — word segmentation of run-together text, which needs context on
both sides. Eval: `accuracy` over labelled tokens and, for tag 1, `precision`, `recall`
and `f1` (for segmentation: of the word starts).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch import vocab
from arch.task import ConfigError, Task, parse_options

WHITESPACE = tuple(ord(c) + vocab.NUM_SPECIAL for c in ' \t\n\r')


def segmentation_example(tokens_T: np.ndarray) -> dict:
  """Byte-level window -> {'tokens': whitespace removed, left-aligned, <pad>-padded;
  'tags': 1 where a word starts, 0 inside a word, -1 on padding}."""
  length = tokens_T.shape[0]
  real = tokens_T[tokens_T != vocab.PAD]
  is_space = np.isin(real, WHITESPACE)
  starts = np.concatenate([[True], is_space[:-1]]) if len(real) else np.zeros(0, bool)
  keep = ~is_space
  tokens = np.full((length,), vocab.PAD, np.int32)
  tags = np.full((length,), -1, np.int32)
  kept = real[keep]
  tokens[:len(kept)] = kept
  tags[:len(kept)] = starts[keep]
  return {'tokens': tokens, 'tags': tags}


@dataclasses.dataclass(frozen=True)
class Options:
  """Tagging's task_kwargs."""
  num_tags: int = 2
  tags_from: str = ''  # '': the dataset's 'tags'; 'segmentation': made from the text
  length: int = 0  # the sequence length when config.data.pack is not set


def make(config) -> Task:
  opts = parse_options(Options, config)
  vocab.check_model(config)
  num_tags = int(opts.num_tags)
  tags_from = opts.tags_from
  if tags_from not in ('', 'segmentation'):
    raise ConfigError(f"task_kwargs.tags_from={tags_from!r}; valid: '' (the dataset's "
                      f"'tags'), 'segmentation'")
  if tags_from == 'segmentation' and config.data.get('tokenizer') != 'byte':
    raise ConfigError('tags_from=segmentation needs byte-level text (config.data.tokenizer='
                      "'byte')")
  length = int(config.data.get('pack') or 0) or int(opts.length)
  if length < 1:
    raise ConfigError('tagging needs the sequence length: config.data.pack (packed text) '
                      'or task_kwargs.length')
  model = arch.model_from_config(config, num_tags=num_tags) \
      if 'num_tags' in arch.model_fields(config.model_name) else arch.model_from_config(config)

  def init(rng, batch):
    return model.init({'params': rng, 'dropout': rng}, batch['tokens'], train=False)

  def per_token(logits, tags):
    w = (tags >= 0).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(tags, 0)) * w
    pred = logits.argmax(-1)
    return nll, pred, w

  def loss(variables, batch, rng):
    logits = model.apply(variables, batch['tokens'], train=True, rngs={'dropout': rng})
    nll, pred, w = per_token(logits, batch['tags'])
    n = jnp.maximum(w.sum(), 1.0)
    ce = nll.sum() / n
    return ce, ({'loss': ce, 'accuracy': ((pred == batch['tags']) * w).sum() / n}, {})

  def evaluate(variables, batch):
    logits = model.apply(variables, batch['tokens'], train=False)
    tags = batch['tags']
    nll, pred, w = per_token(logits, tags)
    pos, true = (pred == 1) & (tags >= 0), tags == 1
    return {'nll': nll.sum(-1), 'correct': ((pred == tags) * w).sum(-1), 'tokens': w.sum(-1),
            'tp': (pos & true).sum(-1), 'fp': (pos & ~true).sum(-1), 'fn': (~pos & true).sum(-1)}

  def finalize_eval(sums, count):
    del count
    s = {k: float(v) for k, v in sums.items()}
    precision = s['tp'] / max(s['tp'] + s['fp'], 1.0)
    recall = s['tp'] / max(s['tp'] + s['fn'], 1.0)
    return {'loss': s['nll'] / max(s['tokens'], 1.0),
            'accuracy': s['correct'] / max(s['tokens'], 1.0), 'precision': precision,
            'recall': recall, 'f1': 2 * precision * recall / max(precision + recall, 1e-9)}

  def example_batch(batch_size):
    return {'tokens': jax.ShapeDtypeStruct((batch_size, length), jnp.int32),
            'tags': jax.ShapeDtypeStruct((batch_size, length), jnp.int32)}

  def preprocess(example):
    return {**example, **segmentation_example(np.asarray(example['tokens']))}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch,
              preprocess=preprocess if tags_from == 'segmentation' else None)
