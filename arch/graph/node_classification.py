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

Minibatches of target nodes (`batch_nodes` > 0; GraphSAGE's Algorithm 2, for graphs too
large to run whole): each training step draws `batch_nodes` labelled nodes of every graph
(uniformly, without replacement; fewer where a graph has fewer) and their computation trees
with `fanouts` (S_1, ..., S_K) sampled neighbours per level (`ops.sample_tree`), and the
network runs on the trees (`ops.tree_graph`) with whole neighbourhoods: a K-layer network
then computes at each target what it computes on the sampled K-hop neighbourhood. The
loss is over the targets. Every graph draws from its own key (the step's key folded with
the graph's place in the global batch), so a batch samples the same trees on 1 device or
8. Evaluation still runs on the whole graphs.
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
  batch_nodes: int = 0    # > 0: train on this many sampled target nodes per graph
  fanouts: tuple = ()     # with batch_nodes: (S_1, ..., S_K) neighbours sampled per level


def sample_targets(key, g, n_node, mask_N, max_nodes: int, count: int):
  """(nodes (count,) int, real (count,) bool): `count` labelled nodes (`mask_N`) of graph g
  of a batch, uniformly without replacement (the smallest of uniform scores over its at
  most `max_nodes` nodes); the entries past its number of labelled nodes are not real."""
  offset = jnp.cumsum(n_node)[g] - n_node[g]
  local = jnp.arange(max_nodes)
  labelled = (local < n_node[g]) & mask_N[jnp.clip(offset + local, 0, mask_N.shape[0] - 1)]
  score = jnp.where(labelled, jax.random.uniform(key, (max_nodes,)), 2.0)
  neg_top, order = jax.lax.top_k(-score, count)
  return (offset + order).astype(jnp.int32), neg_top > -2.0


def make(config) -> Task:
  opts = parse_options(Options, config)
  if opts.node_features < 1 or opts.max_nodes < 1 or opts.max_edges < 0:
    raise ConfigError(f'task_kwargs.node_features={opts.node_features}, max_nodes='
                      f'{opts.max_nodes}, max_edges={opts.max_edges}: set them to the '
                      f'dataset\'s feature width and its largest graph')
  if config.model.get('num_classes', opts.num_classes) != opts.num_classes:
    raise ConfigError(f'config.model.num_classes={config.model.num_classes} but '
                      f'config.task_kwargs.num_classes={opts.num_classes}; make them agree')
  if opts.batch_nodes:
    if not opts.fanouts or min(opts.fanouts) < 1 or opts.batch_nodes > opts.max_nodes:
      raise ConfigError(f'task_kwargs.batch_nodes={opts.batch_nodes} needs fanouts (one '
                        f'positive sample size per layer, got {tuple(opts.fanouts)}) and at '
                        f'most max_nodes={opts.max_nodes} targets')
    if config.model.get('sample_sizes'):
      raise ConfigError('config.model.sample_sizes samples the whole graph\'s neighbourhoods; '
                        'with task_kwargs.batch_nodes the trees are sampled by fanouts: '
                        'leave sample_sizes empty')
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

  def minibatch_terms(variables, batch, rng):
    """Per target node (S, G * T): cross-entropy, correct and real (floats)."""
    s, g = batch['n_node'].shape[0], batch['n_node'].shape[1] - 1
    sample_rng, dropout_rng = jax.random.split(rng)
    graph_keys = jax.vmap(lambda i: jax.random.fold_in(sample_rng, i))(
        jnp.arange(s * g)).reshape(s, g)

    def shard(b, keys_G, key):
      graph = ops.from_batch(b)
      adj = ops.adjacency(graph.senders, graph.receivers, graph.nodes.shape[0])
      roots, real = jax.vmap(lambda k, i: sample_targets(
          jax.random.fold_in(k, 0), i, graph.n_node, b['mask'], opts.max_nodes,
          opts.batch_nodes))(keys_G, jnp.arange(g))
      ids, valid = jax.vmap(lambda k, r, v: ops.sample_tree(
          jax.random.fold_in(k, 1), adj, r, v, opts.fanouts))(keys_G, roots, real)
      tree = ops.tree_graph(graph.nodes, [x.reshape(-1) for x in ids],
                            [x.reshape(-1) for x in valid])
      dropout, sample = jax.random.split(key)
      out = model.apply(variables, tree, train=True, rngs={'dropout': dropout,
                                                           'sample': sample})
      roots, real = roots.reshape(-1), real.reshape(-1).astype(jnp.float32)
      out_TC = out[:roots.shape[0]].astype(jnp.float32)
      label = b['label'][roots]
      xent = optax.softmax_cross_entropy_with_integer_labels(out_TC, label)
      correct = (out_TC.argmax(-1) == label).astype(jnp.float32)
      return xent * real, correct * real, real

    return jax.vmap(shard)(batch, graph_keys, jax.random.split(dropout_rng, s))

  def loss(variables, batch, rng):
    if opts.batch_nodes:
      xent, correct, labelled = minibatch_terms(variables, batch, rng)
    else:
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
