"""Evaluators that a config names in `config.evals`, big_vision style:

    c.evals.probe = evaluators.entry('linear_probe', train_split='train')
    c.evals.fd = evaluators.entry('fd', classifier='configs/lenet_digits.py', steps=50)

`evaluators.entry(type, **options)` makes an entry with every option at its default (so each
can be overridden on the command line). Each entry NAME has a `type` (default: NAME itself),
`every` (0: at every eval of the loop,
N: at the evals whose step is a multiple of N and the last, -1: off, so a config can carry
an entry that a test or user switches on with `--config.evals.NAME.every=0`) and its
type's options, validated like task options (a typo is an error naming the valid ones).
Metrics are reported under their own names (`linear_probe_accuracy`, `fd`, ...). A new
evaluator is one function and its options class in `REGISTRY`; the loop does not change.

Of a frozen representation (a task that exposes `features(variables, batch) -> (B, F)`,
e.g. a backbone's pooled output): the loop embeds `train_split` (at most
`max_train_examples`, 0 = all) and the eval split with the current (EMA) params:

  linear_probe  `linear_probe_accuracy`: multinomial logistic regression on the
                standardised train features (L2 penalty `l2` on the weights, full-batch
                L-BFGS, `steps` iterations), accuracy on the eval split;
  knn           `knn_accuracy`: weighted k-nearest-neighbour vote in cosine similarity
                (Wu et al. 2018, "Unsupervised feature learning via non-parametric instance
                discrimination": k = `k`, weights exp(sim / `temperature`)).

Labels come from the batch key `label_key`; the classes are 0..max label. Both run on one
device over the gathered features; every process computes the same numbers.

Of a generative model (`fd`, a task with `sample`): samples drawn as `train.sample` draws
them (config seed, row ids 0..N-1; the sample key `sample_key`, `steps` sampler steps) are
embedded by a classifier run of this codebase (`classifier`, default LeNet on digits) whose
task's `features` gives {'features', 'logits'}, and compared with the eval split's
`data_key` images:

  fd              Fréchet distance (Heusel et al. 2017) between Gaussians fitted to the
                  samples' and the eval split's classifier features: the FID recipe with
                  a digits classifier in place of Inception;
  fd_floor        the same distance between as many train examples and the eval split:
                  what a perfect generator would score at this sample size;
  class_coverage  the fraction of classes that the classifier assigns at least half
                  their fair share (N / 2K) of the samples to (1 = no class missing).

The classifier is a run like any `config.frozen` one: the loop trains it before this run
starts when `workdir` ('' = DATA_DIR/fd_classifiers/<name>) holds none, never in an eval.
"""

import dataclasses
import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

from arch.task import ConfigError, parse_options
from train.errors import UserError


# --------------------------------------------------------------------------- options


@dataclasses.dataclass(frozen=True)
class _Common:
  type: str = ''
  every: int = 0  # 0: every eval; N: evals at multiples of N (and the last); -1: off


@dataclasses.dataclass(frozen=True)
class ProbeOptions(_Common):
  train_split: str = 'train'
  max_train_examples: int = 0  # 0: the whole split
  label_key: str = 'label'


@dataclasses.dataclass(frozen=True)
class LinearProbeOptions(ProbeOptions):
  l2: float = 1e-4
  steps: int = 300  # L-BFGS iterations


@dataclasses.dataclass(frozen=True)
class KnnOptions(ProbeOptions):
  k: int = 20
  temperature: float = 0.07


@dataclasses.dataclass(frozen=True)
class FdOptions(_Common):
  classifier: str = 'configs/lenet_digits.py'
  workdir: str = ''       # '' = DATA_DIR/fd_classifiers/<classifier name>
  num_samples: int = 0    # 0: as many as the eval split has
  steps: int = 0          # the sampler's steps (0: the task's default)
  data_key: str = 'image'
  sample_key: str = 'images'


# ------------------------------------------------------------------------ the metrics


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


# ------------------------------------------------------------------------ evaluators
#
# An evaluator is `fn(opts, run) -> {metric: float}`; `run` is the loop's Run: its
# `config`, `embed_split(split, max_examples) -> (features, labels)` and
# `generate(n, **sampler_options) -> {output: array}` (host numpy).


def _probe_data(opts, run):
  train_x, train_y = run.embed_split(opts.train_split, opts.max_train_examples)
  test_x, test_y = run.embed_split(run.config.data.eval_split, 0)
  return train_x, train_y, test_x, test_y, int(max(train_y.max(), test_y.max())) + 1


def linear_probe(opts, run):
  return {'linear_probe_accuracy': linear_probe_accuracy(*_probe_data(opts, run), opts.l2,
                                                         opts.steps)}


def knn(opts, run):
  return {'knn_accuracy': knn_accuracy(*_probe_data(opts, run), opts.k, opts.temperature)}


def fd_workdir(config, opts):
  from train import data as data_lib
  if opts.workdir:
    return opts.workdir
  data_dir = config.data.get('data_dir') or data_lib.default_data_dir()
  slug = re.sub(r'[^A-Za-z0-9]+', '_', os.path.basename(opts.classifier)).strip('_')
  return os.path.join(data_dir, 'fd_classifiers', slug)


def _fd_config(config, opts):
  from train import config_lib
  sub = config_lib.load(opts.classifier)
  if not sub.data.get('data_dir'):
    sub.data.data_dir = config.data.get('data_dir') or ''
  return sub


