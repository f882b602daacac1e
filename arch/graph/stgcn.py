"""Spatio-temporal graph convolutional network, ST-GCN (Yu, Yin & Zhu 2018, "Spatio-temporal
graph convolutional networks: a deep learning framework for traffic forecasting").

The input is a window of T past readings at the N nodes of one fixed graph (road sensors),
x (B, T, N, C). Two ST-Conv blocks each run

  gated temporal conv -> spatial graph conv -> gated temporal conv -> layer norm

and an output layer maps what is left of the time axis to H future steps per node.

- Gated temporal convolution (section 3.3): a 1-D convolution along time of width Kt,
  shared by every node, without padding (T shrinks by Kt - 1), giving 2C channels [P Q];
  the output is a GLU, P * sigmoid(Q). As in the authors' code a residual joins the input
  (its last T - Kt + 1 steps, channels zero-padded or projected by a 1x1 convolution to C)
  to P: (P + x) * sigmoid(Q).
- Spatial graph convolution (section 3.2), applied at every time step: the Chebyshev
  polynomial approximation, eq. (5),

    Theta *G x = sum_{k < K} T_k(L~) x Theta_k,  L~ = 2 L / lambda_max - I,
    L = I - D^-1/2 W D^-1/2,

  with W the weighted adjacency, D its degrees, T_0 = 1, T_1(y) = y and T_k = 2 y T_k-1 -
  T_k-2 (K = 3 terms, the paper's K_s); or its first-order approximation, eq. (6) with
  the renormalisation trick, theta D~^-1/2 (W + I) D~^-1/2 x (`spatial='gcn'`, the
  paper's ST-GCN(1st)). L~ is built from the edge list as a dense N x N matrix, so each
  L~ x is a matmul, as in the authors' code (`dense=False`: one weighted message pass
  over the edges, `ops.segment_sum`, O(E) memory for large sparse graphs). lambda_max is
  the largest eigenvalue of L, exact as in the authors' code; the caller may pass it (the
  forecasting task computes it on the host once per batch: with an eigendecomposition
  inside, a jitted forward-backward at batch 32 took 0.85 s against 0.36-0.60 s without,
  in one noisy measurement on a loaded CPU), else the network computes it, unless the
  `lambda_max` attribute fixes it (2 bounds it).
  As in the authors' code, a residual and a ReLU follow: relu(Theta *G x + x).
  `spatial='none'` replaces the graph convolution by a per-node linear layer (K = 1: the
  x Theta_0 term alone), the same network with no view of the graph: a per-node temporal
  model.
- Layer norm of each node's channels. (The authors' code normalises over nodes and
  channels together, with a scale and bias per node; here a node's forecast depends on
  the other nodes through the graph convolutions alone, so the temporal baseline stays
  per node, and relabelling the nodes permutes the outputs and nothing else.)
- Output layer: a gated temporal conv as wide as the remaining steps (time collapses to
  1), layer norm, a 1x1 conv with a sigmoid, and a per-node linear map to the H horizons
  at once (the authors' model predicts one step and feeds it back for more).

The paper's sizes: channels (64, 16, 64) in both blocks, Kt = 3, K_s = 3, T = 12 (one
hour of 5-minute readings). No dropout (the authors train with keep_prob 1).

Dimension key: B windows, T time steps, N nodes, C channels, E directed edges, H horizons.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.graph import ops

SPATIAL = ('cheb', 'gcn', 'none')


def normalized_weights(senders, receivers, weights_E, num_nodes: int):
  """w_e / sqrt(d_sender d_receiver) of D^-1/2 W D^-1/2, d = weighted in-degree (an edge
  list that holds each undirected edge both ways; a node without edges gets none)."""
  degree_N = ops.segment_sum(weights_E, receivers, num_nodes)
  inv_sqrt_N = jnp.where(degree_N > 0, jax.lax.rsqrt(jnp.maximum(degree_N, 1e-12)), 0.0)
  return weights_E * inv_sqrt_N[senders] * inv_sqrt_N[receivers]


def propagate(x_NF, senders, receivers, coef_E):
  """sum_e coef_e x[sender_e] into each receiver: (A x) for A_ij = coef of edge j -> i."""
  return ops.segment_sum(x_NF[senders] * coef_E[:, None], receivers, x_NF.shape[0])


def laplacian_matrix(senders, receivers, weights_E, num_nodes: int):
  """(N, N): L = I - D^-1/2 W D^-1/2, dense."""
  norm_E = normalized_weights(senders, receivers, weights_E, num_nodes)
  a_NN = jnp.zeros((num_nodes, num_nodes), norm_E.dtype).at[receivers, senders].add(norm_E)
  return jnp.eye(num_nodes, dtype=norm_E.dtype) - a_NN


def laplacian_lambda_max(senders, receivers, weights_E, num_nodes: int):
  """The largest eigenvalue of L = I - D^-1/2 W D^-1/2 (dense, O(N^3); no gradient)."""
  lap_NN = laplacian_matrix(senders, receivers, weights_E, num_nodes)
  return jax.lax.stop_gradient(jnp.linalg.eigvalsh(lap_NN)[-1])


def chebyshev_basis(x_NF, senders, receivers, weights_E, order: int, lambda_max=None):
  """(order, N, F): T_k(L~) x for k = 0..order-1, L~ = 2 L / lambda_max - I (the exact
  largest eigenvalue when lambda_max is None)."""
  n = x_NF.shape[0]
  if lambda_max is None:
    lambda_max = laplacian_lambda_max(senders, receivers, weights_E, n)
  norm_E = normalized_weights(senders, receivers, weights_E, n).astype(x_NF.dtype)
  scale = 2.0 / lambda_max

  def scaled_laplacian(y_NF):  # L~ y = (2 / lambda - 1) y - (2 / lambda) D^-1/2 W D^-1/2 y
    return (scale - 1.0) * y_NF - scale * propagate(y_NF, senders, receivers, norm_E)

  terms = [x_NF]
  if order > 1:
    terms.append(scaled_laplacian(x_NF))
  for _ in range(2, order):
    terms.append(2.0 * scaled_laplacian(terms[-1]) - terms[-2])
  return jnp.stack(terms)


def first_order_weights(senders, receivers, weights_E, num_nodes: int):
  """(senders, receivers, coef) of D~^-1/2 (W + I) D~^-1/2 (the renormalisation trick)."""
  senders, receivers = ops.add_self_loops(senders, receivers, num_nodes)
  weights_E = jnp.concatenate([weights_E, jnp.ones((num_nodes,), weights_E.dtype)])
  return senders, receivers, normalized_weights(senders, receivers, weights_E, num_nodes)


def _align(x_BTNC, features: int):
  """The residual input at `features` channels: zero-padded, or a 1x1 convolution."""
  c = x_BTNC.shape[-1]
  if c > features:
    return nn.Dense(features, name='align')(x_BTNC)
  if c < features:
    return jnp.pad(x_BTNC, [(0, 0)] * 3 + [(0, features - c)])
  return x_BTNC


class TemporalConv(nn.Module):
  """Gated temporal convolution: (P + x) * sigmoid(Q), [P Q]_t = b + sum_{j < W}
  x_{t+j} K_j over `width` = W steps (no padding); `act='sigmoid'` is the output layer's
  plain convolution with a sigmoid."""
  features: int
  width: int = 3
  act: str = 'glu'  # or 'sigmoid'

  @nn.compact
  def __call__(self, x_BTNC):
    out = self.features if self.act == 'sigmoid' else 2 * self.features
    c = x_BTNC.shape[-1]
    kernel_WCD = self.param('kernel', nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
                            (self.width, c, out))
    t = x_BTNC.shape[1] - self.width + 1
    # The W shifted copies side by side, one matmul: XLA:CPU ran this 3x faster than
    # nn.Conv with a (W, 1) kernel (forward and backward at the paper's sizes).
    x_BTNF = jnp.concatenate([x_BTNC[:, j:j + t] for j in range(self.width)], axis=-1)
    y_BTND = x_BTNF @ kernel_WCD.reshape(self.width * c, out)
    y_BTND = y_BTND + self.param('bias', nn.initializers.zeros, (out,))
    if self.act == 'sigmoid':
      return nn.sigmoid(y_BTND)
    p_BTNC, q_BTNC = jnp.split(y_BTND, 2, axis=-1)
    residual_BTNC = _align(x_BTNC, self.features)[:, self.width - 1:]
    return (p_BTNC + residual_BTNC) * nn.sigmoid(q_BTNC)


def chebyshev_basis_dense(x_BTNC, senders, receivers, weights_E, order: int,
                          lambda_max=None):
  """(order, B, T, N, C): T_k(L~) x as `chebyshev_basis` computes it, with L~ a dense
  N x N matrix (matmuls: faster than the gathers and scatters for a few hundred nodes)."""
  n = x_BTNC.shape[2]
  lap_NN = laplacian_matrix(senders, receivers, weights_E, n)
  if lambda_max is None:
    lambda_max = jax.lax.stop_gradient(jnp.linalg.eigvalsh(lap_NN)[-1])
  lt_NN = (2.0 / lambda_max * lap_NN - jnp.eye(n, dtype=lap_NN.dtype)).astype(x_BTNC.dtype)
  apply = lambda y_BTNC: jnp.einsum('ij,btjc->btic', lt_NN, y_BTNC)
  terms = [x_BTNC]
  if order > 1:
    terms.append(apply(x_BTNC))
  for _ in range(2, order):
    terms.append(2.0 * apply(terms[-1]) - terms[-2])
  return jnp.stack(terms)


class ChebConv(nn.Module):
  """sum_{k < order} T_k(L~) x Theta_k + b at every (window, step): eq. (5)."""
  features: int
  order: int = 3
  lambda_max: float = 0.0  # 0: the exact largest eigenvalue of L
  dense: bool = True  # L~ as an N x N matrix; False: message passing over the edges, O(E)

  @nn.compact
  def __call__(self, x_BTNC, senders, receivers, weights_E, lambda_max=None):
    """lambda_max: L's largest eigenvalue when the caller knows it (a scalar array); else
    the attribute, or the exact one computed here (an eigendecomposition per call)."""
    b, t, n, c = x_BTNC.shape
    lambda_max = lambda_max if lambda_max is not None else (self.lambda_max or None)
    if self.dense:
      basis_KBTNC = chebyshev_basis_dense(x_BTNC, senders, receivers, weights_E, self.order,
                                          lambda_max)
    else:
      x_NF = x_BTNC.transpose(2, 0, 1, 3).reshape(n, b * t * c)  # nodes first: gathers
      basis_KNF = chebyshev_basis(x_NF, senders, receivers, weights_E, self.order, lambda_max)
      basis_KBTNC = basis_KNF.reshape(self.order, n, b, t, c).transpose(0, 2, 3, 1, 4)
    theta_KCD = self.param('theta', nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
                           (self.order, c, self.features))
    out_BTND = jnp.einsum('kbtnc,kcd->btnd', basis_KBTNC, theta_KCD)
    return out_BTND + self.param('bias', nn.initializers.zeros, (self.features,))


class FirstOrderConv(nn.Module):
  """theta D~^-1/2 (W + I) D~^-1/2 x + b: eq. (6) with the renormalisation trick."""
  features: int

  @nn.compact
  def __call__(self, x_BTNC, senders, receivers, weights_E):
    b, t, n, c = x_BTNC.shape
    xw_BTND = nn.Dense(self.features, use_bias=False, name='kernel')(x_BTNC)
    x_NF = xw_BTND.transpose(2, 0, 1, 3).reshape(n, -1)
    out_NF = propagate(x_NF, *first_order_weights(senders, receivers, weights_E, n))
    out_BTND = out_NF.reshape(n, b, t, self.features).transpose(1, 2, 0, 3)
    return out_BTND + self.param('bias', nn.initializers.zeros, (self.features,))


class STConvBlock(nn.Module):
  """Temporal GLU conv -> spatial graph conv (residual, ReLU) -> temporal GLU conv -> layer
  norm of each node's channels."""
  channels: tuple = (64, 16, 64)  # (first temporal, spatial, second temporal)
  width: int = 3
  spatial: str = 'cheb'
  order: int = 3
  lambda_max: float = 0.0
  dense: bool = True

  @nn.compact
  def __call__(self, x_BTNC, senders, receivers, weights_E, lambda_max=None):
    first, middle, last = self.channels
    h = TemporalConv(first, self.width, name='temporal0')(x_BTNC)
    if self.spatial == 'cheb':
      y = ChebConv(middle, self.order, self.lambda_max, self.dense, name='spatial')(
          h, senders, receivers, weights_E, lambda_max)
    elif self.spatial == 'gcn':
      y = FirstOrderConv(middle, name='spatial')(h, senders, receivers, weights_E)
    else:  # per-node linear: the Chebyshev sum's k = 0 term alone
      y = ChebConv(middle, 1, 1.0, name='spatial')(h, senders, receivers, weights_E)
    h = nn.relu(y + _align(h, middle))
    h = TemporalConv(last, self.width, name='temporal1')(h)
    return nn.LayerNorm(name='norm')(h)


