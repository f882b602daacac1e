"""Graph attention network, GAT (Veličković et al. 2018, "Graph attention networks").

One head of a layer (section 2.1): z_i = W h_i; over the neighbourhood N(i) of node i
(its in-neighbours and i itself: a self-loop per node is added)

  e_ij = LeakyReLU(a^T [z_i || z_j]),  slope 0.2                         (1), (3)
  alpha_ij = softmax_j(e_ij) = exp(e_ij) / sum_{k in N(i)} exp(e_ik)      (2)
  h'_i = sum_{j in N(i)} alpha_ij z_j                                      (4)

with a = [a_dst; a_src], so a^T [z_i || z_j] = a_dst . z_i + a_src . z_j is two per-node
dot products gathered onto the edges. H heads with their own W and a run side by side;
hidden layers concatenate them, then ELU (5); the output layer averages them (6), giving
logits (the softmax is the objective's). Dropout (p = 0.6 in the paper) is applied to each
layer's input and to the normalised attention coefficients, in training. The paper's
transductive model: one hidden layer of 8 heads x 8 features, an output layer of 1 head
(Cora, Citeseer) or 8 averaged (Pubmed). Each layer also adds a bias, as the authors' code.

Each layer sows its coefficients alpha (E + N, H), over the edges then the self-loops (the
order of `ops.add_self_loops`), as 'intermediates'/'attention'.

Dimension key: N nodes, E edges, H heads, F features per head (see arch/graph/ops.py).
"""

import flax.linen as nn
import jax.numpy as jnp

from arch.graph import ops


class GraphAttention(nn.Module):
  """One multi-head graph attention layer: heads concatenated (N, H*F) or averaged (N, F)."""
  features: int   # F per head
  heads: int = 8
  concat: bool = True   # False: the mean over heads (the output layer, eq. 6)
  dropout: float = 0.6  # on the attention coefficients, in training
  negative_slope: float = 0.2

  @nn.compact
  def __call__(self, h_ND, senders, receivers, train: bool = False):
    n = h_ND.shape[0]
    z_NHF = nn.DenseGeneral((self.heads, self.features), use_bias=False,
                            kernel_init=nn.initializers.glorot_uniform(), name='kernel')(h_ND)
    init = nn.initializers.glorot_uniform(in_axis=-1, out_axis=-2)
    a_dst_HF = self.param('att_dst', init, (self.heads, self.features))
    a_src_HF = self.param('att_src', init, (self.heads, self.features))
    senders, receivers = ops.add_self_loops(senders, receivers, n)
    dst_NH = jnp.einsum('NHF,HF->NH', z_NHF, a_dst_HF)
    src_NH = jnp.einsum('NHF,HF->NH', z_NHF, a_src_HF)
    e_EH = nn.leaky_relu(dst_NH[receivers] + src_NH[senders], self.negative_slope)
    alpha_EH = ops.segment_softmax(e_EH, receivers, n)
    self.sow('intermediates', 'attention', alpha_EH)
    alpha_EH = nn.Dropout(self.dropout, deterministic=not train)(alpha_EH)
    out_NHF = ops.segment_sum(alpha_EH[..., None] * z_NHF[senders], receivers, n)
    if self.concat:
      out = out_NHF.reshape(n, self.heads * self.features)
    else:
      out = out_NHF.mean(axis=1)
    return out + self.param('bias', nn.initializers.zeros, out.shape[-1:])


class Model(nn.Module):
  """GAT: concatenated-head attention layers with ELU, an averaged-head output layer."""
  hidden: tuple = (8,)    # features per head of each hidden layer
  heads: int = 8          # heads of each hidden layer
  out_heads: int = 1      # heads of the output layer, averaged
  num_classes: int = 2
  dropout: float = 0.6    # on every layer's input and on the attention coefficients

  @nn.compact
  def __call__(self, graph: ops.Graph, train: bool = False):
    """Logits (N, num_classes) of every node of `graph`."""
    drop = nn.Dropout(self.dropout, deterministic=not train)
    h = graph.nodes.astype(jnp.float32)
    for i, width in enumerate(self.hidden):
      h = GraphAttention(width, self.heads, dropout=self.dropout, name=f'gat{i}')(
          drop(h), graph.senders, graph.receivers, train)
      h = nn.elu(h)
    return GraphAttention(self.num_classes, self.out_heads, concat=False,
                          dropout=self.dropout, name=f'gat{len(self.hidden)}')(
                              drop(h), graph.senders, graph.receivers, train)


TINY = dict(hidden=(4,), heads=2)
