"""Text classification: one label per token sequence, softmax cross-entropy over any network
`Model(...)(tokens_BT, *, train) -> logits_BK` (e.g. 'sequence.encoder_heads:Classifier',
BERT's fine-tuning for single sentences, Devlin et al. 2019 section 4.1).

Batches hold `tokens` (B, T) ids, as the model reads them (a dataset of token windows such
as `pydoc_chapters`: <s> text </s>, <pad>-padded), and `label` (B,) ints. Train metrics:
`loss`, `accuracy`; eval: `loss`, `accuracy` over the split's examples and, with
`per_class`, `recall_K` for each class K (how many of its examples are found; their mean
is `balanced_accuracy`).

Config keys read: `model_name`, `model`, and `task_kwargs`, the fields of `Options`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

import arch
from arch.task import ConfigError, Task, parse_options


@dataclasses.dataclass(frozen=True)
class Options:
  """Text classification's task_kwargs."""
  num_classes: int = 2
  length: int = 128  # tokens per example
  label_smoothing: float = 0.0
  per_class: bool = True  # eval reports each class's recall and their mean


def make(config) -> Task:
  opts = parse_options(Options, config)
  num_classes, length = int(opts.num_classes), int(opts.length)
  smoothing = float(opts.label_smoothing)
  if num_classes < 2 or length < 1:
    raise ConfigError(f'task_kwargs.num_classes={num_classes} (at least 2) and '
                      f'length={length} (at least 1)')
  if 'num_classes' in arch.model_fields(config.model_name):
    if config.model.get('num_classes', num_classes) != num_classes:
      raise ConfigError(f'config.model.num_classes={config.model.num_classes} but '
                        f'config.task_kwargs.num_classes={num_classes}; make them agree')
    model = arch.model_from_config(config, num_classes=num_classes)
  else:
    model = arch.model_from_config(config)

  def tokens_of(batch):
    tokens = batch['tokens'].astype(jnp.int32)
    if tokens.shape[1] != length:
      raise ValueError(f'examples of {tokens.shape[1]} tokens; task_kwargs.length is {length}')
    return tokens

  def init(rng, batch):
    return model.init({'params': rng, 'dropout': rng}, tokens_of(batch), train=False)

  def per_example(logits_BK, labels_B):
    targets = optax.smooth_labels(jax.nn.one_hot(labels_B, num_classes), smoothing) \
        if smoothing else jax.nn.one_hot(labels_B, num_classes)
    nll = optax.softmax_cross_entropy(logits_BK, targets)
    return nll, (logits_BK.argmax(-1) == labels_B).astype(jnp.float32)

  def loss(variables, batch, rng):
    logits = model.apply(variables, tokens_of(batch), train=True, rngs={'dropout': rng})
    nll, correct = per_example(logits, batch['label'].astype(jnp.int32))
    return nll.mean(), ({'loss': nll.mean(), 'accuracy': correct.mean()}, {})

  def evaluate(variables, batch):
    logits = model.apply(variables, tokens_of(batch), train=False)
    labels = batch['label'].astype(jnp.int32)
    nll, correct = per_example(logits, labels)
    out = {'loss': nll, 'accuracy': correct}
    if opts.per_class:
      onehot = jax.nn.one_hot(labels, num_classes)
      out['class_count'] = onehot
      out['class_correct'] = onehot * correct[:, None]
    return out

  def finalize_eval(sums, count):
    out = {'loss': float(sums['loss']) / count, 'accuracy': float(sums['accuracy']) / count}
    if opts.per_class:
      recalls = [float(c) / float(n) for c, n in zip(sums['class_correct'], sums['class_count'])
                 if n > 0]
      for k, (c, n) in enumerate(zip(sums['class_correct'], sums['class_count'])):
        if n > 0:
          out[f'recall_{k}'] = float(c) / float(n)
      out['balanced_accuracy'] = sum(recalls) / max(len(recalls), 1)
    return out

  def example_batch(batch_size):
    return {'tokens': jax.ShapeDtypeStruct((batch_size, length), jnp.int32),
            'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32)}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch)
