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
import tensorflow_datasets as tfds

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


class Karate(tfds.core.GeneratorBasedBuilder):
  """Zachary's karate club: one graph, node labels, train / test node masks."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'nodes': tfds.features.Tensor(shape=(None, NUM_NODES), dtype=np.float32),
            'senders': tfds.features.Tensor(shape=(None,), dtype=np.int32),
            'receivers': tfds.features.Tensor(shape=(None,), dtype=np.int32),
            'label': tfds.features.Tensor(shape=(None,), dtype=np.int32),
            'mask': tfds.features.Tensor(shape=(None,), dtype=np.bool_),
        }),
        homepage='https://networkx.org/documentation/stable/reference/generated/'
                 'networkx.generators.social.karate_club_graph.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ships with networkx
    graph = karate_graph()
    train = np.isin(np.arange(NUM_NODES), TRAIN_NODES)
    return {'train': self._generate_examples(graph, train),
            'test': self._generate_examples(graph, ~train)}

  def _generate_examples(self, graph, mask):
    yield 0, {**graph, 'mask': mask}
