"""MoCo v2 (He et al. 2020, "Momentum contrast for unsupervised visual representation
learning"; Chen et al. 2020, "Improved baselines with momentum contrastive learning").

A query encoder (backbone + MLP head, the trained params) and a key encoder of the same
shape whose weights are an exponential moving average of the query encoder's,
theta_k <- m theta_k + (1 - m) theta_q, updated before each step's keys are computed
(as the reference implementation does) and never by gradients. A queue of the last K
keys (normalised) supplies the negatives of the InfoNCE loss (temperature tau); each
step enqueues the global batch's keys over the oldest ones.

The key encoder's weights and batch statistics ('momentum') and the queue ('queue':
keys (K, E), ptr ()) are non-parameter collections: the loop threads them through its
state and checkpoints, and the optimizer never sees them. Under pmap every device
gathers the whole batch's keys, so all hold the same queue. (MoCo's shuffling BN, which
keeps a query's and its key's BatchNorm statistics apart across GPUs, has no analogue in
one global jit batch; the key encoder's BN runs on its own batch of views.)

Config keys read: `model_name`, `model` (the backbone, `num_classes=0`), `task_kwargs`
(`Options`): `input_size`, `channels`, `augment`, `host_size` (contrastive.ImageOptions),
`temperature` (0.2), `momentum` (0.999), `queue_size` (65536; a multiple of the global
batch), `proj_hidden`, `proj_dim`.
Train metrics: `loss`, `contrastive_accuracy` (the key ranked first among K + 1).
"""

import dataclasses

import jax
import jax.numpy as jnp

from arch.multimodal.contrastive import (Embedder, ImageOptions, ImageSetup, gather, info_nce,
                                         l2_normalize)
from arch.task import ConfigError, Task, parse_options

MOMENTUM, QUEUE = 'momentum', 'queue'


@dataclasses.dataclass(frozen=True)
class Options(ImageOptions):
  """MoCo's task_kwargs."""
  temperature: float = 0.2
  momentum: float = 0.999  # the key encoder's EMA decay m
  queue_size: int = 65536  # negative keys K; a multiple of the global batch
  proj_hidden: int = 2048  # the projection head's hidden width
  proj_dim: int = 128  # ... and output width


def make(config) -> Task:
  opts = parse_options(Options, config)
  s = ImageSetup(config, opts)
  tau = float(opts.temperature)
  m = float(opts.momentum)
  queue_size = int(opts.queue_size)
  if queue_size % config.batch_size:
    raise ConfigError(f'queue_size={queue_size} must be a multiple of the global batch '
                      f'size {config.batch_size}')
  proj_dim = int(opts.proj_dim)
  model = Embedder(s.backbone, int(opts.proj_hidden), proj_dim)

  def init(rng, batch):
    variables = dict(model.init({'params': rng, 'dropout': rng}, s.images(batch),
                                train=False))
    k_queue = jax.random.fold_in(rng, 1)
    variables[MOMENTUM] = {k: v for k, v in variables.items()}  # theta_k = theta_q at start
    variables[QUEUE] = {
        'keys': l2_normalize(jax.random.normal(k_queue, (queue_size, proj_dim))),
        'ptr': jnp.zeros((), jnp.int32)}
    return variables

  def loss(variables, batch, rng):
    k1, k2, k_drop = jax.random.split(rng, 3)
    x = s.images(batch)
    x_q, x_k = s.views(k1, x), s.views(k2, x)
    own = [k for k in variables if k not in ('params', MOMENTUM, QUEUE)]  # e.g. batch_stats
    q, updates = model.apply({k: variables[k] for k in ['params', *own]}, x_q, train=True,
                             rngs={'dropout': k_drop}, mutable=own)
    # The key encoder: first its momentum update from the current query weights, then the
    # keys, with no gradient to either encoder.
    key_vars = jax.lax.stop_gradient(variables[MOMENTUM])
    params_q = jax.lax.stop_gradient(variables['params'])
    key_params = jax.tree.map(lambda k, q_: m * k + (1 - m) * q_, key_vars['params'], params_q)
    key_state = [k for k in key_vars if k != 'params']
    k, key_updates = model.apply({**key_vars, 'params': key_params}, x_k, train=True,
                                 rngs={'dropout': k_drop}, mutable=key_state)
    k = jax.lax.stop_gradient(l2_normalize(k))
    queue = jax.lax.stop_gradient(variables[QUEUE])
    value, acc = info_nce(q, k, queue['keys'], tau)
    keys = gather(k, s.axis_name)
    ptr = queue['ptr']
    new_queue = {'keys': jax.lax.dynamic_update_slice(queue['keys'], keys, (ptr, 0)),
                 'ptr': (ptr + keys.shape[0]) % queue_size}
    updates = {**updates, MOMENTUM: {**key_vars, **key_updates, 'params': key_params},
               QUEUE: new_queue}
    return value, ({'loss': value, 'contrastive_accuracy': acc}, updates)

  def features(variables, batch):
    query = {k: v for k, v in variables.items() if k not in (MOMENTUM, QUEUE)}
    return model.apply(query, s.images(batch), train=False, method='represent')

  return Task(init=init, loss=loss, example_batch=s.example_batch, preprocess=s.preprocess(),
              features=features)
