"""Federated averaging (arch/federated/fedavg.py): one client and one local step is plain
SGD, clients with identical data average to one client's training, the server's weights
n_k / n, FedProx's proximal step
by hand and mu = 0 equal to FedAvg, DP clipping, the Dirichlet split (every example in one
client, cut as its proportions say, skew growing as alpha shrinks), and the tiny config
through the loop with an exact resume and the same numbers on 8 devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from arch.federated import fedavg
from arch.task import ConfigError
from conftest import check_eight_devices, check_resumes_alike, load_config, train_spec

LR = 0.05


def _setup(**task_kwargs):
  """(config, the Federated object, its inner round step jitted, a state whose params are
  not degenerate) for the tiny config with these task_kwargs."""
  from train import core
  from train import steps as steps_lib
  config = load_config('fedavg_digits.py:tiny', **{f'task_kwargs__{k}': v
                                                   for k, v in task_kwargs.items()})
  fed = fedavg.Federated(config)
  task = fed.task()
  tx, schedule = core.make_tx(config, task)
  state = nn.meta.unbox(jax.jit(core.make_init_fn(config, task, tx))(jax.random.key(0)))
  # The MLP's head starts at zero, which would leave the hidden layers' gradients zero.
  leaves, treedef = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  params = treedef.unflatten([p + 0.3 * jax.random.normal(k, p.shape)
                              for p, k in zip(leaves, keys)])
  state = state.replace(params=params)
  step = jax.jit(task.make_step(steps_lib.Builders(config, tx, schedule)))
  return config, fed, step, state


def _batch(n, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (n, 8, 8, 1)).astype(np.uint8),
          'label': rng.integers(0, 10, (n,)).astype(np.int32)}


def _ce(fed, params, batch):
  """The mean cross-entropy (the MLP has no dropout, so the key is unused)."""
  ce, _ = fed.cross_entropy(params, batch['image'], batch['label'], jax.random.key(0))
  return ce.mean()


def _close(a, b, rtol=1e-5, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_one_client_one_local_step_is_plain_sgd():
  """M = K = 1, E = 1, B = the client's whole data: the round is one SGD step of the
  cross-entropy on the batch (server sgd at lr 1 adds the client's update back)."""
  _, fed, step, state = _setup(num_clients=1, clients_per_round=1, local_epochs=1,
                                local_batch_size=48)
  batch = _batch(48)
  new, metrics = step(state, batch, jax.random.key(1))
  grads = jax.grad(lambda p: _ce(fed, p, batch))(state.params)
  want = jax.tree.map(lambda p, g: p - LR * g, state.params, grads)
  _close(new.params, want)
  assert float(metrics['local_steps']) == 1 and float(metrics['clients']) == 1
  np.testing.assert_allclose(metrics['loss'], _ce(fed, state.params, batch), rtol=1e-6)
  np.testing.assert_allclose(metrics['grad_norm'], LR * optax.tree.norm(grads), rtol=1e-4)


def test_fedprox_local_steps_by_hand_and_mu_zero_is_fedavg():
  """Two full-batch local steps: FedProx's first is SGD (the proximal gradient is zero at
  w), the second adds mu (w1 - w); with mu = 0 FedProx is FedAvg bitwise."""
  mu = 0.7
  kw = dict(num_clients=1, clients_per_round=1, local_epochs=2, local_batch_size=32)
  _, fed, prox_step, state = _setup(algorithm='fedprox', prox_mu=mu, **kw)
  batch = _batch(32, seed=1)
  grad = jax.grad(lambda p: _ce(fed, p, batch))
  w0 = state.params
  w1 = jax.tree.map(lambda p, g: p - LR * g, w0, grad(w0))
  w2 = jax.tree.map(lambda p, g, p0: p - LR * (g + mu * (p - p0)), w1, grad(w1), w0)
  _close(prox_step(state, batch, jax.random.key(1))[0].params, w2)
  _, _, avg_step, _ = _setup(**kw)
  _, _, prox0_step, _ = _setup(algorithm='fedprox', prox_mu=0.0, **kw)
  avg, prox0 = (s(state, batch, jax.random.key(1))[0].params for s in (avg_step, prox0_step))
  for x, y in zip(jax.tree.leaves(avg), jax.tree.leaves(prox0)):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(ConfigError, match='prox_mu'):
    _setup(algorithm='fedavg', prox_mu=0.1)


def test_clients_with_identical_data_average_to_local_training(monkeypatch):
  """M = 6 clients each holding the same 20 examples (full-batch local steps, so the order
  of their minibatches cannot matter), K = 4 sampled: the average of their models is one
  client's local training, and the weights n_k / sum n were applied."""
  n, m = 20, 6
  one = _batch(n, seed=2)
  batch = {k: np.concatenate([v] * m) for k, v in one.items()}
  monkeypatch.setattr(fedavg, 'dirichlet_partition',
                      lambda labels, rng, clients, classes, alpha: jnp.arange(n * m) // n)
  _, fed, step, state = _setup(num_clients=m, clients_per_round=4, local_epochs=3,
                                local_batch_size=n)
  new, metrics = step(state, batch, jax.random.key(1))
  local, count, *_ = jax.jit(fed.local_train)(state.params, one['image'], one['label'],
                                               jnp.zeros((n,), jnp.int32), 0, jax.random.key(3))
  assert float(count) == n and float(metrics['clients']) == 4
  assert float(metrics['local_steps']) == 3
  _close(new.params, local, rtol=1e-5, atol=1e-5)


def test_the_server_weights_clients_by_their_example_counts(monkeypatch):
  """Clients of 4, 8 and 20 examples (full-batch local steps), all sampled: the new global
  model is sum_k n_k v_k / sum_k n_k of the clients' own local training, not their plain
  mean, and the round's loss is weighted alike."""
  sizes = np.array([4, 8, 20])
  client = jnp.asarray(np.repeat(np.arange(3), sizes))
  batch = _batch(int(sizes.sum()), seed=4)
  monkeypatch.setattr(fedavg, 'dirichlet_partition', lambda *args: client)
  _, fed, step, state = _setup(num_clients=3, clients_per_round=3, local_epochs=2,
                               local_batch_size=20)
  new, metrics = step(state, batch, jax.random.key(1))
  train = jax.jit(fed.local_train)
  outs = [train(state.params, batch['image'], batch['label'], client, k, jax.random.key(k))
          for k in range(3)]
  w = sizes / sizes.sum()
  want = jax.tree.map(lambda *vs: sum(wk * v for wk, v in zip(w, vs)), *[o[0] for o in outs])
  _close(new.params, want, rtol=1e-5, atol=1e-5)
  plain = jax.tree.map(lambda *vs: sum(vs) / 3, *[o[0] for o in outs])
  assert max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(plain),
                                                          jax.tree.leaves(want))) > 1e-3
  np.testing.assert_allclose(metrics['loss'], sum(wk * float(o[2]) for wk, o in zip(w, outs)),
                             rtol=1e-5)


