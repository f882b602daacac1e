"""Stochastic block model graphs (Holland, Laskey & Leinhardt 1983) with noisy,
community-correlated node features, as a TFDS builder for inductive node classification
(GraphSAGE with neighbour sampling).

Every graph has 3,000 nodes in 5 equal communities (the labels, assigned in a random
order). Two nodes are joined with probability p_in in the same community and p_out across,
set so that a node has on average 16 neighbours, half of them in its own community
(homophily 0.5; p_in = 8 / 600, p_out = 8 / 2,400). A node's features (16) are its
community's mean, shared by every graph (drawn once from N(0, I) with a fixed seed and
scaled by 0.25), plus N(0, I) noise: alone they say little about the community, the mean of
a node's neighbours says more. The splits are other graphs of the same model (inductive,
like the paper's protein-interaction graphs): 8 train, 1 validation and 2 test graphs, from
different seeds, every node labelled (`mask`). Edges are listed both ways (about 48,000
directed edges a graph).

Reference points on the two test graphs (numpy, 2026-12-06): a node's own features
classified by the nearest true class mean (the Bayes rule for the features alone) give
0.476 accuracy; the average of (twice) its own and its neighbours' features, classified by
the nearest class mean of those averages, 0.677.
"""

import numpy as np

from train.datasets.procedural import Procedural

NUM_NODES, NUM_CLASSES, NUM_FEATURES = 3000, 5, 16
DEGREE, HOMOPHILY = 16.0, 0.5
MEAN_SCALE = 0.25
SPLITS = {'train': (8, 1), 'validation': (1, 2), 'test': (2, 3)}  # (graphs, seed)
MAX_EDGES = 52_000  # directed edges per graph in a batch (the 11 graphs have 47,708-48,990)


def class_means() -> np.ndarray:
  """(classes, features): the communities' feature means, the same in every graph."""
  return MEAN_SCALE * np.random.default_rng(0).normal(size=(NUM_CLASSES, NUM_FEATURES))


def graph(rng, n=NUM_NODES) -> dict:
  """One SBM graph: nodes (n, F) float32, senders / receivers (e,) int32 (both ways),
  label (n,) int32, mask (n,) bool (all True)."""
  label = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int32)
  size = n / NUM_CLASSES
  p_in = DEGREE * HOMOPHILY / size
  p_out = DEGREE * (1 - HOMOPHILY) / (n - size)
  pairs = []
  for start in range(0, n, 500):  # the upper triangle, 500 rows at a time
    rows = np.arange(start, min(start + 500, n))
    p = np.where(label[rows, None] == label[None, :], p_in, p_out)
    hit = (rng.random(p.shape) < p) & (np.arange(n)[None, :] > rows[:, None])
    i, j = np.nonzero(hit)
    pairs.append(np.stack([rows[i], j], 1))
  pairs = np.concatenate(pairs).astype(np.int32)
  nodes = class_means()[label] + rng.normal(size=(n, NUM_FEATURES))
  return {'nodes': nodes.astype(np.float32),
          'senders': np.concatenate([pairs[:, 0], pairs[:, 1]]),
          'receivers': np.concatenate([pairs[:, 1], pairs[:, 0]]),
          'label': label, 'mask': np.ones(n, bool)}


class Sbm(Procedural):
  """Stochastic block model graphs of 3,000 nodes, 5 communities, noisy node features."""
  FEATURES = {'nodes': ((None, NUM_FEATURES), np.float32), 'senders': ((None,), np.int32),
              'receivers': ((None,), np.int32), 'label': ((None,), np.int32),
              'mask': ((None,), np.bool_)}
  SPLITS = SPLITS

  def generate(self, count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
      yield graph(rng)
