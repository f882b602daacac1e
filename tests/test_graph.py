"""Graph networks (arch/graph/): GCN against its dense formula, GAT's attention against the
paper's equations, permutation equivariance, padding, GraphSAGE's neighbour sampling, the
node-classification task's shards, the karate dataset, and each karate config trained with
an exact resume."""

import shutil

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

from arch.graph import gat, gcn, ops, sage
from conftest import assert_same_states, load_config, read_metrics, restored_states, train_spec
from train.errors import UserError

MODELS = {
    'gcn': lambda: gcn.Model(hidden=(8,), num_classes=3),
    'gat': lambda: gat.Model(hidden=(4,), heads=3, out_heads=2, num_classes=3),
    'sage_mean': lambda: sage.Model(hidden=(8, 8), num_classes=3),
    'sage_pool': lambda: sage.Model(hidden=(8, 8), num_classes=3, aggregator='pool'),
    'sage_lstm': lambda: sage.Model(hidden=(8, 8), num_classes=3, aggregator='lstm',
                                    max_degree=12),
}


def _example(g, features=4, seed=0):
  """A networkx graph as an example dict: random node features, each edge both ways."""
  rng = np.random.default_rng(seed)
  pairs = np.asarray(list(g.edges()), np.int32).reshape(-1, 2)
  n = g.number_of_nodes()
  return {'nodes': rng.normal(size=(n, features)).astype(np.float32),
          'senders': np.concatenate([pairs[:, 0], pairs[:, 1]]),
          'receivers': np.concatenate([pairs[:, 1], pairs[:, 0]]),
          'label': rng.integers(0, 3, n).astype(np.int32), 'mask': np.ones(n, bool)}


def _graph(examples, max_nodes, max_edges):
  batch = ops.pad_graphs(examples, max_nodes, max_edges, node_keys=('nodes',))
  return ops.from_batch(jax.tree.map(jnp.asarray, batch))


def _apply(model, graph):
  """(outputs, variables, jitted apply) of a freshly initialised model (jit: eager
  dispatch of every op is the slow part of these tests)."""
  variables = jax.jit(model.init)(jax.random.key(0), graph)
  apply = jax.jit(model.apply)
  return np.asarray(apply(variables, graph)), variables, apply


def test_pad_graphs_layout():
  """Two graphs of 3 and 2 nodes in budgets of 4 nodes / 4 edges each: offsets, padding
  graph, padding edges on the first padding node, masks."""
  a = {'nodes': np.ones((3, 1), np.float32), 'senders': np.array([0, 1]),
       'receivers': np.array([1, 2])}
  b = {'nodes': np.ones((2, 1), np.float32), 'senders': np.array([1]),
       'receivers': np.array([0])}
  batch = ops.pad_graphs([a, b], 4, 4)
  assert batch['nodes'].shape == (9, 1) and batch['nodes'][5:].sum() == 0
  np.testing.assert_array_equal(batch['n_node'], [3, 2, 4])
  np.testing.assert_array_equal(batch['n_edge'], [2, 1, 5])
  np.testing.assert_array_equal(batch['senders'], [0, 1, 4] + [5] * 5)
  np.testing.assert_array_equal(batch['receivers'], [1, 2, 3] + [5] * 5)
  graph = ops.from_batch(batch)
  np.testing.assert_array_equal(ops.node_mask(graph), [1] * 5 + [0] * 4)
  np.testing.assert_array_equal(ops.edge_mask(graph), [1] * 3 + [0] * 5)
  with pytest.raises(ValueError, match='exceeds the budget'):
    ops.pad_graphs([a, b], 2, 4)


