"""MPNN (arch/graph/mpnn.py) and graph regression: one message-passing step against the
paper's equations by hand, set2set against Vinyals et al.'s process block in numpy and its
permutation invariance, graph outputs invariant to node order and unchanged by padding and
other graphs, the edge-blind baseline blind to edge features, the task's loss the same on
one shard or eight, the random_graphs dataset's targets recomputed with networkx, and the
config trained with an exact resume."""


import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

from arch.graph import mpnn, ops
from conftest import check_resumes_from_step_2, load_config, train_spec
from train.datasets import random_graphs

MODEL = dict(features=8, edge_hidden=6, steps=2, readout_steps=3, num_targets=2)


def _molecules(count, seed=0):
  rng = np.random.default_rng(seed)
  return [random_graphs.example(rng) for _ in range(count)]


def _graph(examples, max_nodes=30, max_edges=70):
  batch = ops.pad_graphs(examples, max_nodes, max_edges, node_keys=('nodes',),
                         edge_keys=('edges',))
  return ops.from_batch(jax.tree.map(jnp.asarray, batch))


def _init(model, graph):
  variables = jax.jit(model.init)(jax.random.key(0), graph)
  return variables, jax.jit(model.apply)


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _lstm_by_hand(p, c, h, x):
  """Flax's LSTM cell: gates i, f, g, o from x W_i* + h W_h* (+ bias on the h side)."""
  gate = lambda k, act: act(x @ p[f'i{k}']['kernel'] + h @ p[f'h{k}']['kernel']
                            + p[f'h{k}']['bias'])
  i, f, g, o = (gate('i', _sigmoid), gate('f', _sigmoid), gate('g', np.tanh),
                gate('o', _sigmoid))
  c = f * c + i * g
  return c, o * np.tanh(c)


def _set2set_by_hand(p, m, steps):
  """Vinyals et al. 2016, section 4.2, for one set m (n, F) with the cell's weights."""
  cell = {k: {kk: np.asarray(vv) for kk, vv in v.items()} for k, v in p['lstm'].items()}
  f = m.shape[1]
  c, h, q_star = np.zeros(f), np.zeros(f), np.zeros(2 * f)
  for _ in range(steps):
    c, q = _lstm_by_hand(cell, c, h, q_star)
    h = q
    e = m @ q
    a = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
    q_star = np.concatenate([q, a @ m])
  return q_star


def test_set2set_matches_the_process_block_and_ignores_order():
  rng = np.random.default_rng(0)
  sizes = (5, 3, 7)
  m = rng.normal(size=(sum(sizes), 4)).astype(np.float32)
  ids = np.repeat(np.arange(3), sizes)
  layer = mpnn.Set2Set(steps=3)
  variables = layer.init(jax.random.key(0), m, ids, 3)
  p = jax.tree.map(np.asarray, variables['params'])
  got = np.asarray(layer.apply(variables, m, ids, 3))
  assert got.shape == (3, 8)
  starts = np.cumsum((0,) + sizes)
  for g in range(3):
    want = _set2set_by_hand(p, m[starts[g]:starts[g + 1]], 3)
    np.testing.assert_allclose(got[g], want, rtol=1e-5, atol=1e-6)
  # Shuffle all rows (each keeps its graph id): the same readout.
  perm = rng.permutation(len(ids))
  shuffled = np.asarray(layer.apply(variables, m[perm], ids[perm], 3))
  np.testing.assert_allclose(shuffled, got, rtol=1e-5, atol=1e-6)


