"""Graph batches, and the segment operations that message passing is built from.

A batch is one graph: G graphs concatenated (graph g's node indices offset by the nodes of
the graphs before it) and padded to fixed budgets of N nodes and E edges, so that a jitted
network compiles once for every batch. The padding is one more graph, the last: it holds
the padding nodes (at least one) and the padding edges, which all join the first padding
node to itself. No edge joins a real node to a padding node, so padding changes no real
node's messages, degree or attention; losses and readouts leave it out with `node_mask`
and `graph_mask`.

Edges are directed: a message flows from `senders[e]` to `receivers[e]`, and a node's
neighbourhood N(i) is the senders of its in-edges; an undirected graph lists each edge both
ways.

Dimension key:
  N  nodes of the batch (the budget, padding included)
  E  edges of the batch (the budget)
  G  graphs of the batch without the padding graph (`n_node` has G + 1 entries)
  F  features   W  width of a neighbour table (samples per node, or a maximum degree)
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Graph(NamedTuple):
  """Graphs concatenated into one padded batch (see the module docstring)."""
  nodes: Any      # (N, F) node features
  edges: Any      # (E, Fe) edge features, or None
  senders: Any    # (E,) int: the node each directed edge leaves
  receivers: Any  # (E,) int: the node it enters
  n_node: Any     # (G + 1,) int: nodes per graph, the padding graph last
  n_edge: Any     # (G + 1,) int: edges per graph, the padding graph last
  globals: Any    # (G + 1, Fg) graph features, or None


def from_batch(batch: dict) -> Graph:
  """The Graph of a batch dict's keys of the same names ('edges' and 'globals' optional)."""
  return Graph(**{k: batch.get(k) for k in Graph._fields})


# ------------------------------------------------------------------- host batching


def pad_graphs(graphs, max_nodes: int, max_edges: int, node_keys=('nodes',),
               edge_keys=(), graph_keys=()) -> dict:
  """Host batching (numpy): `graphs`, dicts holding 'senders', 'receivers', per-node arrays
  `node_keys` (the first one's length is the node count), per-edge arrays `edge_keys` and
  per-graph values `graph_keys`, concatenated into budgets of G * max_nodes + 1 nodes and
  G * max_edges edges. Returns those keys and 'n_node', 'n_edge' (G + 1,); padding rows of
  every array are zeros, padding edges join the first padding node to itself.

  Raises ValueError when a graph is larger than a per-graph budget."""
  g = len(graphs)
  n_budget, e_budget = g * max_nodes + 1, g * max_edges
  n_node = np.zeros((g + 1,), np.int32)
  n_edge = np.zeros((g + 1,), np.int32)
  for i, graph in enumerate(graphs):
    n_node[i], n_edge[i] = len(graph[node_keys[0]]), len(graph['senders'])
    if n_node[i] > max_nodes or n_edge[i] > max_edges:
      raise ValueError(f'a graph of {n_node[i]} nodes and {n_edge[i]} edges exceeds the '
                       f'budget of {max_nodes} nodes and {max_edges} edges per graph')
  n_real, e_real = int(n_node.sum()), int(n_edge.sum())
  n_node[g], n_edge[g] = n_budget - n_real, e_budget - e_real

  def concat(key, budget):
    parts = [np.asarray(graph[key]) for graph in graphs]
    out = np.zeros((budget,) + parts[0].shape[1:], parts[0].dtype)
    out[:sum(len(p) for p in parts)] = np.concatenate(parts)
    return out

  batch = {k: concat(k, n_budget) for k in node_keys}
  batch.update({k: concat(k, e_budget) for k in edge_keys})
  for k in graph_keys:
    values = np.stack([np.asarray(graph[k]) for graph in graphs])
    batch[k] = np.concatenate([values, np.zeros_like(values[:1])])
  offsets = np.repeat(np.cumsum(n_node[:g]) - n_node[:g], n_edge[:g])
  for k in ('senders', 'receivers'):
    ids = np.full((e_budget,), n_real, np.int32)  # padding edges: first padding node
    ids[:e_real] = np.concatenate([np.asarray(graph[k]) for graph in graphs]) + offsets
    batch[k] = ids
  batch['n_node'], batch['n_edge'] = n_node, n_edge
  return batch


# ------------------------------------------------------------------------ masks


def graph_ids(n_counts, total: int):
  """(total,) int32: the graph of each of `total` items listed graph by graph (nodes with
  `n_node`, edges with `n_edge`)."""
  ends = jnp.cumsum(n_counts)
  return jnp.searchsorted(ends, jnp.arange(total), side='right').astype(jnp.int32)


def node_mask(graph: Graph):
  """(N,) bool: the node belongs to a real graph (not the padding graph)."""
  return graph_ids(graph.n_node, graph.nodes.shape[0]) < graph.n_node.shape[0] - 1


