"""ST-GCN (arch/graph/stgcn.py) and spatio-temporal forecasting: the Chebyshev and first-order
graph convolutions against their dense formulas in numpy, the gated temporal convolution
against its equation, node outputs permutation-equivariant, the per-node temporal model
blind to the graph, the task's loss the same on one shard or eight and its persistence
metrics against numpy, the traffic dataset (graph, determinism, upstream leading
downstream), and the config trained with an exact resume."""

import functools

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

from arch.graph import forecasting, stgcn
from conftest import check_resumes_from_step_2, load_config, train_spec
from train.datasets import traffic


def _weighted_graph(n=7, seed=0):
  """A connected random graph with positive weights: (senders, receivers, weights) with
  each edge both ways, and the dense W (W_ij = weight of edge j -> i)."""
  rng = np.random.default_rng(seed)
  g = nx.connected_watts_strogatz_graph(n, 4, 0.5, seed=seed)
  pairs = np.asarray(list(g.edges()), np.int32)
  w = rng.uniform(0.2, 1.0, len(pairs)).astype(np.float32)
  senders = np.concatenate([pairs[:, 0], pairs[:, 1]])
  receivers = np.concatenate([pairs[:, 1], pairs[:, 0]])
  weights = np.concatenate([w, w])
  dense = np.zeros((n, n))
  dense[receivers, senders] = weights
  return senders, receivers, weights, dense


def _dense_scaled_laplacian(w_NN, lambda_max=None):
  d = w_NN.sum(1)
  lap = np.eye(len(d)) - w_NN / np.sqrt(np.outer(d, d))
  lam = np.linalg.eigvalsh(lap)[-1] if lambda_max is None else lambda_max
  return 2 * lap / lam - np.eye(len(d))


@pytest.mark.parametrize('dense', [True, False])
@pytest.mark.parametrize('lambda_max', [0.0, 2.0])
def test_chebyshev_conv_equals_the_dense_formula(lambda_max, dense):
  """sum_k T_k(L~) X Theta_k + b with T_0 = I, T_1 = L~, T_k = 2 L~ T_k-1 - T_k-2, at
  every window and step, for the exact largest eigenvalue or a fixed one, with L~ as a
  matrix or as message passing over the edges."""
  senders, receivers, weights, w_NN = _weighted_graph()
  x = np.random.default_rng(1).normal(size=(2, 3, 7, 2)).astype(np.float32)
  conv = stgcn.ChebConv(features=3, order=4, lambda_max=lambda_max, dense=dense)
  variables = conv.init(jax.random.key(0), x, senders, receivers, weights)
  variables = jax.tree.map(lambda p: p + 0.1, variables)  # a non-zero bias too
  apply = jax.jit(conv.apply)
  got = np.asarray(apply(variables, x, senders, receivers, weights))
  lt = _dense_scaled_laplacian(w_NN, lambda_max or None)
  polys = [np.eye(7), lt]
  polys.append(2 * lt @ polys[1] - polys[0])
  polys.append(2 * lt @ polys[2] - polys[1])
  theta, bias = np.asarray(variables['params']['theta']), np.asarray(variables['params']['bias'])
  want = sum(np.einsum('ij,btjc,cd->btid', polys[k], x, theta[k]) for k in range(4)) + bias
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # The exact lambda_max of this L lies in (1, 2]: the two settings differ.
  lam = np.linalg.eigvalsh(np.eye(7) - w_NN / np.sqrt(np.outer(w_NN.sum(1), w_NN.sum(1))))[-1]
  assert 1.0 < lam <= 2.0 + 1e-6
  np.testing.assert_allclose(stgcn.laplacian_lambda_max(senders, receivers, weights, 7), lam,
                             rtol=1e-5)
  np.testing.assert_allclose(forecasting.laplacian_lambda_max(senders, receivers, weights, 7),
                             lam, rtol=1e-5)
  if not lambda_max:  # the eigenvalue given by the caller: the same convolution
    given = apply(variables, x, senders, receivers, weights, jnp.float32(lam))
    np.testing.assert_allclose(np.asarray(given), got, rtol=1e-4, atol=1e-5)


