"""Node classification: softmax cross-entropy over the labelled nodes of graph batches, for
any network `Model(num_classes=...)` mapping an `ops.Graph` to node logits (N, classes)
(GCN, GAT, GraphSAGE).

Config keys read: `model_name`, `model`, and `task_kwargs`, the fields of `Options`.
Examples are graphs: `nodes` (n, F) float, `senders` and `receivers` (e,) int (directed
edges, local node ids), `label` (n,) int and `mask` (n,) bool, the nodes whose labels the
split uses. A transductive split (Kipf & Welling's semi-supervised setting) is the same
graph in every split with another mask; an inductive one has other graphs.

`collate` concatenates each shard's G graphs into budgets of G * max_nodes + 1 nodes and
G * max_edges edges (arch/graph/ops.py), so batches have static shapes; the loop stacks the
S shards of a batch on a leading axis, and the network runs on each shard (vmap). The loss
is the mean cross-entropy over the labelled nodes of the whole batch; evaluation sums
correct and labelled nodes per graph and reports `accuracy` = correct / labelled over the
split (and the mean `loss` over its labelled nodes), not a mean over graphs.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

import arch
from arch.graph import ops
from arch.task import ConfigError, Task, parse_options

NODE_KEYS = ('nodes', 'label', 'mask')


@dataclasses.dataclass(frozen=True)
class Options:
  """Node classification's task_kwargs."""
  num_classes: int = 2
  node_features: int = 0  # F of the examples' `nodes`
  max_nodes: int = 0      # node budget per graph of a collated batch
  max_edges: int = 0      # (directed) edge budget per graph


def make(config) -> Task:
  opts = parse_options(Options, config)
  if opts.node_features < 1 or opts.max_nodes < 1 or opts.max_edges < 0:
    raise ConfigError(f'task_kwargs.node_features={opts.node_features}, max_nodes='
                      f'{opts.max_nodes}, max_edges={opts.max_edges}: set them to the '
                      f'dataset\'s feature width and its largest graph')
  if config.model.get('num_classes', opts.num_classes) != opts.num_classes:
    raise ConfigError(f'config.model.num_classes={config.model.num_classes} but '
                      f'config.task_kwargs.num_classes={opts.num_classes}; make them agree')
  model = arch.model_from_config(config, num_classes=opts.num_classes)

  def logits(variables, batch, rng=None):
    """Node logits (S, N, classes) of S collated shards; training when `rng` is given."""

    def shard(graph_batch, key):
      graph = ops.from_batch(graph_batch)
      if key is None:
        return model.apply(variables, graph, train=False)
      dropout, sample = jax.random.split(key)
      return model.apply(variables, graph, train=True,
                         rngs={'dropout': dropout, 'sample': sample})

    if rng is None:
      return jax.vmap(lambda b: shard(b, None))(batch)
    keys = jax.random.split(rng, batch['nodes'].shape[0])
    return jax.vmap(shard)(batch, keys)

  def node_terms(out_SNC, batch):
    """Per node: cross-entropy, correct (float) and labelled (float) (S, N)."""
    labelled = batch['mask'].astype(jnp.float32)
    xent = optax.softmax_cross_entropy_with_integer_labels(out_SNC.astype(jnp.float32),
                                                           batch['label'])
    correct = (out_SNC.argmax(-1) == batch['label']).astype(jnp.float32)
    return xent * labelled, correct * labelled, labelled

  def loss(variables, batch, rng):
    xent, correct, labelled = node_terms(logits(variables, batch, rng), batch)
    count = jnp.maximum(labelled.sum(), 1.0)
    value = xent.sum() / count
    return value, ({'accuracy': correct.sum() / count}, {})

  def evaluate(variables, batch):
    terms = node_terms(logits(variables, batch), batch)

    def per_graph(n_node, xent, correct, labelled):  # one shard: sums over each graph's nodes
      ids = ops.graph_ids(n_node, xent.shape[0])
      return [ops.segment_sum(x, ids, n_node.shape[0])[:-1] for x in (xent, correct, labelled)]

    xent, correct, labelled = jax.vmap(per_graph)(batch['n_node'], *terms)
    return {'loss': xent, 'correct': correct, 'labelled': labelled}

  def finalize_eval(sums, count):
    del count  # graphs; the metrics are over labelled nodes
    labelled = max(float(sums['labelled']), 1.0)
    return {'accuracy': sums['correct'] / labelled, 'loss': sums['loss'] / labelled}

  def collate(graphs):
    try:
      return ops.pad_graphs(graphs, opts.max_nodes, opts.max_edges, node_keys=NODE_KEYS)
    except ValueError as e:
      raise ConfigError(f'{e}; raise task_kwargs.max_nodes / max_edges') from None

  def example_batch(batch_size):
    n, e = batch_size * opts.max_nodes + 1, batch_size * opts.max_edges
    shape = lambda *s: (1,) + s  # one shard
    return {'nodes': jax.ShapeDtypeStruct(shape(n, opts.node_features), jnp.float32),
            'senders': jax.ShapeDtypeStruct(shape(e), jnp.int32),
            'receivers': jax.ShapeDtypeStruct(shape(e), jnp.int32),
            'n_node': jax.ShapeDtypeStruct(shape(batch_size + 1), jnp.int32),
            'n_edge': jax.ShapeDtypeStruct(shape(batch_size + 1), jnp.int32),
            'label': jax.ShapeDtypeStruct(shape(n), jnp.int32),
            'mask': jax.ShapeDtypeStruct(shape(n), jnp.bool_)}

  def init(rng, batch):
    graph = ops.from_batch(jax.tree.map(lambda x: x[0], batch))
    return model.init({'params': rng, 'dropout': rng, 'sample': rng}, graph, train=False)

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch, collate=collate)
