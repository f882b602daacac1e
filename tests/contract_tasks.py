"""Test tasks that use each part of the Task contract the loop's second edition added
(`config.task = 'contract_tasks'`, with tests/ on the path; `task_kwargs.kind` picks one):

  epochs    `make_step`: each step runs 2 epochs of 2 shuffled minibatches over its batch
            with the library's `supervised` step (PPO's shape), on the digits;
  no_input  `input = no_input`: reads no data; each step draws its own regression points
            from its rng; `evaluate_run` reports the error on a fixed grid;
  graphs    `collate`: each digit is a graph of its lit pixels (4-neighbour edges; sizes
            differ), concatenated into static padded budgets; a two-layer message-passing
            network classifies them.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from arch.task import ConfigError, Task, no_input, parse_options

EPOCHS, MINIBATCHES = 2, 2
MAX_NODES = 64               # an 8x8 digit has at most 64 lit pixels
MAX_EDGES = 4 * MAX_NODES    # each directed 4-neighbour edge


@dataclasses.dataclass(frozen=True)
class Options:
  kind: str = 'epochs'  # epochs | no_input | graphs


class Mlp(nn.Module):
  features: tuple = (16,)
  out: int = 10

  @nn.compact
  def __call__(self, x):
    for f in self.features:
      x = nn.relu(nn.Dense(f)(x))
    return nn.Dense(self.out)(x)


def make(config) -> Task:
  opts = parse_options(Options, config)
  makers = {'epochs': _epochs, 'no_input': _no_input, 'graphs': _graphs}
  if opts.kind not in makers:
    raise ConfigError(f'task_kwargs.kind={opts.kind!r}; valid: {", ".join(makers)}')
  return makers[opts.kind]()


# ----------------------------------------------------------------------------- epochs


def _classify(model):

  def loss(variables, batch, rng):
    del rng
    logits = model.apply(variables, batch['image'].reshape(batch['image'].shape[0], -1) / 16.0)
    value = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    return value, ({'accuracy': (logits.argmax(-1) == batch['label']).mean()}, {})

  def evaluate(variables, batch):
    logits = model.apply(variables, batch['image'].reshape(batch['image'].shape[0], -1) / 16.0)
    return {'accuracy': (logits.argmax(-1) == batch['label']).astype(jnp.float32)}

  return loss, evaluate


def epochs_step(builders, loss):
  """Each call: EPOCHS passes over the batch in MINIBATCHES shuffled minibatches, one
  `supervised(loss)` update each, in a scan; metrics averaged over the updates."""
  update = builders.supervised(loss)

  def step(state, batch, rng):
    n = next(iter(batch.values())).shape[0]

    def epoch(state, e):
      perm = jax.random.permutation(jax.random.fold_in(rng, e), n)
      mbs = jax.tree.map(lambda x: x[perm].reshape(MINIBATCHES, n // MINIBATCHES, *x.shape[1:]),
                         batch)

      def minibatch(state, xs):
        i, mb = xs
        return update(state, mb, jax.random.fold_in(rng, 100 * e + i))

      return jax.lax.scan(minibatch, state, (jnp.arange(MINIBATCHES), mbs))

    state, metrics = jax.lax.scan(epoch, state, jnp.arange(EPOCHS))
    return state, jax.tree.map(jnp.mean, metrics)

  return step


def _epochs():
  model = Mlp()
  loss, evaluate = _classify(model)
  return Task(
      init=lambda rng, batch: model.init(rng, jnp.zeros((1, 64))),
      loss=loss, evaluate=evaluate,
      example_batch=lambda b: {'image': jax.ShapeDtypeStruct((b, 8, 8, 1), jnp.uint8),
                               'label': jax.ShapeDtypeStruct((b,), jnp.int32)},
      make_step=lambda builders: epochs_step(builders, loss))


# --------------------------------------------------------------------------- no input


def target(x):
  return jnp.sin(3 * x)


def _no_input():
  model = Mlp(features=(32, 32), out=1)
  points = 64

  def loss(variables, batch, rng):
    assert not batch  # the loop hands a task without input empty batches
    x = jax.random.uniform(rng, (points, 1), minval=-1, maxval=1)
    value = jnp.mean((model.apply(variables, x) - target(x)) ** 2)
    return value, ({}, {})

  def evaluate_run(variables, rng):
    del rng
    x = jnp.linspace(-1, 1, 101)[:, None]
    return {'grid_mse': jnp.mean((model.apply(variables, x) - target(x)) ** 2)}

  return Task(init=lambda rng, batch: model.init(rng, jnp.zeros((1, 1))), loss=loss,
              example_batch=lambda b: {}, input=no_input, evaluate_run=evaluate_run)


# ----------------------------------------------------------------------------- graphs


def digit_graph(example):
  """An 8x8 digit as a graph: its lit pixels are the nodes (features: intensity / 16, row
  / 7, column / 7), directed edges join 4-neighbours."""
  image = np.asarray(example['image']).reshape(8, 8)
  rows, cols = np.nonzero(image)
  index = -np.ones((8, 8), np.int64)
  index[rows, cols] = np.arange(len(rows))
  senders, receivers = [], []
  for r, c in zip(rows, cols):
    for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
      rr, cc = r + dr, c + dc
      if 0 <= rr < 8 and 0 <= cc < 8 and index[rr, cc] >= 0:
        senders.append(index[r, c])
        receivers.append(index[rr, cc])
  nodes = np.stack([image[rows, cols] / 16.0, rows / 7.0, cols / 7.0], -1).astype(np.float32)
  return {'nodes': nodes, 'senders': np.asarray(senders, np.int32),
          'receivers': np.asarray(receivers, np.int32), 'label': np.int32(example['label'])}


def collate(graphs):
  """G graphs concatenated into budgets of G * MAX_NODES nodes and G * MAX_EDGES edges:
  node indices offset per graph; padding nodes belong to graph G (dropped by the readout)
  and padding edges join padding node -1 to itself."""
  g = len(graphs)
  n_budget, e_budget = g * MAX_NODES, g * MAX_EDGES
  nodes = np.zeros((n_budget, 3), np.float32)
  node_graph = np.full((n_budget,), g, np.int32)
  senders = np.full((e_budget,), n_budget - 1, np.int32)
  receivers = np.full((e_budget,), n_budget - 1, np.int32)
  n = e = 0
  for i, graph in enumerate(graphs):
    k, m = len(graph['nodes']), len(graph['senders'])
    nodes[n:n + k] = graph['nodes']
    node_graph[n:n + k] = i
    senders[e:e + m] = graph['senders'] + n
    receivers[e:e + m] = graph['receivers'] + n
    n, e = n + k, e + m
  if n == n_budget:
    raise ConfigError('graph batch fills its node budget; no padding node is left')
  return {'nodes': nodes, 'node_graph': node_graph, 'senders': senders,
          'receivers': receivers, 'label': np.asarray([x['label'] for x in graphs], np.int32)}


class GraphNet(nn.Module):
  width: int = 16

  @nn.compact
  def __call__(self, batch):
    """Logits (G, 10) of one collated shard."""
    g = batch['label'].shape[0]
    n = batch['nodes'].shape[0]
    real = (batch['node_graph'] < g).astype(jnp.float32)[:, None]
    h = nn.relu(nn.Dense(self.width)(batch['nodes'])) * real
    for _ in range(2):
      messages = jax.ops.segment_sum(h[batch['senders']], batch['receivers'], n)
      h = nn.relu(nn.Dense(self.width)(jnp.concatenate([h, messages], -1))) * real
    pooled = jax.ops.segment_sum(h, batch['node_graph'], g + 1)[:g]
    counts = jax.ops.segment_sum(real, batch['node_graph'], g + 1)[:g]
    return nn.Dense(10)(pooled / jnp.maximum(counts, 1.0))


def _graphs():
  model = GraphNet()

  def logits(variables, batch):  # batch: S collated shards on a leading axis
    return jax.vmap(lambda shard: model.apply(variables, shard))(batch)

  def loss(variables, batch, rng):
    del rng
    out = logits(variables, batch)
    value = optax.softmax_cross_entropy_with_integer_labels(out, batch['label']).mean()
    return value, ({'accuracy': (out.argmax(-1) == batch['label']).mean()}, {})

  def evaluate(variables, batch):
    return {'accuracy': (logits(variables, batch).argmax(-1) == batch['label']).astype(
        jnp.float32)}

  def example_batch(b):
    return {'nodes': jax.ShapeDtypeStruct((1, b * MAX_NODES, 3), jnp.float32),
            'node_graph': jax.ShapeDtypeStruct((1, b * MAX_NODES), jnp.int32),
            'senders': jax.ShapeDtypeStruct((1, b * MAX_EDGES), jnp.int32),
            'receivers': jax.ShapeDtypeStruct((1, b * MAX_EDGES), jnp.int32),
            'label': jax.ShapeDtypeStruct((1, b), jnp.int32)}

  def init(rng, batch):
    shard = jax.tree.map(lambda x: x[0], batch)
    return model.init(rng, {**shard, 'node_graph': jnp.zeros_like(shard['node_graph'])})

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              preprocess=digit_graph, collate=collate)