class Model(nn.Module):
  """ST-GCN: two ST-Conv blocks and an output layer; (B, T, N, C) -> (B, H, N)."""
  channels: tuple = ((64, 16, 64), (64, 16, 64))  # per block
  width: int = 3          # Kt, the temporal kernel
  spatial: str = 'cheb'   # or 'gcn' (first order), 'none' (per-node temporal model)
  order: int = 3          # K_s: Chebyshev terms T_0 .. T_{K-1}
  lambda_max: float = 0.0  # 0: exact, from the graph
  horizon: int = 9        # H future steps predicted at once
  dense: bool = True      # Chebyshev terms with a dense N x N L~ (False: over the edges)

  @nn.compact
  def __call__(self, x_BTNC, senders, receivers, weights_E, lambda_max=None):
    """Forecasts (B, H, N); lambda_max (a scalar array): L's largest eigenvalue where the
    caller computed it (the forecasting task does, on the host, once per batch)."""
    if self.spatial not in SPATIAL:
      raise ValueError(f'unknown spatial={self.spatial!r}; valid: {", ".join(SPATIAL)}')
    h = x_BTNC.astype(jnp.float32)
    for i, channels in enumerate(self.channels):
      h = STConvBlock(tuple(channels), self.width, self.spatial, self.order, self.lambda_max,
                      self.dense, name=f'block{i}')(h, senders, receivers, weights_E,
                                                    lambda_max)
    if h.shape[1] < 1:
      raise ValueError(f'{x_BTNC.shape[1]} input steps are too few for '
                       f'{len(self.channels)} blocks of width {self.width}')
    c = h.shape[-1]
    h = TemporalConv(c, h.shape[1], name='out_temporal')(h)  # (B, 1, N, C)
    h = nn.LayerNorm(name='out_norm')(h)
    h = TemporalConv(c, 1, act='sigmoid', name='out_conv')(h)
    out_BNH = nn.Dense(self.horizon, name='head')(h[:, 0])
    return out_BNH.transpose(0, 2, 1)


TINY = dict(channels=((8, 4, 8), (8, 4, 8)), horizon=9)