def test_gcn_equals_the_dense_formula():
  """One layer is D^-1/2 (A + I) D^-1/2 X W + b on a graph with an isolated node."""
  g = nx.gnm_random_graph(7, 10, seed=3)
  g.add_node(7)
  ex = _example(g, features=5)
  graph = _graph([ex], 8, 20)
  model = gcn.Model(hidden=(), num_classes=3)
  variables = jax.jit(model.init)(jax.random.key(0), graph)
  bias = np.random.default_rng(1).normal(size=3).astype(np.float32)
  variables = {'params': {'conv0': {**variables['params']['conv0'], 'bias': bias}}}
  got = np.asarray(model.apply(variables, graph))[:8]
  a_hat = nx.to_numpy_array(g, nodelist=range(8)) + np.eye(8)
  d = a_hat.sum(1)
  w = np.asarray(variables['params']['conv0']['kernel']['kernel'])
  want = np.diag(d ** -0.5) @ a_hat @ np.diag(d ** -0.5) @ ex['nodes'] @ w + bias
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _gat_layer_by_hand(h, p, heads, features, concat, in_neighbours):
  """Eqs. (1)-(6) node by node: softmax over N(i) and i of LeakyReLU(a^T [z_i || z_j])."""
  z = np.einsum('nd,dhf->nhf', h, np.asarray(p['kernel']['kernel']))
  a_dst, a_src = np.asarray(p['att_dst']), np.asarray(p['att_src'])
  out = np.zeros((h.shape[0], heads, features))
  for i in range(h.shape[0]):
    js = in_neighbours[i] + [i]
    e = (z[i] * a_dst).sum(-1)[None] + (z[js] * a_src).sum(-1)  # (|N(i)|, H)
    e = np.where(e > 0, e, 0.2 * e)
    alpha = np.exp(e - e.max(0)) / np.exp(e - e.max(0)).sum(0)
    out[i] = (alpha[..., None] * z[js]).sum(0)
  out = out.reshape(h.shape[0], -1) if concat else out.mean(1)
  return out + np.asarray(p['bias'])


