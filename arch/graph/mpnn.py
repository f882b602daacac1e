"""Message passing neural network, MPNN (Gilmer, Schoenholz, Riley, Vinyals & Dahl 2017,
"Neural message passing for quantum chemistry"), with the set2set readout (Vinyals, Bengio
& Kudlur 2016, "Order matters: sequence to sequence for sets").

The paper's best configuration, per graph:

  h_v^0 = Dense(x_v)                     (the paper pads x_v with zeros to width D)
  m_v^{t+1} = sum_{w in N(v)} A(e_vw) h_w^t                     edge network message (eq. 4)
  h_v^{t+1} = GRU(h_v^t, m_v^{t+1})                             update, for t < T
  y = MLP(set2set({Dense([h_v^T || x_v]) : v in graph}))        readout

A(e) is a network (Dense-ReLU-Dense) from the edge's features to a D x D matrix; the
message and update weights are shared by the T steps, as in the paper. Set2set (the
"process" block of Vinyals et al., section 4.2) runs `readout_steps` times:

  q_t = LSTM(q*_{t-1});  a_v = softmax_v(m_v . q_t) over the graph's nodes
  r_t = sum_v a_v m_v;   q*_t = [q_t || r_t]               (q*_0 = 0; the readout is q*_T)

so it is invariant to the order of the nodes. `use_edge_features=False` is the edge-blind
baseline: the same network with every edge's features replaced by a constant, so A is one
learned matrix (messages still flow along the edges).

Dimension key: N nodes, E edges, G graphs + 1 (the padding graph), D width, F features
(see arch/graph/ops.py).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.graph import ops


class EdgeNetwork(nn.Module):
  """The matrices A(e_vw) (E, D, D) of every edge from its features (E, Fe)."""
  features: int
  hidden: int = 64

  @nn.compact
  def __call__(self, e_EF):
    d = self.features
    z = nn.relu(nn.Dense(self.hidden, name='hidden')(e_EF))
    # A's entries ~ 1/sqrt(D), so that A h keeps the scale of h.
    a = nn.Dense(d * d, kernel_init=nn.initializers.variance_scaling(
        1.0 / d, 'fan_in', 'truncated_normal'), name='matrix')(z)
    return a.reshape(e_EF.shape[0], d, d)


class Set2Set(nn.Module):
  """set2set readout (G, 2F) of node vectors (N, F) grouped by graph id (N,)."""
  steps: int = 3

  @nn.compact
  def __call__(self, m_NF, graph_ids_N, num_graphs: int):
    f = m_NF.shape[-1]
    lstm = nn.OptimizedLSTMCell(f, name='lstm')
    carry = (jnp.zeros((num_graphs, f), m_NF.dtype), jnp.zeros((num_graphs, f), m_NF.dtype))
    q_star_GF = jnp.zeros((num_graphs, 2 * f), m_NF.dtype)
    for _ in range(self.steps):
      carry, q_GF = lstm(carry, q_star_GF)
      score_N = jnp.sum(m_NF * q_GF[graph_ids_N], axis=-1)
      a_N = ops.segment_softmax(score_N, graph_ids_N, num_graphs)
      r_GF = ops.segment_sum(a_N[:, None] * m_NF, graph_ids_N, num_graphs)
      q_star_GF = jnp.concatenate([q_GF, r_GF], axis=-1)
    return q_star_GF


class Model(nn.Module):
  """MPNN: edge-network messages, GRU updates, set2set readout; outputs (G + 1, targets)."""
  features: int = 64          # D, the node state width
  steps: int = 3              # T message-passing steps (shared weights)
  edge_hidden: int = 64       # hidden width of the edge network A(e)
  readout_steps: int = 3      # set2set processing steps
  num_targets: int = 1
  use_edge_features: bool = True  # False: the edge-blind baseline (A one matrix)

  @nn.compact
  def __call__(self, graph: ops.Graph, train: bool = False):
    """Predictions (G + 1, num_targets) for every graph of the batch, the padding one last."""
    del train  # no dropout or sampling
    n = graph.nodes.shape[0]
    x_NF = graph.nodes.astype(jnp.float32)
    if self.use_edge_features and graph.edges is not None:
      e_EF = graph.edges.astype(jnp.float32)
    else:  # edge-blind: one constant feature, so A is one matrix (computed once, broadcast)
      e_EF = jnp.ones((1, 1), jnp.float32)
    h_ND = nn.Dense(self.features, name='embed')(x_NF)
    a_EDD = EdgeNetwork(self.features, self.edge_hidden, name='message')(e_EF)
    gru = nn.GRUCell(self.features, name='update')
    for _ in range(self.steps):
      if a_EDD.shape[0] == 1:  # edge-blind
        msg_ED = h_ND[graph.senders] @ a_EDD[0].T
      else:
        msg_ED = jnp.einsum('eij,ej->ei', a_EDD, h_ND[graph.senders])
      m_ND = ops.segment_sum(msg_ED, graph.receivers, n)
      h_ND, _ = gru(h_ND, m_ND)
    num_graphs = graph.n_node.shape[0]
    ids_N = ops.graph_ids(graph.n_node, n)
    m_ND = nn.Dense(self.features, name='read')(jnp.concatenate([h_ND, x_NF], axis=-1))
    q_GD = Set2Set(self.readout_steps, name='set2set')(m_ND, ids_N, num_graphs)
    z = nn.relu(nn.Dense(self.features, name='head_hidden')(q_GD))
    return nn.Dense(self.num_targets, name='head')(z)


TINY = dict(features=8, edge_hidden=8, steps=2, readout_steps=2)