def edge_mask(graph: Graph):
  """(E,) bool: the edge belongs to a real graph."""
  return graph_ids(graph.n_edge, graph.senders.shape[0]) < graph.n_edge.shape[0] - 1


def graph_mask(graph: Graph):
  """(G + 1,) bool: every graph but the padding one."""
  return jnp.arange(graph.n_node.shape[0]) < graph.n_node.shape[0] - 1


# ------------------------------------------------------------------ segment ops


def _expand(x, like):
  return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def segment_sum(data, segment_ids, num_segments: int):
  """sum_{e: id_e = i} data_e for every segment i (rows of `data` are the items)."""
  return jax.ops.segment_sum(data, segment_ids, num_segments)


def segment_count(segment_ids, num_segments: int, mask=None):
  """(num_segments,) float32: the (unmasked) items of each segment."""
  ones = jnp.ones(segment_ids.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
  return jax.ops.segment_sum(ones, segment_ids, num_segments)


def segment_mean(data, segment_ids, num_segments: int, mask=None):
  """The mean of each segment's rows (those with `mask` True); 0 for an empty segment."""
  if mask is not None:
    data = jnp.where(_expand(mask, data), data, 0)
  total = jax.ops.segment_sum(data, segment_ids, num_segments)
  count = segment_count(segment_ids, num_segments, mask)
  return total / _expand(jnp.maximum(count, 1.0), total).astype(total.dtype)


def segment_max(data, segment_ids, num_segments: int, mask=None):
  """The elementwise max of each segment's rows (those with `mask` True); 0 for an empty
  segment (where jax.ops.segment_max gives -inf)."""
  if mask is not None:
    data = jnp.where(_expand(mask, data), data, -jnp.inf)
  top = jax.ops.segment_max(data, segment_ids, num_segments)
  count = segment_count(segment_ids, num_segments, mask)
  return jnp.where(_expand(count > 0, top), top, 0)


def segment_softmax(logits, segment_ids, num_segments: int):
  """softmax over the rows of each segment, per trailing column: exp(x_e - m) / sum_{e' in
  segment} exp(x_e' - m), with m the segment's max (subtracted for stability)."""
  top = jax.ops.segment_max(logits, segment_ids, num_segments)
  top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0))
  z = jnp.exp(logits - top[segment_ids])
  return z / jax.ops.segment_sum(z, segment_ids, num_segments)[segment_ids]


# ---------------------------------------------------------------- neighbourhoods


def add_self_loops(senders, receivers, num_nodes: int):
  """The edges followed by one edge i -> i per node (A + I)."""
  loops = jnp.arange(num_nodes, dtype=senders.dtype)
  return jnp.concatenate([senders, loops]), jnp.concatenate([receivers, loops])


def _by_receiver(senders, receivers, num_nodes, rng=None):
  """The senders sorted by receiver (stably, or in a random order within each receiver with
  `rng`), each node's first position in that order, and its in-degree."""
  if rng is None:
    order = jnp.argsort(receivers, stable=True)
  else:
    order = jnp.lexsort((jax.random.uniform(rng, receivers.shape), receivers))
  sorted_receivers = receivers[order]
  nodes = jnp.arange(num_nodes)
  start = jnp.searchsorted(sorted_receivers, nodes, side='left')
  degree = jnp.searchsorted(sorted_receivers, nodes, side='right') - start
  return senders[order], start, degree


def neighbour_table(senders, receivers, num_nodes: int, width: int, rng=None):
  """(idx (N, W) int, valid (N, W) bool): each node's first W in-neighbours, in edge order
  (with `rng`: in a random order, as GraphSAGE's LSTM aggregator reads them), left-aligned;
  a node with more than W neighbours loses the rest."""
  if senders.shape[0] == 0:
    return (jnp.zeros((num_nodes, width), jnp.int32), jnp.zeros((num_nodes, width), bool))
  sorted_senders, start, degree = _by_receiver(senders, receivers, num_nodes, rng)
  pos = jnp.arange(width)
  valid = pos < degree[:, None]
  idx = sorted_senders[jnp.clip(start[:, None] + pos, 0, senders.shape[0] - 1)]
  return jnp.where(valid, idx, 0), valid


def sample_neighbours(rng, senders, receivers, num_nodes: int, k: int):
  """(idx (N, k) int, valid (N, k) bool): k in-neighbours of every node drawn uniformly with
  replacement (GraphSAGE's fixed-size neighbourhood sample); a node without neighbours gets
  k invalid entries."""
  if senders.shape[0] == 0:
    return jnp.zeros((num_nodes, k), jnp.int32), jnp.zeros((num_nodes, k), bool)
  adj = adjacency(senders, receivers, num_nodes)
  return _draw(jax.random.uniform(rng, (num_nodes, k)), adj, jnp.arange(num_nodes))


