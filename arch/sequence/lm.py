"""Causal language modelling: next-token cross-entropy over any decoder-only network
(GPT, an LSTM, ...), and its sampler.

The network: `Model(...)(tokens_BT, *, train, decode) -> logits_BTV`; with decode=True it
keeps a cache (KV or recurrent carry) in its 'cache' collection, created by
`init(..., tokens of shape (B, max_len), decode=True)`.

Batches: {'tokens': (B, L)} windows of the packed text (train/text.py); the network reads
tokens[:, :-1] and predicts tokens[:, 1:]. <pad> targets (the split's last window) carry
no loss. Eval reports the split's per-token `loss` (nats per token; per byte with the
byte tokenizer), `accuracy` and `perplexity`. The task has no task_kwargs (`Options`).
A network with Mixture-of-Experts layers (arch/layers/moe.py) adds their sown auxiliary
losses to the objective; train metrics then carry `aux_loss` and the layers' diagnostics
(expert load, dropped fraction), while `loss` stays the cross-entropy alone.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch import vocab
from arch.layers import moe
from arch.sequence import decoding
from arch.task import ConfigError, Task, parse_options


@dataclasses.dataclass(frozen=True)
class Options:
  """The causal LM takes no task_kwargs."""


def token_metrics(sums, accuracy: str = 'accuracy') -> dict:
  """A token-level evaluation's metrics from its split's sums of 'nll', 'correct' and
  'tokens': the mean loss per token, the accuracy (named `accuracy`), the perplexity
  (exp of the loss, capped at e^50) and the token count."""
  n = max(float(sums['tokens']), 1.0)
  nll = float(sums['nll']) / n
  return {'loss': nll, accuracy: float(sums['correct']) / n,
          'perplexity': float(np.exp(min(nll, 50.0))), 'tokens': n}


def make(config) -> Task:
  parse_options(Options, config)
  vocab.check_model(config)
  model = arch.model_from_config(config)
  length = int(config.data.get('pack') or 0)
  if length < 2:
    raise ConfigError(f'causal LM needs config.data.pack >= 2 (the window length), got {length}')

  def split(batch):
    tokens = batch['tokens']
    return tokens[:, :-1], tokens[:, 1:], (tokens[:, 1:] != vocab.PAD).astype(jnp.float32)

  def token_nll(logits_BTV, targets_BT):
    return optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)

  def init(rng, batch):
    return moe.without_sown(model.init({'params': rng, 'dropout': rng}, split(batch)[0],
                                       train=False))

  def loss(variables, batch, rng):
    inputs, targets, weights = split(batch)
    logits, aux, aux_metrics = moe.apply(model, variables, inputs, train=True,
                                         rngs={'dropout': rng})
    n = jnp.maximum(weights.sum(), 1.0)
    ce = (token_nll(logits, targets) * weights).sum() / n
    acc = ((logits.argmax(-1) == targets) * weights).sum() / n
    metrics = {'loss': ce, 'accuracy': acc}
    if aux_metrics:  # Mixture-of-Experts layers: their losses join the objective
      metrics.update(aux_metrics, aux_loss=aux)
    return ce + aux, (metrics, {})

  def evaluate(variables, batch):
    inputs, targets, weights = split(batch)
    logits = model.apply(variables, inputs, train=False)
    return {'nll': (token_nll(logits, targets) * weights).sum(-1),
            'correct': ((logits.argmax(-1) == targets) * weights).sum(-1),
            'tokens': weights.sum(-1)}

  def finalize_eval(sums, count):
    del count
    return token_metrics(sums)

  def example_batch(batch_size):
    return {'tokens': jax.ShapeDtypeStruct((batch_size, length), jnp.int32)}

  def prompt_batch(prompts, num_samples):
    """{'prompt': (B, P)}: <s> then the prompt ids, the same length for every row."""
    rows = [[vocab.BOS] + list(p) for p in prompts]
    if len({len(r) for r in rows}) > 1:
      raise ConfigError('causal-LM prompts in one batch must have the same length')
    del num_samples
    return {'prompt': np.asarray(rows, np.int32)}

  def sample(variables, batch, rng, *, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
             beam_size=1, row_ids=None):
    """Continues batch['prompt'] (B, P); returns {'tokens': (B, max_new_tokens)}."""
    prompt = batch['prompt']
    b, p = prompt.shape
    params = {k: v for k, v in variables.items() if k != 'cache'}
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(
        (b, p + max_new_tokens), jnp.int32), decode=True))['cache']
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def step(tokens, cache):
      logits, mutated = model.apply({**params, 'cache': cache}, tokens, decode=True,
                                    mutable=['cache'])
      return logits[:, -1], mutated['cache']

    first, cache = step(prompt, cache)
    if beam_size > 1:
      tokens, _ = decoding.beam_search(step, cache, first, beam_size, max_new_tokens,
                                       eos_id=vocab.EOS, pad_id=vocab.PAD)
    else:
      tokens = decoding.generate(step, cache, first, rng, max_new_tokens, eos_id=vocab.EOS,
                                 pad_id=vocab.PAD, row_ids_B=row_ids, temperature=temperature,
                                 top_k=top_k, top_p=top_p)
    return {'tokens': tokens}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch, sample=sample, prompt_batch=prompt_batch,
              continues_prompt=True)