def test_first_order_conv_equals_the_dense_formula():
  """D~^-1/2 (W + I) D~^-1/2 X Theta + b, D~ the degrees of W + I."""
  senders, receivers, weights, w_NN = _weighted_graph(seed=2)
  x = np.random.default_rng(3).normal(size=(2, 3, 7, 2)).astype(np.float32)
  conv = stgcn.FirstOrderConv(features=3)
  variables = conv.init(jax.random.key(0), x, senders, receivers, weights)
  got = np.asarray(jax.jit(conv.apply)(variables, x, senders, receivers, weights))
  w_tilde = w_NN + np.eye(7)
  d = w_tilde.sum(1)
  a_hat = w_tilde / np.sqrt(np.outer(d, d))
  kernel = np.asarray(variables['params']['kernel']['kernel'])
  want = np.einsum('ij,btjc,cd->btid', a_hat, x, kernel)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_gated_temporal_conv_matches_its_equation():
  """(P + x) * sigmoid(Q) with [P Q] a width-3 convolution along time, shared by nodes, and
  the input zero-padded to the output channels and cut to the last T - 2 steps."""
  x = np.random.default_rng(4).normal(size=(2, 6, 5, 2)).astype(np.float32)
  layer = stgcn.TemporalConv(features=3, width=3)
  variables = layer.init(jax.random.key(0), x)
  k = np.asarray(variables['params']['kernel'])  # (3, C_in, 2 C_out)
  b = np.asarray(variables['params']['bias']) + 0.3  # a non-zero bias too
  variables = {'params': {'kernel': k, 'bias': b}}
  got = np.asarray(jax.jit(layer.apply)(variables, x))
  pq = sum(np.einsum('btnc,cd->btnd', x[:, j:j + 4], k[j]) for j in range(3)) + b
  residual = np.concatenate([x, np.zeros((2, 6, 5, 1), np.float32)], -1)[:, 2:]
  want = (pq[..., :3] + residual) / (1 + np.exp(-pq[..., 3:]))
  assert got.shape == (2, 4, 5, 3)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


MODEL = dict(channels=((6, 3, 6), (6, 3, 6)), horizon=4)


@functools.cache
def _jitted(spatial):
  """(init, apply) of the test model, jitted once per spatial convolution."""
  model = stgcn.Model(**MODEL, spatial=spatial)
  return jax.jit(model.init), jax.jit(model.apply)


def _model_outputs(spatial, x, graph, variables=None):
  init, apply = _jitted(spatial)
  if variables is None:
    variables = init(jax.random.key(0), x, *graph)
  return np.asarray(apply(variables, x, *graph)), variables


@pytest.mark.parametrize('spatial', ['cheb', 'gcn'])
def test_node_outputs_are_permutation_equivariant(spatial):
  """Relabel the nodes (graph and inputs alike) and shuffle the edge list: the forecasts
  are the old ones relabelled."""
  senders, receivers, weights, _ = _weighted_graph(n=9, seed=5)
  x = np.random.default_rng(6).normal(size=(2, 12, 9, 1)).astype(np.float32)
  rng = np.random.default_rng(7)
  perm, order = rng.permutation(9), rng.permutation(len(senders))  # new k is old perm[k]
  inv = np.argsort(perm)
  out, variables = _model_outputs(spatial, x, (senders, receivers, weights))
  permuted = (inv[senders][order], inv[receivers][order], weights[order])
  out_perm, _ = _model_outputs(spatial, x[:, :, perm], permuted, variables)
  assert out.shape == (2, 4, 9)
  np.testing.assert_allclose(out_perm, out[:, :, perm], rtol=1e-4, atol=1e-5)
  # Not trivially: moving one node's inputs changes its neighbours' forecasts.
  bumped = x.copy()
  bumped[:, :, 0] += 1.0
  out_bumped, _ = _model_outputs(spatial, bumped, (senders, receivers, weights), variables)
  neighbours = receivers[senders == 0]
  assert np.abs(out_bumped - out)[:, :, neighbours].min() > 1e-4