class Adjacency(NamedTuple):
  """In-neighbour lists (CSR): node i's in-neighbours are senders[start[i]:start[i] +
  degree[i]], in edge order."""
  senders: Any  # (E,) int, sorted by receiver
  start: Any    # (N,) int
  degree: Any   # (N,) int


def adjacency(senders, receivers, num_nodes: int) -> Adjacency:
  """The Adjacency of an edge list (one stable sort of the edges by receiver)."""
  return Adjacency(*_by_receiver(senders, receivers, num_nodes))


def _draw(u_RK, adj: Adjacency, nodes_R):
  """(idx (R, K), valid (R, K)): in-neighbour u * degree (rounded down) of each node of
  `nodes_R` for the uniforms u in [0, 1); a node without neighbours gets invalid entries."""
  degree_R = adj.degree[nodes_R]
  offset = jnp.minimum((u_RK * degree_R[:, None]).astype(jnp.int32),
                       jnp.maximum(degree_R[:, None] - 1, 0))
  last = max(adj.senders.shape[0] - 1, 0)
  idx = adj.senders[jnp.clip(adj.start[nodes_R][:, None] + offset, 0, last)]
  valid = jnp.broadcast_to(degree_R[:, None] > 0, u_RK.shape)
  return jnp.where(valid, idx, 0), valid


def sample_from(rng, adj: Adjacency, nodes_R, k: int):
  """(idx (R, k) int, valid (R, k) bool): k in-neighbours of each node of `nodes_R` drawn
  uniformly with replacement, as `sample_neighbours` draws them for every node."""
  if adj.senders.shape[0] == 0:
    return jnp.zeros(nodes_R.shape + (k,), jnp.int32), jnp.zeros(nodes_R.shape + (k,), bool)
  return _draw(jax.random.uniform(rng, nodes_R.shape + (k,)), adj, nodes_R)


def sample_tree(rng, adj: Adjacency, roots_R, valid_R, sizes):
  """GraphSAGE's minibatch computation trees (Hamilton et al. 2017, Algorithm 2) in the
  tree form of the authors' code: level 0 is the roots (the minibatch's target nodes); each
  node of level d gets its own uniform sample (with replacement) of S_{K-d} in-neighbours,
  level d + 1, for `sizes` = (S_1, ..., S_K) (layer k aggregates S_k samples: the roots'
  layer-K neighbourhood is the last size). Returns (ids, valid): per level d = 0..K, node
  ids (R * S_K * ... * S_{K-d+1},) and whether the entry is real (its parent is real and
  has neighbours); entry r of level d is a child of entry r // S_{K-d+1} of level d - 1."""
  ids, valid = [roots_R], [valid_R]
  for d, size in enumerate(reversed(tuple(sizes))):
    idx, ok = sample_from(jax.random.fold_in(rng, d), adj, ids[-1], int(size))
    ids.append(idx.reshape(-1))
    valid.append((ok & valid[-1][:, None]).reshape(-1))
  return tuple(ids), tuple(valid)


def tree_graph(nodes_NF, ids, valid) -> Graph:
  """The Graph of computation trees (`sample_tree`'s levels, each flattened; several
  batches of trees may be stacked along each level as long as every level keeps the same
  children per parent): the rows of every level in order, with features `nodes_NF[ids]`,
  one edge from each child to its parent, and one padding node last, on which the edges
  of invalid entries are parked. A message-passing network with K layers on this graph
  computes at the roots (rows 0..R-1) what GraphSAGE computes on the sampled trees."""
  ids_M = jnp.concatenate(ids)
  m = ids_M.shape[0]
  nodes = jnp.concatenate([nodes_NF[ids_M], jnp.zeros((1,) + nodes_NF.shape[1:],
                                                      nodes_NF.dtype)])
  offsets = np.cumsum([0] + [level.shape[0] for level in ids])
  senders, receivers = [], []
  for d in range(1, len(ids)):
    width = ids[d].shape[0] // ids[d - 1].shape[0]
    child = np.arange(ids[d].shape[0])
    senders.append(jnp.where(valid[d], offsets[d] + child, m))
    receivers.append(jnp.where(valid[d], offsets[d - 1] + child // width, m))
  senders = jnp.concatenate(senders).astype(jnp.int32)
  receivers = jnp.concatenate(receivers).astype(jnp.int32)
  e = senders.shape[0]
  return Graph(nodes=nodes, edges=None, senders=senders, receivers=receivers,
               n_node=jnp.array([m, 1], jnp.int32), n_edge=jnp.array([e, 0], jnp.int32),
               globals=None)


def table_edges(idx, valid):
  """The edge list (senders, receivers, valid) of a neighbour table: entry (i, w) is an
  edge idx[i, w] -> i."""
  n, w = idx.shape
  return idx.reshape(-1), jnp.repeat(jnp.arange(n, dtype=idx.dtype), w), valid.reshape(-1)
