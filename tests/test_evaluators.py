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