def test_message_passing_step_matches_the_equations():
  """One step by hand: m_v = sum_w A(e_vw) h_w with A from the edge network, h' = GRU(h, m)
  (flax's GRUCell equations); read out with set2set and the head."""
  ex = _molecules(1, seed=3)[0]
  graph = _graph([ex])
  model = mpnn.Model(**{**MODEL, 'steps': 1})
  variables, apply = _init(model, graph)
  p = jax.tree.map(np.asarray, variables['params'])
  dense = lambda q, x: x @ q['kernel'] + q['bias']
  x, n = ex['nodes'], len(ex['nodes'])
  h = dense(p['embed'], x)
  z = np.maximum(dense(p['message']['hidden'], ex['edges']), 0)
  a = dense(p['message']['matrix'], z).reshape(-1, 8, 8)
  m = np.zeros_like(h)
  for e, (s, r) in enumerate(zip(ex['senders'], ex['receivers'])):
    m[r] += a[e] @ h[s]
  u = p['update']
  r_gate = _sigmoid(m @ u['ir']['kernel'] + u['ir']['bias'] + h @ u['hr']['kernel'])
  z_gate = _sigmoid(m @ u['iz']['kernel'] + u['iz']['bias'] + h @ u['hz']['kernel'])
  cand = np.tanh(m @ u['in']['kernel'] + u['in']['bias']
                 + r_gate * (h @ u['hn']['kernel'] + u['hn']['bias']))
  h = (1 - z_gate) * cand + z_gate * h
  read = dense(p['read'], np.concatenate([h, x], -1))
  q = _set2set_by_hand(p['set2set'], read, 3)
  want = dense(p['head'], np.maximum(dense(p['head_hidden'], q), 0))
  got = np.asarray(apply(variables, graph))
  assert got.shape == (2, 2) and n <= 30
  np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('use_edge_features', [True, False])
def test_graph_outputs_are_permutation_invariant(use_edge_features):
  """Relabel the nodes and shuffle the edge list: the graph's prediction is the same."""
  ex = _molecules(1, seed=5)[0]
  rng = np.random.default_rng(1)
  n, e = len(ex['nodes']), len(ex['senders'])
  perm, order = rng.permutation(n), rng.permutation(e)  # new node k is old node perm[k]
  inv = np.argsort(perm)
  permuted = {'nodes': ex['nodes'][perm], 'edges': ex['edges'][order],
              'senders': inv[ex['senders']][order], 'receivers': inv[ex['receivers']][order]}
  model = mpnn.Model(**MODEL, use_edge_features=use_edge_features)
  variables, apply = _init(model, _graph([ex]))
  out = np.asarray(apply(variables, _graph([ex])))[0]
  out_perm = np.asarray(apply(variables, _graph([permuted])))[0]
  np.testing.assert_allclose(out_perm, out, rtol=1e-5, atol=1e-5)


def test_padding_and_other_graphs_change_nothing():
  """A graph's prediction alone in tight budgets equals its prediction between two other
  graphs in larger budgets with garbage in the padding nodes and edges."""
  examples = _molecules(3, seed=7)
  mid = examples[1]
  model = mpnn.Model(**MODEL)
  alone_graph = _graph([mid], len(mid['nodes']), len(mid['senders']))
  variables, apply = _init(model, alone_graph)
  alone = np.asarray(apply(variables, alone_graph))[0]
  batch = ops.pad_graphs(examples, 40, 90, node_keys=('nodes',), edge_keys=('edges',))
  noise = np.random.default_rng(0)
  real_n, real_e = batch['n_node'][:-1].sum(), batch['n_edge'][:-1].sum()
  batch['nodes'][real_n:] = 1e3 * noise.normal(size=batch['nodes'][real_n:].shape)
  batch['edges'][real_e:] = 1e3 * noise.normal(size=batch['edges'][real_e:].shape)
  together = np.asarray(apply(variables, ops.from_batch(jax.tree.map(jnp.asarray, batch))))
  assert together.shape == (4, 2)
  np.testing.assert_allclose(together[1], alone, rtol=1e-5, atol=1e-5)


def test_edge_blind_baseline_ignores_edge_features_and_uses_edges():
  ex = _molecules(1, seed=9)[0]
  flipped = {**ex, 'edges': ex['edges'][:, ::-1].copy()}
  no_edges = {**ex, 'senders': ex['senders'][:0], 'receivers': ex['receivers'][:0],
              'edges': ex['edges'][:0]}
  outs = {}
  for blind in (False, True):
    model = mpnn.Model(**MODEL, use_edge_features=not blind)
    variables, apply = _init(model, _graph([ex]))
    outs[blind] = [np.asarray(apply(variables, _graph([g])))[0] for g in (ex, flipped, no_edges)]
  np.testing.assert_allclose(outs[True][0], outs[True][1], rtol=1e-6)  # blind to bond types
  assert not np.allclose(outs[False][0], outs[False][1])  # the full model sees them
  assert not np.allclose(outs[True][0], outs[True][2])  # but the blind one uses the edges