def test_gat_matches_the_papers_equations_and_attention_sums_to_one():
  g = nx.gnm_random_graph(9, 14, seed=5)
  ex = _example(g, features=6)
  graph = _graph([ex], 9, 28)
  model = gat.Model(hidden=(4,), heads=3, out_heads=2, num_classes=3)
  variables = jax.jit(model.init)(jax.random.key(0), graph)
  out, state = jax.jit(lambda v, g: model.apply(v, g, mutable=['intermediates']))(
      variables, graph)
  n = graph.nodes.shape[0]
  senders, receivers = ops.add_self_loops(graph.senders, graph.receivers, n)
  for layer, heads in (('gat0', 3), ('gat1', 2)):
    (alpha,) = state['intermediates'][layer]['attention']
    assert alpha.shape == (senders.shape[0], heads) and (alpha > 0).all()
    np.testing.assert_allclose(ops.segment_sum(alpha, receivers, n), 1.0, rtol=1e-5)
  in_neighbours = [[int(s) for s, r in zip(ex['senders'], ex['receivers']) if r == i]
                   for i in range(9)]
  p = variables['params']
  h = _gat_layer_by_hand(ex['nodes'], p['gat0'], 3, 4, True, in_neighbours)
  h = np.where(h > 0, h, np.expm1(h))  # ELU
  want = _gat_layer_by_hand(h, p['gat1'], 2, 3, False, in_neighbours)
  np.testing.assert_allclose(np.asarray(out)[:9], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('aggregator', ['mean', 'pool'])
def test_sage_layer_matches_algorithm_1(aggregator):
  """Node by node: relu(W [h_v || AGG(h_u, u in N(v))]) / norm, with AGG the mean of the
  h_u or the max of relu(W_pool h_u + b); an isolated node aggregates zeros."""
  g = nx.gnm_random_graph(8, 10, seed=2)
  g.add_node(8)
  ex = _example(g, features=5)
  graph = _graph([ex], 9, 20)
  layer = sage.SAGEConv(6, aggregator)
  edges = (graph.senders, graph.receivers, None)
  variables = jax.jit(layer.init)(jax.random.key(0), graph.nodes, edges)
  got = np.asarray(jax.jit(layer.apply)(variables, graph.nodes, edges))[:9]
  p = jax.tree.map(np.asarray, variables['params'])
  h = ex['nodes']
  want = []
  for v in range(9):
    us = list(g.neighbors(v))
    if not us:
      agg = np.zeros(5 if aggregator == 'mean' else 6)
    elif aggregator == 'mean':
      agg = h[us].mean(0)
    else:
      agg = np.maximum(h[us] @ p['pool']['kernel'] + p['pool']['bias'], 0).max(0)
    out = np.maximum(np.concatenate([h[v], agg]) @ p['kernel']['kernel'] + p['kernel']['bias'], 0)
    want.append(out / np.linalg.norm(out))
  np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_node_outputs_are_permutation_equivariant(name):
  """Relabel the nodes by a permutation (and shuffle the edge list; the LSTM aggregator
  reads neighbours in edge order, so for it the order is kept): every node's output moves
  with it."""
  g = nx.gnm_random_graph(11, 20, seed=7)
  ex = _example(g)
  rng = np.random.default_rng(0)
  perm = rng.permutation(11)  # new node k is old node perm[k]
  inv = np.argsort(perm)
  edges = np.arange(len(ex['senders']))
  if name != 'sage_lstm':
    edges = rng.permutation(edges)
  permuted = {'nodes': ex['nodes'][perm], 'senders': inv[ex['senders']][edges],
              'receivers': inv[ex['receivers']][edges]}
  out, variables, apply = _apply(MODELS[name](), _graph([ex], 11, 40))
  out_perm = np.asarray(apply(variables, _graph([permuted], 11, 40)))
  np.testing.assert_allclose(out_perm[:11], out[:11][perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_padding_and_other_graphs_change_nothing(name):
  """A graph's node outputs are the same alone in tight budgets and batched between two
  other graphs in larger budgets with garbage in the padding nodes."""
  examples = [_example(nx.gnm_random_graph(n, m, seed=n), seed=n)
              for n, m in ((5, 6), (9, 15), (7, 9))]
  alone, variables, apply = _apply(MODELS[name](), _graph([examples[1]], 9, 30))
  batch = ops.pad_graphs(examples, 12, 40, node_keys=('nodes',))
  real = batch['n_node'][:-1].sum()
  batch['nodes'][real:] = 1e3 * np.random.default_rng(0).normal(size=batch['nodes'][real:].shape)
  together = np.asarray(apply(variables, ops.from_batch(jax.tree.map(jnp.asarray, batch))))
  np.testing.assert_allclose(together[5:14], alone[:9], rtol=1e-5, atol=1e-5)


def test_sampled_neighbours_are_true_neighbours():
  g = nx.karate_club_graph()
  g.add_node(34)  # isolated
  ex = _example(g)
  n = 35
  args = (jnp.asarray(ex['senders']), jnp.asarray(ex['receivers']), n)
  idx, valid = ops.sample_neighbours(jax.random.key(0), *args, 200)
  idx, valid = np.asarray(idx), np.asarray(valid)
  for i in range(34):
    assert valid[i].all()
    assert set(idx[i]) == set(g.neighbors(i))  # only neighbours, and (200 draws) all of them
  assert not valid[34].any()
  # Whole neighbourhoods, in edge order or shuffled: each neighbour exactly once.
  for rng in (None, jax.random.key(1)):
    idx, valid = map(np.asarray, ops.neighbour_table(*args, 20, rng=rng))
    for i in range(n):
      assert sorted(idx[i][valid[i]]) == sorted(g.neighbors(i))
  # The model's sampling path (here into the LSTM aggregator) reads only sampled
  # neighbours: an isolated node sees none in training as in evaluation.
  model = sage.Model(hidden=(8,), num_classes=2, aggregator='lstm', sample_sizes=(5,),
                     max_degree=20)
  graph = _graph([ex], n, 156)
  variables = jax.jit(model.init)(jax.random.key(0), graph)
  train = jax.jit(lambda v, g: model.apply(v, g, train=True,
                                           rngs={'sample': jax.random.key(3)}))(variables, graph)
  full = jax.jit(model.apply)(variables, graph)
  np.testing.assert_allclose(train[34], full[34], rtol=1e-6)
  assert not np.allclose(train[:34], full[:34])


def _karate_examples():
  from train.datasets import karate
  graph = karate.karate_graph()
  train = np.isin(np.arange(34), karate.TRAIN_NODES)
  return {**graph, 'mask': train}, {**graph, 'mask': ~train}


def test_task_loss_is_the_same_over_one_shard_or_several():
  """4 graphs as 1 shard of 4 or as 4 shards of 1 (1 device or 4): the same loss, the
  mean over all labelled nodes; evaluation counts correct and labelled nodes per graph."""
  from train import core
  task = core.load_task(load_config('gnn_karate.py:model=gcn', model__dropout=0.0))
  train, test = _karate_examples()
  variables = jax.jit(task.init)(jax.random.key(0), jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype), task.example_batch(4)))
  one = {k: v[None] for k, v in task.collate([train] * 4).items()}
  four = {k: np.stack([v] * 4) for k, v in task.collate([train]).items()}
  loss = jax.jit(lambda v, b: task.loss(v, b, jax.random.key(1))[0])
  np.testing.assert_allclose(loss(variables, one), loss(variables, four), rtol=1e-6)
  batch = {k: v[None] for k, v in task.collate([test, train]).items()}
  sums = jax.device_get(jax.jit(task.evaluate)(variables, batch))
  np.testing.assert_array_equal(sums['labelled'], [[32, 2]])
  assert set(task.finalize_eval({k: v.sum() for k, v in sums.items()}, 2.0)) == {
      'accuracy', 'loss'}


def test_karate_dataset(data_dir):
  from train import data
  builder = data.builder('karate', data_dir)
  train, test = (builder.as_data_source(s)[0] for s in ('train', 'test'))
  g = nx.karate_club_graph()
  clubs = [int(g.nodes[i]['club'] == 'Officer') for i in range(34)]
  for ex in (train, test):
    np.testing.assert_array_equal(ex['nodes'], np.eye(34))
    np.testing.assert_array_equal(ex['label'], clubs)
    edges = set(zip(ex['senders'].tolist(), ex['receivers'].tolist()))
    assert len(ex['senders']) == len(edges) == 156
    assert edges == {(a, b) for a, b in g.edges()} | {(b, a) for a, b in g.edges()}
  assert list(np.flatnonzero(train['mask'])) == [0, 33]
  np.testing.assert_array_equal(test['mask'], ~train['mask'])
  assert train['label'][0] != train['label'][33]  # one labelled member per club


_train = train_spec


@pytest.mark.parametrize('spec, overrides', [
    ('model=gcn', {}), ('model=gat', {}),
    ('model=sage,aggregator=pool', {'model__sample_sizes': '(3, 3)'})])
def test_karate_config_trains_and_resumes_exactly(spec, overrides, tmp_path, data_dir):
  """4 steps with checkpoints at 2 and 4; the step-2 checkpoint alone in another workdir
  resumes to the same losses at steps 3 and 4 and the same step-4 state, bitwise
  (dropout and neighbour sampling draw from the saved rng)."""
  from train import core
  spec = f'gnn_karate.py:{spec},tiny'
  result = _train(spec, tmp_path / 'straight', data_dir, **overrides)
  assert 0 <= result['accuracy'] <= 1 and np.isfinite(result['loss'])
  shutil.copytree(tmp_path / 'straight' / 'checkpoints' / '2',
                  tmp_path / 'resumed' / 'checkpoints' / '2')
  _train(spec, tmp_path / 'resumed', data_dir, eval_every=0, **overrides)
  straight, resumed = ({s: r['loss'] for s, r in read_metrics(tmp_path / name).items()}
                       for name in ('straight', 'resumed'))
  assert sorted(straight) == [1, 2, 3, 4] and all(np.isfinite(list(straight.values())))
  assert resumed == {3: straight[3], 4: straight[4]}
  config = load_config(spec, **overrides)
  abstract = core.abstract_state(config, core.load_task(config))
  states = restored_states(abstract, [tmp_path / 'straight', tmp_path / 'resumed'], 4)
  assert_same_states(*states)


def test_option_errors_are_one_line():
  from train import core
  config = load_config('gnn_karate.py')
  with config.unlocked():
    config.task_kwargs.max_node = 40  # as a config file would write it
  with pytest.raises(UserError) as e:
    core.load_task(config)
  message = str(e.value)
  assert '\n' not in message and 'max_node' in message and 'did you mean max_nodes' in message
  with pytest.raises(UserError, match='unknown GraphSAGE aggregator .sum.; valid: mean'):
    core.load_task(load_config('gnn_karate.py:model=sage', model__aggregator='sum'))
  with pytest.raises(UserError, match="unknown model 'gin'; valid: gcn, gat, sage"):
    load_config('gnn_karate.py:model=gin')
  task = core.load_task(load_config('gnn_karate.py', task_kwargs__max_nodes=20))
  from arch.task import ConfigError
  with pytest.raises(ConfigError, match='34 nodes .* exceeds .* raise task_kwargs.max_nodes'):
    task.collate([_karate_examples()[0]])
