"""Evaluators that any config can name in `config.evaluators`.

Of a frozen representation (a task that exposes `features(variables, batch) -> (B, F)`,
e.g. a backbone's pooled output): at every eval the loop embeds `config.probe.train_split`
(at most `max_train_examples`, 0 = all) and the eval split with the current (EMA) params
and reports

  linear_probe_accuracy  multinomial logistic regression on the standardised train
                         features (L2 penalty `l2` on the weights, full-batch L-BFGS,
                         `probe_steps` iterations), accuracy on the eval split;
  knn_accuracy           weighted k-nearest-neighbour vote in cosine similarity (Wu et al.
                         2018, "Unsupervised feature learning via non-parametric instance
                         discrimination": k = `knn_k`, weights exp(sim / `knn_temperature`)).

Labels come from the batch key `config.probe.label_key`; the classes are 0..max label. Both
run on one device over the gathered features (the representation is small next to the
network); every process computes the same numbers.

Of a generative model (`'fd'`, a task with `sample`): samples drawn as `train.sample`
draws them (config seed, row ids 0..N-1) are embedded by a classifier run of this
codebase (`config.fd.classifier`, default LeNet on digits; trained deterministically
on first use and cached in `config.fd.workdir`) whose task's `features` gives
{'features', 'logits'}, and compared with the eval split:

  fd              Fréchet distance (Heusel et al. 2017) between Gaussians fitted to the
                  samples' and the eval split's classifier features: the FID recipe with
                  a digits classifier in place of Inception;
  fd_floor        the same distance between as many train examples and the eval split:
                  what a perfect generator would score at this sample size;
  class_coverage  the fraction of classes that the classifier assigns at least half
                  their fair share (N / 2K) of the samples to (1 = no class missing).
"""

import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

from train.errors import UserError

EVALUATORS = ('linear_probe', 'knn', 'fd')
PROBES = ('linear_probe', 'knn')


def check(config, task):
  names = tuple(config.get('evaluators') or ())
  unknown = [n for n in names if n not in EVALUATORS]
  if unknown:
    raise UserError(f'unknown evaluator {unknown[0]!r}; valid: {", ".join(EVALUATORS)}')
  if set(names) & set(PROBES) and task.features is None:
    raise UserError(f'config.evaluators={names} needs a task with `features`; '
                    f'{config.task!r} has none')
  if 'fd' in names and (task.sample is None or task.prompt_batch is None):
    raise UserError(f"the 'fd' evaluator needs a task that samples; {config.task!r} does not")
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


def frechet_distance(x_NF, y_MF) -> float:
  """||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)) of Gaussians fitted to the rows.
  Tr (S_x S_y)^(1/2) = Tr (A S_y A)^(1/2) with A = S_x^(1/2): similar matrices, and this
  one is symmetric positive semi-definite, so its eigenvalues are real and >= 0."""
  x, y = np.asarray(x_NF, np.float64), np.asarray(y_MF, np.float64)
  mu_x, mu_y = x.mean(0), y.mean(0)
  s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  w, v = np.linalg.eigh(s_x)
  a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(a @ s_y @ a), 0, None)).sum()
  return float(((mu_x - mu_y) ** 2).sum() + np.trace(s_x) + np.trace(s_y) - 2 * tr_sqrt)


_FD_REFERENCE = {}


def fd_reference(config):
  """(embed(images) -> {'features', 'logits'}, eval-split features, fd_floor) of the
  config's FD classifier, restored (trained first if need be) once per process."""
  from train import config_lib
  from train import data as data_lib
  from train import loop
  fd = config.fd
  data_dir = config.data.get('data_dir') or data_lib.default_data_dir()
  slug = re.sub(r'[^A-Za-z0-9]+', '_', os.path.basename(fd.classifier)).strip('_')
  workdir = fd.workdir or os.path.join(data_dir, 'fd_classifiers', slug)
  key = (fd.classifier, workdir, config.data.name, config.data.eval_split)
  if key not in _FD_REFERENCE:
    sub = config_lib.load(fd.classifier)
    if not sub.data.get('data_dir'):
      sub.data.data_dir = data_dir
    variables = loop.restore_run(sub, workdir, 'fd classifier', fd.classifier)
    clf = loop.load_task(sub)
    if clf.features is None:
      raise UserError(f'the fd classifier {fd.classifier!r} has no features')
    fn = jax.jit(clf.features)

    def embed(images, chunk=256):
      outs = [jax.device_get(fn(variables, {'image': jnp.asarray(images[i:i + chunk])}))
              for i in range(0, len(images), chunk)]
      return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def split_images(split, n=None):
      src = data_lib.source(config.data, split)
      n = len(src) if n is None else min(n, len(src))
      return np.stack([np.asarray(src[i]['image']) for i in range(n)])

    real = embed(split_images(config.data.eval_split))['features']
    train = embed(split_images(config.data.train_split, len(real)))['features']
    _FD_REFERENCE[key] = (embed, real, frechet_distance(train, real))
  return _FD_REFERENCE[key]


def fd_metrics(config, generate) -> dict:
  embed, real, floor = fd_reference(config)
  n = int(config.fd.num_samples) or len(real)
  options = {'steps': int(config.fd.steps)} if config.fd.steps else {}
  images = generate(n, **options)['images']
  out = embed(images)
  k = out['logits'].shape[-1]
  counts = np.bincount(out['logits'].argmax(-1), minlength=k)
  return {'fd': frechet_distance(out['features'], real), 'fd_floor': floor,
          'class_coverage': float((counts >= n / (2 * k)).mean())}


def evaluate(config, names, embed_split, generate=None) -> dict:
  """Runs the named evaluators; `embed_split(split, max_examples)` -> (features, labels)
  as host numpy arrays of the real rows; `generate(n, **options)` -> the task's samples
  {'images': (n, ...)} as host numpy arrays."""
  out = {}
  if 'fd' in names:
    out.update(fd_metrics(config, generate))
  if not set(names) & set(PROBES):
    return out
  probe = config.get('probe') or {}
  train_x, train_y = embed_split(probe.get('train_split', config.data.train_split),
                                 int(probe.get('max_train_examples', 0)))
  test_x, test_y = embed_split(config.data.eval_split, 0)
  num_classes = int(max(train_y.max(), test_y.max())) + 1
  if 'linear_probe' in names:
    out['linear_probe_accuracy'] = linear_probe_accuracy(
        train_x, train_y, test_x, test_y, num_classes, probe.get('l2', 1e-4),
        probe.get('probe_steps', 300))
  if 'knn' in names:
    out['knn_accuracy'] = knn_accuracy(train_x, train_y, test_x, test_y, num_classes,
                                       probe.get('knn_k', 20),
                                       probe.get('knn_temperature', 0.07))
  return out