def test_dp_clipping_scales_the_update_to_the_clip_norm():
  """One client, no noise: DP-FedAvg's update is the client's update scaled to norm S."""
  kw = dict(num_clients=1, clients_per_round=1, local_epochs=1, local_batch_size=16)
  _, _, plain, state = _setup(**kw)
  _, _, clipped, _ = _setup(dp_clip=1e-3, **kw)
  batch = _batch(16, seed=3)
  delta = jax.tree.map(jnp.subtract, plain(state, batch, jax.random.key(1))[0].params,
                       state.params)
  got = jax.tree.map(jnp.subtract, clipped(state, batch, jax.random.key(1))[0].params,
                     state.params)
  norm = float(optax.tree.norm(delta))
  assert norm > 1e-2
  # (w + delta) - w loses ~1e-8 to rounding next to weights of ~0.3.
  _close(got, jax.tree.map(lambda d: d * 1e-3 / norm, delta), rtol=1e-3, atol=1e-7)
  with pytest.raises(ConfigError, match='dp_clip'):
    _setup(dp_noise=1.0)


def _skew(client_N, labels_N, m):
  """Size-weighted mean total-variation distance of the clients' label mix from the
  split's."""
  overall = np.bincount(labels_N, minlength=10) / len(labels_N)
  tv = 0.0
  for k in range(m):
    mine = labels_N[client_N == k]
    if len(mine):
      tv += len(mine) * 0.5 * np.abs(np.bincount(mine, minlength=10) / len(mine) - overall).sum()
  return tv / len(labels_N)


