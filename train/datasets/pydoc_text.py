"""The English text of Python's `pydoc_data.topics` (the help() topics) as a TFDS builder.

One example per topic document (~465 K characters in all). Documents go to train or
validation by a fixed permutation (seed 0): 10% of documents, at least one, to validation.
"""

import numpy as np
import tensorflow_datasets as tfds

VALIDATION_FRACTION = 0.1


class PydocText(tfds.core.GeneratorBasedBuilder):
  """Python's help() topic documents: `topic` name and UTF-8 `text`."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'topic': tfds.features.Text(),
            'text': tfds.features.Text(),
        }),
        homepage='https://docs.python.org/3/library/pydoc.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ships with the Python standard library
    from pydoc_data import topics
    names = sorted(topics.topics)
    order = np.random.default_rng(0).permutation(len(names))
    n_val = max(1, int(round(VALIDATION_FRACTION * len(names))))
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    return {'train': self._generate_examples(topics.topics, train),
            'validation': self._generate_examples(topics.topics, val)}

  def _generate_examples(self, docs, names):
    for name in names:
      yield name, {'topic': name, 'text': docs[name]}
