"""Zachary's karate club (Zachary 1977) from networkx, as a TFDS builder for node
classification.

One graph: 34 members, 78 friendships listed both ways (156 directed edges, unweighted).
A member's label is the club they joined after the split (networkx's 'club' attribute:
0 'Mr. Hi', 1 'Officer'); features are one-hot node identities (34), as in Kipf & Welling's
karate experiment. The split is semi-supervised and fixed: 'train' is the graph with one
labelled member per club, the two leaders (the instructor, node 0, and the administrator,
node 33); 'test' is the same graph with the other 32 members labelled (`mask`).
"""

import numpy as np

from train.datasets.procedural import Procedural

NUM_NODES = 34
CLUBS = ('Mr. Hi', 'Officer')
TRAIN_NODES = (0, 33)


def karate_graph() -> dict:
  """The whole graph: nodes (34, 34) one-hot, senders / receivers (156,), label (34,)."""
  import networkx as nx
  g = nx.karate_club_graph()
  assert g.number_of_nodes() == NUM_NODES and sorted(g.nodes) == list(range(NUM_NODES))
  pairs = np.asarray(sorted(g.edges()), np.int32)  # each undirected edge once, (78, 2)
  senders = np.concatenate([pairs[:, 0], pairs[:, 1]])
  receivers = np.concatenate([pairs[:, 1], pairs[:, 0]])
  label = np.asarray([CLUBS.index(g.nodes[i]['club']) for i in range(NUM_NODES)], np.int32)
  return {'nodes': np.eye(NUM_NODES, dtype=np.float32), 'senders': senders,
          'receivers': receivers, 'label': label}


class Karate(Procedural):
  """Zachary's karate club: one graph, node labels, train / test node masks."""
  FEATURES = {'nodes': ((None, NUM_NODES), np.float32), 'senders': ((None,), np.int32),
              'receivers': ((None,), np.int32), 'label': ((None,), np.int32),
              'mask': ((None,), np.bool_)}
  SPLITS = {'train': (True,), 'test': (False,)}  # the labelled leaders, or everyone else
  HOMEPAGE = ('https://networkx.org/documentation/stable/reference/generated/'
              'networkx.generators.social.karate_club_graph.html')

  def generate(self, train):
    mask = np.isin(np.arange(NUM_NODES), TRAIN_NODES)
    yield {**karate_graph(), 'mask': mask if train else ~mask}
