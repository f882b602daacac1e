"""Sequence-to-sequence learning with teacher forcing, over any encoder-decoder network
(the Transformer, T5, BART, RNNsearch), and its greedy/sampled/beam-search decoding.

The network exposes `encode(src_BS, *, train) -> encoded` (a pytree with leading batch
axes) and `decode(tgt_in_BT, encoded, *, train, decode) -> logits_BTV`, where
decode=True keeps the decoder's cache (KV or recurrent state) in the 'cache' collection,
created by `init(..., src, tgt of shape (B, max_len), decode=True)`.

Batches: {'source': (B, S), 'target': (B, T)} token ids, each </s>-terminated and
<pad>-padded (train/text.py, `max_lengths`). The decoder reads <s> + target[:-1].
Eval: per-token `loss` and `token_accuracy` under teacher forcing, and `exact_match`:
the greedy decode equals the target up to and including </s>. Config: `task_kwargs`, the
fields of `Options`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch import vocab
from arch.sequence import decoding
from arch.task import ConfigError, Task, parse_options


def shift_right(tokens_BT):
  """<s> followed by tokens[:, :-1]: the decoder's teacher-forcing input."""
  return jnp.concatenate([jnp.full_like(tokens_BT[:, :1], vocab.BOS), tokens_BT[:, :-1]], 1)


@dataclasses.dataclass(frozen=True)
class Options:
  """Sequence-to-sequence's task_kwargs."""
  source: str = 'source'  # the batch key of the source tokens
  target: str = 'target'  # ... and of the target tokens
  label_smoothing: float = 0.0
  eval_exact_match: bool = True  # eval also decodes greedily for `exact_match`



def decode_source(model, variables, source_BS, rng, *, max_new_tokens, row_ids=None,
                  temperature=1.0, top_k=0, top_p=1.0, beam_size=1, length_penalty=0.0):
  """An encoder-decoder's output (B, max_new_tokens) for sources (B, S): encoded once, then
  decoded token by token from <s> with the KV cache, greedy or sampled
  (decoding.generate) or by beam search. Translation's and denoising's samplers."""
  b = source_BS.shape[0]
  params = {k: v for k, v in variables.items() if k != 'cache'}
  encoded = model.apply(params, source_BS, train=False, method=type(model).encode)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), source_BS, jnp.zeros((b, max_new_tokens), jnp.int32),
      decode=True))['cache']
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def step_with(enc):
    def step(tokens, cache):
      logits, mutated = model.apply({**params, 'cache': cache}, tokens, enc, decode=True,
                                    mutable=['cache'], method=type(model).decode)
      return logits[:, -1], mutated['cache']
    return step

  first, cache = step_with(encoded)(jnp.full((b, 1), vocab.BOS, jnp.int32), cache)
  if beam_size > 1:
    # Each row's encoder output repeated for its beams (b0 b0 b1 b1 ...).
    step = step_with(decoding.repeat_batch(encoded, beam_size))
    tokens, _ = decoding.beam_search(step, cache, first, beam_size, max_new_tokens,
                                     eos_id=vocab.EOS, pad_id=vocab.PAD,
                                     length_penalty=length_penalty)
    return tokens
  return decoding.generate(step_with(encoded), cache, first, rng, max_new_tokens,
                           eos_id=vocab.EOS, pad_id=vocab.PAD, row_ids_B=row_ids,
                           temperature=temperature, top_k=top_k, top_p=top_p)

def make(config, opts=None) -> Task:
  """The objective; `opts` are the parsed options of a task that builds on this one (a
  subclass of `Options`, e.g. examples/captioner.py's), else config.task_kwargs's."""
  opts = opts or parse_options(Options, config)
  vocab.check_model(config)
  model = arch.model_from_config(config)
  lengths = dict(config.data.get('max_lengths') or {})
  src_key = opts.source
  tgt_key = opts.target
  for key in (src_key, tgt_key):
    if key not in lengths:
      raise ConfigError(f'seq2seq needs config.data.max_lengths.{key} (its padded length); '
                        f'have: {", ".join(lengths) or "(none)"}')
  src_len, tgt_len = int(lengths[src_key]), int(lengths[tgt_key])
  label_smoothing = float(opts.label_smoothing)
  eval_decode = bool(opts.eval_exact_match)

  def xent(logits_BTV, targets_BT):
    if not label_smoothing:
      return optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
    v = logits_BTV.shape[-1]
    soft = optax.smooth_labels(jax.nn.one_hot(targets_BT, v), label_smoothing)
    return optax.softmax_cross_entropy(logits_BTV, soft)

  def init(rng, batch):
    return model.init({'params': rng, 'dropout': rng}, batch[src_key],
                      shift_right(batch[tgt_key]), train=False)

  def loss(variables, batch, rng):
    target = batch[tgt_key]
    logits = model.apply(variables, batch[src_key], shift_right(target), train=True,
                         rngs={'dropout': rng})
    w = (target != vocab.PAD).astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    ce = (xent(logits, target) * w).sum() / n
    acc = ((logits.argmax(-1) == target) * w).sum() / n
    return ce, ({'loss': ce, 'token_accuracy': acc}, {})

  def greedy(variables, source, max_new_tokens):
    return sample(variables, {'source': source}, jax.random.key(0),
                  max_new_tokens=max_new_tokens, temperature=0.0)['tokens']

  def evaluate(variables, batch):
    source, target = batch[src_key], batch[tgt_key]
    logits = model.apply(variables, source, shift_right(target), train=False)
    w = (target != vocab.PAD).astype(jnp.float32)
    out = {'nll': (optax.softmax_cross_entropy_with_integer_labels(logits, target) * w).sum(-1),
           'correct': ((logits.argmax(-1) == target) * w).sum(-1), 'tokens': w.sum(-1)}
    if eval_decode:
      decoded = greedy(variables, source, target.shape[1])
      # Equal through </s>: the decode pads after its </s>, as the target does.
      out['exact_match'] = jnp.all(decoded == target, axis=-1).astype(jnp.float32)
    return out

  def finalize_eval(sums, count):
    n = max(float(sums['tokens']), 1.0)
    result = {'loss': float(sums['nll']) / n, 'token_accuracy': float(sums['correct']) / n}
    if 'exact_match' in sums:
      result['exact_match'] = float(sums['exact_match']) / max(count, 1.0)
    return result

  def example_batch(batch_size):
    return {src_key: jax.ShapeDtypeStruct((batch_size, src_len), jnp.int32),
            tgt_key: jax.ShapeDtypeStruct((batch_size, tgt_len), jnp.int32)}

  def prompt_batch(prompts, num_samples):
    """{'source': (B, S)}: each prompt's ids + </s>, padded (truncated) to S."""
    del num_samples
    rows = np.full((len(prompts), src_len), vocab.PAD, np.int32)
    for i, ids in enumerate(prompts):
      ids = list(ids)[:src_len - 1] + [vocab.EOS]
      rows[i, :len(ids)] = ids
    return {'source': rows}

  def sample(variables, batch, rng, *, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
             beam_size=1, row_ids=None, length_penalty=0.0):
    """Decodes batch['source'] (B, S); returns {'tokens': (B, max_new_tokens)}."""
    return {'tokens': decode_source(
        model, variables, batch['source'], rng, max_new_tokens=max_new_tokens,
        row_ids=row_ids, temperature=temperature, top_k=top_k, top_p=top_p,
        beam_size=beam_size, length_penalty=length_penalty)}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch, sample=sample, prompt_batch=prompt_batch)
