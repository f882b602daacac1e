"""Evaluators of frozen representations that any config can name: linear probe and k-NN.

A task that exposes `features(variables, batch) -> (B, F)` (its representation, e.g. a
backbone's pooled output) can list evaluators in `config.evaluators`; at every eval the
loop embeds `config.probe.train_split` (at most `max_train_examples`, 0 = all) and the
eval split with the current (EMA) params and reports

  linear_probe_accuracy  multinomial logistic regression on the standardised train
                         features (L2 penalty `l2` on the weights, full-batch L-BFGS,
                         `probe_steps` iterations), accuracy on the eval split;
  knn_accuracy           weighted k-nearest-neighbour vote in cosine similarity (Wu et al.
                         2018, "Unsupervised feature learning via non-parametric instance
                         discrimination": k = `knn_k`, weights exp(sim / `knn_temperature`)).

Labels come from the batch key `config.probe.label_key`; the classes are 0..max label. Both
run on one device over the gathered features (the representation is small next to the
network); every process computes the same numbers.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from train.errors import UserError

EVALUATORS = ('linear_probe', 'knn')


def check(config, task):
  names = tuple(config.get('evaluators') or ())
  unknown = [n for n in names if n not in EVALUATORS]
  if unknown:
    raise UserError(f'unknown evaluator {unknown[0]!r}; valid: {", ".join(EVALUATORS)}')
  if names and task.features is None:
    raise UserError(f'config.evaluators={names} needs a task with `features`; '
                    f'{config.task!r} has none')
  return names


def linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes: int,
                          l2: float = 1e-4, steps: int = 300) -> float:
  """Accuracy of softmax regression fitted on (train_x, train_y), measured on the test."""
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  return float(_probe(jnp.asarray((train_x - mean) / std), jnp.asarray(train_y),
                      jnp.asarray((test_x - mean) / std), jnp.asarray(test_y),
                      num_classes, float(l2), int(steps)))


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _probe(x, y, tx, ty, num_classes, l2, steps):
  params = {'w': jnp.zeros((x.shape[1], num_classes)), 'b': jnp.zeros((num_classes,))}

  def objective(p):
    logits = x @ p['w'] + p['b']
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * l2 * jnp.sum(p['w'] ** 2)

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)

  def body(_, carry):
    p, state = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=objective)
    return optax.apply_updates(p, updates), state

  params, _ = jax.lax.fori_loop(0, steps, body, (params, opt.init(params)))
  return ((tx @ params['w'] + params['b']).argmax(-1) == ty).mean()


def knn_accuracy(train_x, train_y, test_x, test_y, num_classes: int, k: int = 20,
                 temperature: float = 0.07, chunk: int = 1024) -> float:
  """Weighted k-NN accuracy in cosine similarity (test rows in chunks of `chunk`)."""
  norm = lambda a: a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
  bank, bank_y = jnp.asarray(norm(train_x)), jnp.asarray(train_y)
  k = min(k, len(train_x))
  test_x = norm(test_x)
  correct = 0
  for i in range(0, len(test_x), chunk):
    pred = _knn(bank, bank_y, jnp.asarray(test_x[i:i + chunk]), num_classes, k,
                float(temperature))
    correct += int((np.asarray(pred) == test_y[i:i + chunk]).sum())
  return correct / len(test_x)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _knn(bank, bank_y, queries, num_classes, k, temperature):
  sim_QN = queries @ bank.T
  top_sim, top_idx = jax.lax.top_k(sim_QN, k)
  votes = jax.nn.one_hot(bank_y[top_idx], num_classes) * jnp.exp(top_sim / temperature)[..., None]
  return votes.sum(1).argmax(-1)


def evaluate(config, names, embed_split) -> dict:
  """Runs the named evaluators; `embed_split(split, max_examples)` -> (features, labels)
  as host numpy arrays of the real rows."""
  probe = config.get('probe') or {}
  train_x, train_y = embed_split(probe.get('train_split', config.data.train_split),
                                 int(probe.get('max_train_examples', 0)))
  test_x, test_y = embed_split(config.data.eval_split, 0)
  num_classes = int(max(train_y.max(), test_y.max())) + 1
  out = {}
  if 'linear_probe' in names:
    out['linear_probe_accuracy'] = linear_probe_accuracy(
        train_x, train_y, test_x, test_y, num_classes, probe.get('l2', 1e-4),
        probe.get('probe_steps', 300))
  if 'knn' in names:
    out['knn_accuracy'] = knn_accuracy(train_x, train_y, test_x, test_y, num_classes,
                                       probe.get('knn_k', 20),
                                       probe.get('knn_temperature', 0.07))
  return out
