"""GraphSAGE with minibatches of target nodes (arch/graph/node_classification.py with
`batch_nodes`, arch/graph/ops.py's sample_tree / tree_graph) and the sbm dataset: sampled
trees hold only true neighbours, the tree graph's edges join each child to its parent, the
network on the trees equals GraphSAGE on the sampled neighbourhoods computed node by node,
targets are distinct labelled nodes, the loss is the same on one shard or eight, and the
config trains with an exact resume."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.graph import ops, sage
from conftest import check_resumes_from_step_2, load_config, train_spec
from train.datasets import sbm


def _small_sbm(n, seed=0):
  return sbm.graph(np.random.default_rng(seed), n=n)


def _adjacency(ex):
  n = len(ex['nodes'])
  return ops.adjacency(jnp.asarray(ex['senders']), jnp.asarray(ex['receivers']), n)


def _neighbours(ex):
  n = len(ex['nodes'])
  out = [set() for _ in range(n)]
  for s, r in zip(ex['senders'], ex['receivers']):
    out[r].add(int(s))
  return out


def test_sample_tree_holds_only_true_neighbours():
  ex = _small_sbm(80)
  keep = ex['receivers'] != 79  # node 79 has no in-neighbours now
  ex['senders'], ex['receivers'] = ex['senders'][keep], ex['receivers'][keep]
  nbrs = _neighbours(ex)
  roots = np.array([0, 5, 17, 33, 79], np.int32)
  real = np.array([True, True, True, False, True])
  sizes = (4, 3)  # layer 1 draws 4, layer 2 (the roots') 3
  ids, valid = jax.jit(lambda k: ops.sample_tree(k, _adjacency(ex), roots, real, sizes))(
      jax.random.key(0))
  ids, valid = [np.asarray(x) for x in ids], [np.asarray(x) for x in valid]
  assert [len(x) for x in ids] == [5, 15, 60]
  np.testing.assert_array_equal(ids[0], roots)
  np.testing.assert_array_equal(valid[0], real)
  for d, width in ((1, 3), (2, 4)):
    for r in range(len(ids[d])):
      parent, parent_ok = ids[d - 1][r // width], valid[d - 1][r // width]
      assert valid[d][r] == (parent_ok and bool(nbrs[parent]))
      if valid[d][r]:
        assert ids[d][r] in nbrs[parent]
  assert not valid[1][9:15].any()  # the unreal root's and node 79's children
  assert valid[1][:9].all() and not valid[2][36:60].any()
  # Many draws cover a node's whole neighbourhood (uniform over it, with replacement).
  idx, ok = ops.sample_from(jax.random.key(1), _adjacency(ex), jnp.array([0]), 400)
  assert np.asarray(ok).all() and set(np.asarray(idx)[0]) == nbrs[0]


def test_tree_graph_joins_children_to_parents():
  ex = _small_sbm(50, seed=1)
  roots, real = np.array([3, 8], np.int32), np.array([True, False])
  ids, valid = ops.sample_tree(jax.random.key(2), _adjacency(ex), roots, real, (2, 3))
  graph = ops.tree_graph(jnp.asarray(ex['nodes']), ids, valid)
  m = 2 + 6 + 12
  assert graph.nodes.shape == (m + 1, sbm.NUM_FEATURES) and graph.senders.shape == (18,)
  flat_ids = np.concatenate([np.asarray(x) for x in ids])
  np.testing.assert_array_equal(graph.nodes[:m], ex['nodes'][flat_ids])
  np.testing.assert_array_equal(graph.nodes[m], 0)
  flat_ok = np.concatenate([np.asarray(x) for x in valid])
  for s, r in zip(np.asarray(graph.senders), np.asarray(graph.receivers)):
    if s == m:  # an unreal child's edge, parked on the padding node
      assert r == m
      continue
    assert flat_ok[s]
    assert r == ((s - 2) // 3 if s < 8 else 2 + (s - 8) // 2)
  assert (np.asarray(graph.senders) == m).sum() == 3 + 6  # the unreal root's subtree


def _sage_on_tree_by_hand(p, x, ids, valid, sizes):
  """GraphSAGE-mean (Algorithm 1 on the trees, node by node): layer 1 at the roots and
  their children, layer 2 at the roots, each averaging its own sampled children."""
  def layer(q, h_self, h_children):
    agg = h_children.mean(0) if len(h_children) else np.zeros_like(h_self)
    out = np.maximum(np.concatenate([h_self, agg]) @ q['kernel']['kernel']
                     + q['kernel']['bias'], 0)
    return out / max(np.linalg.norm(out), 1e-6)
  s2, s1 = sizes[1], sizes[0]
  logits = []
  for t in range(len(ids[0])):
    def h1(level, r):  # layer-1 output of tree entry r of `level` (0 or 1)
      width = s2 if level == 0 else s1
      kids = [x[ids[level + 1][r * width + j]] for j in range(width)
              if valid[level + 1][r * width + j]]
      return layer(p['sage0'], x[ids[level][r]], np.array(kids))
    kids = [h1(1, t * s2 + j) for j in range(s2) if valid[1][t * s2 + j]]
    h2 = layer(p['sage1'], h1(0, t), np.array(kids))
    logits.append(h2 @ p['head']['kernel'] + p['head']['bias'])
  return np.stack(logits)


def test_network_on_trees_equals_sage_on_sampled_neighbourhoods():
  ex = _small_sbm(60, seed=2)
  x = ex['nodes']
  roots, real = np.array([1, 2, 40, 59], np.int32), np.ones(4, bool)
  sizes = (3, 2)
  ids, valid = ops.sample_tree(jax.random.key(4), _adjacency(ex), roots, real, sizes)
  ids, valid = [np.asarray(i) for i in ids], [np.asarray(v) for v in valid]
  graph = ops.tree_graph(jnp.asarray(x), ids, valid)
  model = sage.Model(hidden=(6, 5), num_classes=3)
  variables = jax.jit(model.init)(jax.random.key(0), graph)
  got = np.asarray(jax.jit(model.apply)(variables, graph))[:4]
  want = _sage_on_tree_by_hand(jax.tree.map(np.asarray, variables['params']), x, ids, valid,
                               sizes)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _task(max_nodes=70, max_edges=1200, **kw):
  from train import core
  config = load_config('sage_sbm.py:tiny', task_kwargs__max_nodes=max_nodes,
                       task_kwargs__max_edges=max_edges,
                       **{f'task_kwargs__{k}': v for k, v in kw.items()})
  return core.load_task(config)


def _zeros_variables(task, graphs):
  return jax.jit(task.init)(jax.random.key(0), jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype), task.example_batch(graphs)))


def test_targets_are_distinct_labelled_nodes_of_their_graph():
  from arch.graph.node_classification import sample_targets
  n_node = jnp.array([12, 30, 4, 9])  # 3 graphs and the padding graph
  mask = np.zeros(55, bool)
  mask[[0, 3, 4, 11]] = True  # graph 0: 4 labelled nodes
  mask[12:42:2] = True        # graph 1: 15
  draw = jax.jit(lambda k, g: sample_targets(k, g, n_node, jnp.asarray(mask), 30, 8))
  seen = set()
  for key in range(20):
    for g, start, labelled in ((0, 0, {0, 3, 4, 11}), (1, 12, set(range(12, 42, 2))),
                               (2, 42, set())):
      nodes, real = map(np.asarray, draw(jax.random.key(key), g))
      picked = nodes[real]
      assert len(picked) == min(8, len(labelled)) == len(set(picked.tolist()))
      assert set(picked.tolist()) <= labelled
      if g == 1:
        seen |= set(picked.tolist())
  assert seen == set(range(12, 42, 2))  # every labelled node gets drawn


def test_task_loss_is_the_same_over_one_shard_or_eight():
  """8 graphs as 1 shard (1 device) or 8 shards of 1 (8 devices): the same sampled
  targets and trees, so the same loss."""
  task = _task(batch_nodes=6)
  graphs = [_small_sbm(n, seed=n) for n in (40, 55, 60, 45, 70, 50, 65, 42)]
  variables = _zeros_variables(task, 8)
  variables = {'params': jax.tree.map(
      lambda p: p + 0.05 * jax.random.normal(jax.random.key(3), p.shape), variables['params'])}
  one = {k: v[None] for k, v in task.collate(graphs).items()}
  eight = {k: np.stack([task.collate([g])[k] for g in graphs]) for k in one}
  loss = jax.jit(lambda v, b, k: task.loss(v, b, jax.random.key(k))[0])
  np.testing.assert_allclose(loss(variables, one, 1), loss(variables, eight, 1), rtol=1e-6)
  assert not np.isclose(loss(variables, one, 1), loss(variables, one, 2))  # keys matter


def test_option_errors():
  from train import core
  from train.errors import UserError
  with pytest.raises(UserError, match='needs fanouts'):
    _task(fanouts=())
  with pytest.raises(UserError, match='at most max_nodes=70'):
    _task(batch_nodes=71)
  with pytest.raises(UserError, match='leave sample_sizes empty'):
    core.load_task(load_config('sage_sbm.py:tiny', model__sample_sizes='(2, 2)'))
  with pytest.raises(UserError, match="unknown aggregator 'sum'"):
    load_config('sage_sbm.py:aggregator=sum')


def test_sbm_dataset(data_dir):
  from train import data
  builder = data.builder('sbm', data_dir)
  assert {s: len(builder.as_data_source(s)) for s in ('train', 'validation', 'test')} == {
      'train': 8, 'validation': 1, 'test': 2}
  ex = builder.as_data_source('test')[0]
  n = sbm.NUM_NODES
  assert ex['nodes'].shape == (n, sbm.NUM_FEATURES) and ex['mask'].all()
  np.testing.assert_array_equal(np.bincount(ex['label']), [n // sbm.NUM_CLASSES] * 5)
  s, r = ex['senders'], ex['receivers']
  assert len(s) <= sbm.MAX_EDGES and (s != r).all()
  pairs = set(zip(s.tolist(), r.tolist()))
  assert len(pairs) == len(s) and all((b, a) in pairs for a, b in pairs)  # both ways
  same = ex['label'][s] == ex['label'][r]
  assert 0.4 < same.mean() < 0.6 and 14 < len(s) / n < 18  # homophily 0.5, degree 16
  # Features correlate with the community: class means of the features near the truth.
  means = np.stack([ex['nodes'][ex['label'] == c].mean(0) for c in range(5)])
  np.testing.assert_allclose(means, sbm.class_means(), atol=0.15)


_train = train_spec


def test_config_trains_and_resumes_exactly(tmp_path, data_dir):
  """4 steps with checkpoints at 2 and 4; the step-2 checkpoint alone in another workdir
  resumes to the same losses at steps 3 and 4 and the same step-4 state, bitwise (targets
  and trees are drawn from the saved rng)."""
  spec = 'sage_sbm.py:tiny'
  result = _train(spec, tmp_path / 'straight', data_dir)
  assert 0 <= result['accuracy'] <= 1 and np.isfinite(result['loss'])
  check_resumes_from_step_2(spec, _train, tmp_path, data_dir)
