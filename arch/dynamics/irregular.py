"""Classification of irregularly sampled sequences: softmax cross-entropy over a network
`Model(...)(values_BTD, gaps_BT, mask_BT, *, train) -> logits_BK` that reads each step's
elapsed time (e.g. 'dynamics.liquid': LTC, CfC or an LSTM given the gap as an input).

Batches hold `values` (B, T, D) float, `gaps` (B, T) float (the time elapsed before each
step), `mask` (B, T) bool (False on padding) and `label` (B,) int, as the offline `events`
dataset (event-based bit-stream XOR, train/datasets/events.py) stores them. Eval:
`accuracy` and `loss` over the split.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

import arch
from arch.task import ConfigError, Task, parse_options


@dataclasses.dataclass(frozen=True)
class Options:
  """The irregular-sequence task's task_kwargs."""
  num_classes: int = 2
  length: int = 0  # T, steps per (padded) example, for shapes without data
  features: int = 1  # D, values per step


def make(config) -> Task:
  opts = parse_options(Options, config)
  if opts.length < 1 or opts.features < 1 or opts.num_classes < 2:
    raise ConfigError(f'task_kwargs length={opts.length}, features={opts.features}, '
                      f'num_classes={opts.num_classes}: need length >= 1, features >= 1 '
                      f'and num_classes >= 2')
  if 'num_classes' in arch.model_fields(config.model_name):
    if config.model.get('num_classes', opts.num_classes) != opts.num_classes:
      raise ConfigError(f'config.model.num_classes={config.model.num_classes} but '
                        f'config.task_kwargs.num_classes={opts.num_classes}; make them agree')
    model = arch.model_from_config(config, num_classes=opts.num_classes)
  else:
    model = arch.model_from_config(config)

  def logits(variables, batch, **kw):
    return model.apply(variables, batch['values'], batch['gaps'], batch['mask'], **kw)

  def init(rng, batch):
    return model.init({'params': rng, 'dropout': rng}, batch['values'], batch['gaps'],
                      batch['mask'], train=False)

  def loss(variables, batch, rng):
    z = logits(variables, batch, train=True, rngs={'dropout': rng})
    ce = optax.softmax_cross_entropy_with_integer_labels(z, batch['label']).mean()
    return ce, ({'loss': ce, 'accuracy': (z.argmax(-1) == batch['label']).mean()}, {})

  def evaluate(variables, batch):
    z = logits(variables, batch, train=False)
    return {'loss': optax.softmax_cross_entropy_with_integer_labels(z, batch['label']),
            'accuracy': (z.argmax(-1) == batch['label']).astype(jnp.float32)}

  def example_batch(batch_size):
    t, d = opts.length, opts.features
    return {'values': jax.ShapeDtypeStruct((batch_size, t, d), jnp.float32),
            'gaps': jax.ShapeDtypeStruct((batch_size, t), jnp.float32),
            'mask': jax.ShapeDtypeStruct((batch_size, t), jnp.bool_),
            'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32)}

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch)