def test_dirichlet_split_every_example_once_and_skew_grows_as_alpha_shrinks():
  labels = np.random.default_rng(0).integers(0, 10, 1432).astype(np.int32)
  m, rng = 50, jax.random.key(4)
  iid = jax.jit(lambda labels: fedavg.dirichlet_partition(labels, rng, m, 10, 0.0))
  skewed = jax.jit(lambda labels, alpha: fedavg.dirichlet_partition(labels, rng, m, 10, alpha))
  skews = []
  for alpha in (0.0, 100.0, 1.0, 0.1, 0.01):
    client = np.asarray(iid(labels) if alpha == 0 else skewed(labels, alpha))
    # One client per example (an id, so at most one), a valid id, and all examples placed.
    assert client.shape == labels.shape and client.min() >= 0 and client.max() < m
    assert np.bincount(client, minlength=m).sum() == len(labels)
    if alpha == 0.0:  # IID: equal shards
      sizes = np.bincount(client, minlength=m)
      assert sizes.max() - sizes.min() <= 1
    else:  # class c cut at round(n_c cumsum(p_c)), p_c ~ Dir(alpha) from the same key
      p = jax.random.dirichlet(jax.random.split(rng)[1], jnp.full((m,), alpha), (10,))
      n_c = np.bincount(labels, minlength=10)
      cuts = np.round(n_c[:, None] * np.cumsum(np.asarray(p, np.float64), -1))
      want = np.diff(np.concatenate([np.zeros((10, 1)), np.minimum(cuts, n_c[:, None])], 1), axis=1)
      got = np.stack([np.bincount(client[labels == c], minlength=m) for c in range(10)])
      assert np.abs(got - want).max() <= 1  # float32 vs float64 cumsum at a rounding edge
    skews.append(_skew(client, labels, m))
  # IID's skew is sampling noise of ~29 examples a client (a stratified large-alpha split
  # has less); from alpha = 100 down it grows monotonically.
  assert skews[1:] == sorted(skews[1:]), skews
  assert skews[0] < 0.3 < 0.8 < skews[-1] and skews[0] < skews[2], skews
  # Deterministic from the key.
  np.testing.assert_array_equal(skewed(labels, 0.1), fedavg.dirichlet_partition(
      jnp.asarray(labels), rng, m, 10, 0.1))


def test_tiny_config_trains_and_resumes_exactly(tmp_path, data_dir):
  """4 rounds with checkpoints at 2 and 4; the step-2 checkpoint alone resumes to the same
  metrics at rounds 3 and 4 and the same state, bitwise; the eval reads the test split."""
  spec = 'fedavg_digits.py:tiny,alpha=0.5'
  result = train_spec(spec, tmp_path / 'straight', data_dir)
  assert 0.0 <= result['accuracy'] <= 1.0 and np.isfinite(result['loss'])
  straight, _, _ = check_resumes_alike(
      spec, lambda workdir, **kw: train_spec(spec, workdir, data_dir, **kw), tmp_path,
      must_have=('loss', 'accuracy', 'clients', 'local_steps'))
  assert straight[4]['loss'] < straight[1]['loss']


def test_eight_devices_match_one(tmp_path):
  """3 clients a round padded to 8 on 8 devices (one client each, under jit and pmap): the
  same losses and test accuracy as one device."""
  check_eight_devices('fedavg_digits.py:tiny', tmp_path, ('jit', 'pmap'),
                      close=('loss', 'accuracy', 'grad_norm'), equal=('clients', 'local_steps'),
                      evals=('accuracy',), rel=1e-5, abs=1e-6)
