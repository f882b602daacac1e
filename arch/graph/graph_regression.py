"""Graph regression: a network maps each graph of a batch to real targets (MPNN on molecule-
like graphs); squared error on standardised targets, mean absolute error reported.

Config keys read: `model_name`, `model` (a `Model(num_targets=...)` mapping an `ops.Graph`
to (G + 1, num_targets), the padding graph last, e.g. arch/graph/mpnn.py), and
`task_kwargs`, the fields of `Options`. Examples are graphs: `nodes` (n, F) float,
`edges` (e, Fe) float (optional: `edge_features=0`), `senders` and `receivers` (e,) int
(directed edges, local node ids) and `target` (num_targets,) float.

`collate` concatenates each shard's G graphs into budgets of G * max_nodes + 1 nodes and
G * max_edges edges (arch/graph/ops.py); the loop stacks the S shards of a batch on a
leading axis and the network runs on each shard (vmap), so a batch shards over devices by
graph. The network predicts z and the prediction is `target_mean + target_std * z`; the
loss is the mean over the batch's graphs of the squared error of z against the
standardised target (the paper's MSE). Evaluation reports `mae`, the mean over graphs and
targets of |prediction - target| in the target's units, and `loss`.
"""

import dataclasses

import jax
import jax.numpy as jnp

import arch
from arch.graph import ops
from arch.task import ConfigError, Task, parse_options


@dataclasses.dataclass(frozen=True)
class Options:
  """Graph regression's task_kwargs."""
  num_targets: int = 1
  node_features: int = 0    # F of the examples' `nodes`
  edge_features: int = 0    # Fe of their `edges`; 0: the examples have none
  max_nodes: int = 0        # node budget per graph of a collated batch
  max_edges: int = 0        # (directed) edge budget per graph
  target_mean: float = 0.0  # standardisation of the targets (the train split's statistics)
  target_std: float = 1.0


def make(config) -> Task:
  opts = parse_options(Options, config)
  if opts.node_features < 1 or opts.max_nodes < 1 or opts.max_edges < 0:
    raise ConfigError(f'task_kwargs.node_features={opts.node_features}, max_nodes='
                      f'{opts.max_nodes}, max_edges={opts.max_edges}: set them to the '
                      f'dataset\'s feature width and its largest graph')
  if opts.target_std <= 0:
    raise ConfigError(f'task_kwargs.target_std={opts.target_std} must be positive')
  model = arch.model_from_config(config, num_targets=opts.num_targets)
  edge_keys = ('edges',) if opts.edge_features else ()

  def predict(variables, batch):
    """Standardised predictions (S, G + 1, num_targets) of S collated shards."""
    return jax.vmap(lambda b: model.apply(variables, ops.from_batch(b)))(batch)

  def errors(variables, batch):
    """Per graph (S, G): squared error of the standardised prediction, absolute error of
    the prediction (each a mean over targets)."""
    z = predict(variables, batch)[:, :-1].astype(jnp.float32)  # drop the padding graph
    target = batch['target'][:, :-1].astype(jnp.float32)
    z_target = (target - opts.target_mean) / opts.target_std
    squared = jnp.mean((z - z_target) ** 2, -1)
    absolute = jnp.mean(jnp.abs(opts.target_mean + opts.target_std * z - target), -1)
    return squared, absolute

  def loss(variables, batch, rng):
    del rng  # deterministic network
    squared, absolute = errors(variables, batch)
    return squared.mean(), ({'mae': absolute.mean()}, {})

  def evaluate(variables, batch):
    squared, absolute = errors(variables, batch)
    return {'loss': squared, 'mae': absolute}

  def collate(graphs):
    try:
      return ops.pad_graphs(graphs, opts.max_nodes, opts.max_edges, node_keys=('nodes',),
                            edge_keys=edge_keys, graph_keys=('target',))
    except ValueError as e:
      raise ConfigError(f'{e}; raise task_kwargs.max_nodes / max_edges') from None

  def example_batch(batch_size):
    n, e = batch_size * opts.max_nodes + 1, batch_size * opts.max_edges
    shape = lambda *s: (1,) + s  # one shard
    batch = {'nodes': jax.ShapeDtypeStruct(shape(n, opts.node_features), jnp.float32),
             'senders': jax.ShapeDtypeStruct(shape(e), jnp.int32),
             'receivers': jax.ShapeDtypeStruct(shape(e), jnp.int32),
             'n_node': jax.ShapeDtypeStruct(shape(batch_size + 1), jnp.int32),
             'n_edge': jax.ShapeDtypeStruct(shape(batch_size + 1), jnp.int32),
             'target': jax.ShapeDtypeStruct(shape(batch_size + 1, opts.num_targets),
                                            jnp.float32)}
    if opts.edge_features:
      batch['edges'] = jax.ShapeDtypeStruct(shape(e, opts.edge_features), jnp.float32)
    return batch

  def init(rng, batch):
    graph = ops.from_batch(jax.tree.map(lambda x: x[0], batch))
    return model.init({'params': rng}, graph)

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              collate=collate)
