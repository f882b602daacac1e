"""GraphSAGE (Hamilton, Ying & Leskovec 2017, "Inductive representation learning on large
graphs").

Layer k of Algorithm 1, for every node v with neighbourhood N(v) (its in-neighbours):

  h_N(v) = AGGREGATE_k({h_u : u in N(v)})                                 (line 4)
  h_v = relu(W_k [h_v || h_N(v)])                                         (line 5)
  h_v = h_v / ||h_v||_2                                                   (line 7)

with the aggregators of section 3.3: 'mean' (the elementwise mean of the h_u), 'pool'
(max-pooling: the elementwise max of relu(W_pool h_u + b)) and 'lstm' (an LSTM run over
the h_u in a random order, its last hidden state; neither symmetric nor invariant to that
order, as the paper notes). A Dense layer on the last h_v gives the logits, as in the
paper's supervised models.

Neighbourhoods: with `sample_sizes` (S_1, ..., S_K) each training pass draws S_k neighbours
of every node for layer k uniformly with replacement (the paper's fixed-size samples, e.g.
(25, 10)); a node without neighbours aggregates nothing (zeros). Evaluation, and training
without `sample_sizes`, use the whole neighbourhood; the LSTM then reads at most
`max_degree` neighbours per node, in edge order at evaluation and shuffled in training.
Randomness comes from the 'sample' rng stream. (This samples every node's neighbours, the
full-batch form; the paper's minibatches of target nodes with their sampled computation
trees are the node-classification task's `batch_nodes` and `fanouts`, which run this
network on the trees: configs/sage_sbm.py.)

Dimension key: N nodes, E edges, W neighbours per node in a table, F features
(see arch/graph/ops.py).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.graph import ops
from arch.task import ConfigError

AGGREGATORS = ('mean', 'pool', 'lstm')


class LSTMAggregator(nn.Module):
  """The hidden state of an LSTM after each node's neighbour sequence (N, W, F), whose
  valid entries come first; zeros for a node with none."""
  features: int

  @nn.compact
  def __call__(self, x_NWF, valid_NW):
    length_N = valid_NW.sum(-1)
    (_, h_NF), _ = nn.RNN(nn.OptimizedLSTMCell(self.features), return_carry=True,
                          name='lstm')(x_NWF, seq_lengths=length_N)
    return jnp.where(length_N[:, None] > 0, h_NF, 0)


class SAGEConv(nn.Module):
  """One GraphSAGE layer (Algorithm 1, lines 4-7). Neighbourhoods come as an edge list
  (senders, receivers, valid) for 'mean' and 'pool', as a table (idx, valid) (N, W) for
  'lstm'."""
  features: int
  aggregator: str = 'mean'
  normalize: bool = True

  @nn.compact
  def __call__(self, h_NF, neighbours):
    n = h_NF.shape[0]
    if self.aggregator == 'lstm':
      idx_NW, valid_NW = neighbours
      agg_NF = LSTMAggregator(self.features, name='aggregate')(h_NF[idx_NW], valid_NW)
    else:
      senders, receivers, valid = neighbours
      if self.aggregator == 'mean':
        agg_NF = ops.segment_mean(h_NF[senders], receivers, n, valid)
      else:  # pool
        msg_EF = nn.relu(nn.Dense(self.features, name='pool')(h_NF)[senders])
        agg_NF = ops.segment_max(msg_EF, receivers, n, valid)
    out_NF = nn.relu(nn.Dense(self.features, name='kernel')(
        jnp.concatenate([h_NF, agg_NF], axis=-1)))
    if self.normalize:
      out_NF = out_NF * jax.lax.rsqrt(jnp.maximum(jnp.sum(out_NF ** 2, -1, keepdims=True),
                                                  1e-12))
    return out_NF


class Model(nn.Module):
  """GraphSAGE: SAGE layers over (sampled) neighbourhoods, then a Dense layer to logits."""
  hidden: tuple = (16, 16)   # widths of the K layers
  num_classes: int = 2
  aggregator: str = 'mean'   # mean | pool | lstm
  sample_sizes: tuple = ()   # S_k neighbours per node at layer k in training; (): all
  max_degree: int = 32       # the LSTM's sequence length over whole neighbourhoods
  dropout: float = 0.0       # on every layer's input, in training
  normalize: bool = True     # h_v / ||h_v||_2 after each layer (Algorithm 1, line 7)

  def __post_init__(self):  # bad options fail when the model is built, not at init
    if self.aggregator not in AGGREGATORS:
      raise ConfigError(f'unknown GraphSAGE aggregator {self.aggregator!r}; valid: '
                        f'{", ".join(AGGREGATORS)}')
    if self.sample_sizes and len(self.sample_sizes) != len(self.hidden):
      raise ConfigError(f'sample_sizes {tuple(self.sample_sizes)} needs one size per layer '
                        f'of hidden {tuple(self.hidden)}')
    super().__post_init__()

  @nn.compact
  def __call__(self, graph: ops.Graph, train: bool = False):
    """Logits (N, num_classes) of every node of `graph`."""
    n = graph.nodes.shape[0]
    h = graph.nodes.astype(jnp.float32)
    for k, width in enumerate(self.hidden):
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
      neighbours = self._neighbours(graph, n, k, train)
      h = SAGEConv(width, self.aggregator, self.normalize, name=f'sage{k}')(h, neighbours)
    return nn.Dense(self.num_classes, name='head')(h)

  def _neighbours(self, graph, n, k, train):
    """Layer k's neighbourhoods in the form its aggregator reads (see SAGEConv)."""
    if train and self.sample_sizes:
      table = ops.sample_neighbours(self.make_rng('sample'), graph.senders, graph.receivers,
                                    n, int(self.sample_sizes[k]))
    elif self.aggregator == 'lstm':
      rng = self.make_rng('sample') if train else None
      table = ops.neighbour_table(graph.senders, graph.receivers, n, self.max_degree, rng)
    else:
      return graph.senders, graph.receivers, None
    return table if self.aggregator == 'lstm' else ops.table_edges(*table)


TINY = dict(hidden=(4, 4))
