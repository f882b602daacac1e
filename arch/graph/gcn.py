"""Graph convolutional network, GCN (Kipf & Welling 2017, "Semi-supervised classification
with graph convolutional networks").

One layer is eq. (2): H' = D^-1/2 (A + I) D^-1/2 H W + b, with A the adjacency (A_ij = 1
for an edge j -> i), I the self-loops and D_ii = sum_j (A + I)_ij. As a message passing:
node i receives h_j W / sqrt(d_i d_j) from every in-neighbour j and from itself. The model
is eq. (9) with any depth: dropout on each layer's input, ReLU between layers, logits out
(the softmax is the objective's). The paper's defaults: one hidden layer of 16, dropout
0.5. Edges must list an undirected graph both ways for the normalisation to be symmetric.

Dimension key: N nodes, E edges, F features (see arch/graph/ops.py).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.graph import ops


def normalized_edges(senders, receivers, num_nodes: int):
  """(senders, receivers, weights) of D^-1/2 (A + I) D^-1/2: the edges with a self-loop per
  node appended, weighted 1 / sqrt(d_sender d_receiver), d = in-degree + 1."""
  senders, receivers = ops.add_self_loops(senders, receivers, num_nodes)
  inv_sqrt_d_N = jax.lax.rsqrt(ops.segment_count(receivers, num_nodes))
  return senders, receivers, inv_sqrt_d_N[senders] * inv_sqrt_d_N[receivers]


class GraphConv(nn.Module):
  """H' = D^-1/2 (A + I) D^-1/2 H W + b (eq. 2), for edges from `normalized_edges`."""
  features: int

  @nn.compact
  def __call__(self, h_NF, senders, receivers, weights_E):
    xw_NF = nn.Dense(self.features, use_bias=False, name='kernel')(h_NF)  # X W first: cheaper
    out_NF = ops.segment_sum(xw_NF[senders] * weights_E[:, None], receivers, h_NF.shape[0])
    return out_NF + self.param('bias', nn.initializers.zeros, (self.features,))


class Model(nn.Module):
  """GCN: graph convolutions with dropout before each and ReLU between; node logits."""
  hidden: tuple = (16,)
  num_classes: int = 2
  dropout: float = 0.5

  @nn.compact
  def __call__(self, graph: ops.Graph, train: bool = False):
    """Logits (N, num_classes) of every node of `graph`."""
    edges = normalized_edges(graph.senders, graph.receivers, graph.nodes.shape[0])
    h = graph.nodes.astype(jnp.float32)
    widths = tuple(self.hidden) + (self.num_classes,)
    for i, width in enumerate(widths):
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
      h = GraphConv(width, name=f'conv{i}')(h, *edges)
      if i + 1 < len(widths):
        h = nn.relu(h)
    return h


TINY = dict(hidden=(4,))