_FD_REFERENCE = {}


def fd_reference(config, opts):
  """(embed(images) -> {'features', 'logits'}, eval-split features, fd_floor) of the
  classifier run (prepared before training), restored once per process."""
  from train import core
  from train import data as data_lib
  workdir = fd_workdir(config, opts)
  key = (opts.classifier, workdir, opts.data_key, config.data.name, config.data.eval_split)
  if key not in _FD_REFERENCE:
    sub = _fd_config(config, opts)
    clf = core.load_task(sub)
    if clf.features is None:
      raise UserError(f'the fd classifier {opts.classifier!r} has no features')
    variables, step = core.restore_variables(sub, workdir, task=clf)
    core.log(f'fd classifier: restored step {step} of {workdir}')
    fn = jax.jit(clf.features)

    def embed(images, chunk=256):
      outs = [jax.device_get(fn(variables, {opts.data_key: jnp.asarray(images[i:i + chunk])}))
              for i in range(0, len(images), chunk)]
      return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def split_images(split, n=None):
      src = data_lib.source(config.data, split)
      n = len(src) if n is None else min(n, len(src))
      return np.stack([np.asarray(src[i][opts.data_key]) for i in range(n)])

    real = embed(split_images(config.data.eval_split))['features']
    train = embed(split_images(config.data.train_split, len(real)))['features']
    _FD_REFERENCE[key] = (embed, real, frechet_distance(train, real))
  return _FD_REFERENCE[key]


def fd_metrics(config, opts, generate) -> dict:
  """fd, fd_floor and class_coverage of `generate(n, **options)`'s samples."""
  embed, real, floor = fd_reference(config, opts)
  n = int(opts.num_samples) or len(real)
  options = {'steps': int(opts.steps)} if opts.steps else {}
  out = embed(generate(n, **options)[opts.sample_key])
  k = out['logits'].shape[-1]
  counts = np.bincount(out['logits'].argmax(-1), minlength=k)
  return {'fd': frechet_distance(out['features'], real), 'fd_floor': floor,
          'class_coverage': float((counts >= n / (2 * k)).mean())}


def fd(opts, run):
  return fd_metrics(run.config, opts, run.generate)


def _needs_features(config, task, name):
  if task.features is None:
    raise UserError(f'config.evals.{name} needs a task with `features`; {config.task!r} '
                    f'has none')


def _needs_sampler(config, task, name):
  if task.sample is None or task.prompt_batch is None:
    raise UserError(f'config.evals.{name} needs a task that samples; {config.task!r} does not')


# type -> (options class, fn(opts, run) -> metrics, check(config, task, name))
REGISTRY = {
    'linear_probe': (LinearProbeOptions, linear_probe, _needs_features),
    'knn': (KnnOptions, knn, _needs_features),
    'fd': (FdOptions, fd, _needs_sampler),
}


def entry(kind: str, **options) -> dict:
  """A `config.evals` entry of evaluator type `kind` with every option at its default
  unless given, so that any of them can be overridden on the command line
  (`--config.evals.NAME.every=0`): `c.evals.fd = evaluators.entry('fd', steps=50)`."""
  if kind not in REGISTRY:
    raise UserError(f'unknown evaluator type {kind!r}; valid: {", ".join(REGISTRY)}')
  try:
    opts = parse_options(REGISTRY[kind][0], {'evals': dict(options, type=kind)}, 'evals')
  except ConfigError as e:
    raise UserError(str(e)) from None
  return dataclasses.asdict(opts)


def entries(config):
  """[(name, options)] of the config's active evaluators, validated."""
  out = []
  for name, entry in (config.get('evals') or {}).items():
    entry = dict(entry)
    kind = entry.get('type') or name
    if kind not in REGISTRY:
      raise UserError(f'config.evals.{name}: unknown evaluator type {kind!r}; valid: '
                      f'{", ".join(REGISTRY)}')
    entry['type'] = kind
    try:
      opts = parse_options(REGISTRY[kind][0], {f'evals.{name}': entry}, f'evals.{name}')
    except ConfigError as e:
      raise UserError(str(e)) from None
    if opts.every >= 0:
      out.append((name, opts))
  return out


def build(config, task):
  """Callables `evaluator(run, step) -> metrics` of the config's active evaluators."""
  evaluators = []
  for name, opts in entries(config):
    _, fn, check = REGISTRY[opts.type]
    check(config, task, name)

    def evaluator(run, step, fn=fn, opts=opts):
      due = (not opts.every or step % opts.every == 0 or step == run.config.total_steps)
      return fn(opts, run) if due else {}
    evaluators.append(evaluator)
  return evaluators


def label_key(config) -> str:
  """The label key of the probes (the features step returns that batch key)."""
  keys = {opts.label_key for _, opts in entries(config) if isinstance(opts, ProbeOptions)}
  if len(keys) > 1:
    raise UserError(f'config.evals: the probes name different label keys {sorted(keys)}')
  return keys.pop() if keys else 'label'


def runs(config):
  """[(label, config, workdir, spec)] of the runs the evaluators read (the FD classifier),
  which the loop trains before this run starts where they hold no checkpoint."""
  return [('fd classifier', _fd_config(config, opts), fd_workdir(config, opts), opts.classifier)
          for _, opts in entries(config) if opts.type == 'fd']
