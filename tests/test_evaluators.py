"""Linear-probe and k-NN evaluators on features whose answer is known."""

import numpy as np

from train import evaluators


def _blobs(n, dim, classes, spread, seed):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(classes, dim)) * 3
  y = rng.integers(0, classes, n)
  return (centres[y] + spread * rng.normal(size=(n, dim))).astype(np.float32), y


def test_linear_probe_separates_blobs_and_not_noise():
  x, y = _blobs(600, 16, 5, 1.0, 0)
  tx, ty = _blobs(300, 16, 5, 1.0, 0)  # same centres (same seed), fresh draws below
  tx = tx + 0.1 * np.random.default_rng(1).normal(size=tx.shape).astype(np.float32)
  assert evaluators.linear_probe_accuracy(x, y, tx, ty, 5) > 0.95
  # Random labels: nothing to learn, so held-out accuracy stays near chance (1/5).
  ry = np.random.default_rng(2).integers(0, 5, len(y))
  rty = np.random.default_rng(3).integers(0, 5, len(ty))
  assert evaluators.linear_probe_accuracy(x, ry, tx, rty, 5) < 0.35


def test_linear_probe_needs_more_than_a_centroid():
  """Classes that differ only along one low-variance direction among loud noise: a
  fitted linear model finds it, while k-NN in raw cosine similarity cannot."""
  rng = np.random.default_rng(0)
  n = 800
  y = rng.integers(0, 2, n)
  x = rng.normal(size=(n, 32)).astype(np.float32) * 5
  x[:, 0] = (2 * y - 1) * 0.5 + 0.05 * rng.normal(size=n)
  tr, te = slice(0, 600), slice(600, n)
  assert evaluators.linear_probe_accuracy(x[tr], y[tr], x[te], y[te], 2) > 0.95
  assert evaluators.knn_accuracy(x[tr], y[tr], x[te], y[te], 2) < 0.7


def test_knn_matches_a_brute_force_vote():
  x, y = _blobs(200, 8, 4, 3.0, 0)
  tx, ty = _blobs(50, 8, 4, 3.0, 5)
  got = evaluators.knn_accuracy(x, y, tx, ty, 4, k=7, temperature=0.1, chunk=16)
  n = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  sim = n(tx) @ n(x).T
  pred = []
  for row in sim:
    idx = np.argsort(-row)[:7]
    votes = np.zeros(4)
    np.add.at(votes, y[idx], np.exp(row[idx] / 0.1))
    pred.append(votes.argmax())
  assert got == np.mean(np.array(pred) == ty)


def test_frechet_distance_is_the_closed_form():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 4)) @ rng.normal(size=(4, 4))
  y = rng.normal(size=(400, 4)) @ rng.normal(size=(4, 4)) + 1.5
  assert abs(evaluators.frechet_distance(x, x)) < 1e-8
  # A shift adds exactly its squared length.
  c = np.array([1.0, -2.0, 0.5, 3.0])
  assert np.isclose(evaluators.frechet_distance(x, x + c), (c ** 2).sum())
  # Against the textbook formula with scipy's general matrix square root.
  from scipy import linalg
  sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  want = (((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(sx + sy)
          - 2 * np.trace(linalg.sqrtm(sx @ sy).real))
  assert np.isclose(evaluators.frechet_distance(x, y), want, rtol=1e-6)
  assert np.isclose(evaluators.frechet_distance(y, x), want, rtol=1e-6)


def test_fd_evaluator_ranks_real_digits_far_above_noise_and_counts_classes(
    tmp_path, data_dir):
  from conftest import load_config
  from train import data as data_lib
  from train import loop
  config = load_config('lenet_digits.py', data__data_dir=data_dir)
  opts = evaluators.FdOptions(type='fd', classifier='configs/lenet_digits.py',
                              workdir=str(tmp_path / 'clf'))
  # The classifier the evaluator restores (trained briefly here; unset, it trains its config).
  clf = load_config('lenet_digits.py', data__data_dir=data_dir, total_steps=300,
                    eval_every=300, log_every=300, ckpt_every=300)
  loop.train_and_evaluate(clf, opts.workdir)
  src = data_lib.source(config.data, 'train')
  train = np.stack([np.asarray(src[i]['image']) for i in range(360)])
  labels = np.asarray([int(src[i]['label']) for i in range(360)])
  noise = np.random.default_rng(0).integers(0, 256, train.shape).astype(np.uint8)
  threes = np.repeat(train[labels == 3][:1], 360, axis=0)
  result = {name: evaluators.fd_metrics(config, opts, lambda n, x=x: {'images': x[:n]})
            for name, x in (('train', train), ('noise', noise), ('threes', threes))}
  # The first 360 train images are exactly what the floor measures.
  assert np.isclose(result['train']['fd'], result['train']['fd_floor'])
  assert result['noise']['fd'] > 5 * result['train']['fd']
  assert result['train']['class_coverage'] == 1.0
  assert result['threes']['class_coverage'] == 0.1