def _by_networkx(ex):
  """The random_graphs target recomputed with networkx: atom, bond and angle terms."""
  g = nx.Graph()
  atoms = ex['nodes'].argmax(1)
  for v, a in enumerate(atoms):
    g.add_node(v, atom=a)
  for s, r, e in zip(ex['senders'], ex['receivers'], ex['edges'].argmax(1)):
    g.add_edge(int(s), int(r), bond=int(e))
  total = sum(random_graphs.ATOM[a] for a in atoms)
  total += sum(random_graphs.BOND[d['bond']] * random_graphs.PAIR[atoms[u], atoms[v]]
               for u, v, d in g.edges(data=True))
  for v in g.nodes:
    nbrs = sorted(g.neighbors(v))
    for i, u in enumerate(nbrs):
      for w in nbrs[i + 1:]:
        total += random_graphs.ANGLE[g.edges[v, u]['bond'], g.edges[v, w]['bond']]
  return g, total / len(atoms)


def test_random_graphs_targets_and_structure():
  rng = np.random.default_rng(11)
  for _ in range(40):
    ex = random_graphs.example(rng)
    g, want = _by_networkx(ex)
    n = len(ex['nodes'])
    assert random_graphs.MIN_NODES <= n <= random_graphs.MAX_NODES
    assert len(ex['senders']) <= random_graphs.MAX_EDGES
    assert nx.is_connected(g) and max(d for _, d in g.degree) <= random_graphs.MAX_DEGREE
    assert g.number_of_edges() * 2 == len(ex['senders'])  # each bond once, both ways
    np.testing.assert_allclose(ex['target'][0], want, rtol=1e-5)
  # Deterministic: the same seed gives the same graphs.
  a, b = (random_graphs.example(np.random.default_rng(3)) for _ in range(2))
  assert all(np.array_equal(a[k], b[k]) for k in a)


def test_task_loss_is_the_same_over_one_shard_or_eight():
  """8 graphs as 1 shard of 8 (1 device) or 8 shards of 1 (8 devices): the same loss and
  metrics; evaluation gives one error per graph."""
  from train import core
  task = core.load_task(load_config('mpnn_graphs.py:tiny'))
  examples = _molecules(8, seed=13)
  variables = jax.jit(task.init)(jax.random.key(0), jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype), task.example_batch(8)))
  one = {k: v[None] for k, v in task.collate(examples).items()}
  eight = {k: np.stack([task.collate([ex])[k] for ex in examples]) for k in one}
  loss = jax.jit(lambda v, b: task.loss(v, b, jax.random.key(1)))
  (l1, (m1, _)), (l8, (m8, _)) = loss(variables, one), loss(variables, eight)
  np.testing.assert_allclose(l1, l8, rtol=1e-6)
  np.testing.assert_allclose(m1['mae'], m8['mae'], rtol=1e-6)
  per_graph = jax.device_get(jax.jit(task.evaluate)(variables, one))
  assert per_graph['mae'].shape == (1, 8)
  np.testing.assert_allclose(per_graph['mae'].mean(), m1['mae'], rtol=1e-6)


_train = train_spec


def test_config_trains_and_resumes_exactly(tmp_path, data_dir):
  """4 steps with checkpoints at 2 and 4 (an eval on 16 test graphs); the step-2
  checkpoint alone in another workdir resumes to the same losses at steps 3 and 4 and the
  same step-4 state, bitwise."""
  spec = 'mpnn_graphs.py:tiny'
  result = _train(spec, tmp_path / 'straight', data_dir, data__eval_split='test[:16]')
  assert np.isfinite(result['mae']) and result['mae'] > 0
  check_resumes_from_step_2(spec, _train, tmp_path, data_dir)