def test_temporal_model_is_blind_to_the_graph():
  """spatial='none': the same forecasts for any graph; a node's forecast depends on its own
  inputs alone. The Chebyshev model's forecasts change with the graph."""
  senders, receivers, weights, _ = _weighted_graph(n=9, seed=8)
  x = np.random.default_rng(9).normal(size=(2, 12, 9, 1)).astype(np.float32)
  other = (senders[:4], receivers[:4], 3 * weights[:4])
  out, variables = _model_outputs('none', x, (senders, receivers, weights))
  out_other, _ = _model_outputs('none', x, other, variables)
  np.testing.assert_array_equal(out_other, out)
  bumped = x.copy()
  bumped[:, :, 0] += 1.0
  out_bumped, _ = _model_outputs('none', bumped, (senders, receivers, weights), variables)
  changed = np.abs(out_bumped - out).max(axis=(0, 1)) > 0
  assert changed[0] and not changed[1:].any()
  cheb, cheb_vars = _model_outputs('cheb', x, (senders, receivers, weights))
  cheb_other, _ = _model_outputs('cheb', x, other, cheb_vars)
  assert not np.allclose(cheb, cheb_other, atol=1e-4)


def _windows(split, count, stride=97):
  series, graph = traffic.speeds(), traffic.road_network()
  return [traffic.window(series, int(t), graph)
          for t in traffic.window_starts(split)[::stride][:count]]


def test_task_loss_is_the_same_over_one_shard_or_eight():
  """8 windows as 1 shard of 8 (1 device) or 8 shards of 1 (8 devices): the same loss and
  metrics; evaluation gives one row per window, its persistence errors those of numpy."""
  from train import core
  task = core.load_task(load_config('stgcn_traffic.py:tiny'))
  windows = _windows('test', 8)
  variables = jax.jit(task.init)(jax.random.key(0), jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype), task.example_batch(8)))
  one = {k: v[None] for k, v in task.collate(windows).items()}
  eight = {k: np.stack([task.collate([w])[k] for w in windows]) for k in one}
  assert one['history'].shape == (1, 8, 12, 40) and one['senders'].shape == (1, 134)
  lam = stgcn.laplacian_lambda_max(*(jnp.asarray(one[k][0]) for k in forecasting.GRAPH_KEYS),
                                   40)
  np.testing.assert_allclose(one['lambda_max'], [lam], rtol=1e-5)
  loss = jax.jit(lambda v, b: task.loss(v, b, jax.random.key(1)))
  (l1, (m1, _)), (l8, (m8, _)) = loss(variables, one), loss(variables, eight)
  np.testing.assert_allclose(l1, l8, rtol=1e-6)
  np.testing.assert_allclose(m1['mae'], m8['mae'], rtol=1e-6)
  evaluate = jax.jit(task.evaluate)
  per_window, per_window8 = (jax.device_get(evaluate(variables, b)) for b in (one, eight))
  assert per_window['mae'].shape == (1, 8) and per_window8['mae'].shape == (8, 1)
  for k in per_window:
    np.testing.assert_allclose(per_window[k].reshape(-1), per_window8[k].reshape(-1),
                               rtol=1e-5)
  history = np.stack([w['history'] for w in windows])
  target = np.stack([w['target'] for w in windows])
  for step, minutes in ((3, 15), (6, 30), (9, 45)):
    want = np.abs(history[:, -1] - target[:, step - 1]).mean(-1)
    np.testing.assert_allclose(per_window[f'persistence_mae_{minutes}'][0], want, rtol=1e-5)
  np.testing.assert_allclose(per_window['mae'][0], np.mean(
      [per_window[f'mae_{m}'][0] for m in (15, 30, 45)], 0), rtol=1e-6)
  np.testing.assert_allclose(per_window['loss'].mean(), l1, rtol=1e-5)


def test_collate_refuses_windows_of_different_graphs():
  from train import core
  task = core.load_task(load_config('stgcn_traffic.py:tiny'))
  a, b = _windows('train', 2)
  b = {**b, 'weights': b['weights'] * 2}
  with pytest.raises(ValueError, match='share their graph'):
    task.collate([a, b])


def test_traffic_dataset():
  """The road grid (connected, every street both ways, one-way flow west to east), windows
  cut from one deterministic series with splits disjoint in time, the constants the config
  normalises with, and upstream changes leading downstream ones."""
  net = traffic.road_network()
  g = nx.Graph()
  g.add_edges_from(zip(net['senders'].tolist(), net['receivers'].tolist()))
  assert g.number_of_nodes() == traffic.NUM_NODES and nx.is_connected(g)
  assert g.number_of_edges() * 2 == len(net['senders']) == traffic.NUM_EDGES == 134
  assert nx.is_isomorphic(g, nx.grid_2d_graph(traffic.ROWS, traffic.COLS))
  assert np.all((net['weights'] > 0) & (net['weights'] <= 1))
  flow = nx.DiGraph(list(zip(net['upstream'].tolist(), net['downstream'].tolist())))
  assert nx.is_directed_acyclic_graph(flow)
  assert np.all(net['positions'][net['downstream'], 0] > net['positions'][net['upstream'], 0]
                - 0.8)
  series = traffic.speeds()
  assert series.shape == (traffic.DAYS * 288, traffic.NUM_NODES)
  traffic.speeds.cache_clear()
  np.testing.assert_array_equal(traffic.speeds(), series)  # deterministic
  starts = {s: traffic.window_starts(s) for s in traffic.SPLITS}
  assert [len(starts[s]) for s in ('train', 'validation', 'test')] == [5740, 1132, 1132]
  assert starts['train'][-1] + 9 <= starts['validation'][0] - 12
  assert starts['validation'][-1] + 9 <= starts['test'][0] - 12
  ex = traffic.window(series, int(starts['test'][5]), net)
  t = starts['test'][5]
  np.testing.assert_array_equal(ex['history'], series[t - 12:t])
  np.testing.assert_array_equal(ex['target'], series[t:t + 9])
  train = series[:20 * 288]
  np.testing.assert_allclose([train.mean(), train.std()],
                             [traffic.SPEED_MEAN, traffic.SPEED_STD], atol=0.005)
  # Upstream speed changes correlate with their downstream neighbours' changes one step
  # later far more than the other way round: the graph tells what comes.
  d = np.diff(series, axis=0)
  lead = lambda a, b: np.mean([np.corrcoef(d[:-1, i], d[1:, j])[0, 1] for i, j in zip(a, b)])
  forward, backward = lead(net['upstream'], net['downstream']), lead(net['downstream'],
                                                                      net['upstream'])
  assert forward > 0.2 and forward > 2 * backward


_train = train_spec


def test_config_trains_and_resumes_exactly(tmp_path, data_dir):
  """4 steps with checkpoints at 2 and 4 (an eval on 16 test windows); the step-2
  checkpoint alone in another workdir resumes to the same losses at steps 3 and 4 and the
  same step-4 state, bitwise."""
  spec = 'stgcn_traffic.py:tiny'
  result = _train(spec, tmp_path / 'straight', data_dir, data__eval_split='test[:16]')
  assert {'mae', 'mae_15', 'mae_30', 'mae_45', 'persistence_mae_15', 'persistence_mae_30',
          'persistence_mae_45', 'loss'} <= set(result)
  assert np.isfinite(result['mae']) and result['mae'] > 0
  check_resumes_from_step_2(spec, _train, tmp_path, data_dir)
