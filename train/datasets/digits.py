"""scikit-learn's 8x8 handwritten digits (1,797 images, UCI ML repository) as a TFDS builder.

Pixels are scaled from the original 0..16 to uint8 0..255. The train/test split is a fixed
permutation (seed 0): 1,437 train, 360 test.
"""

import numpy as np
import tensorflow_datasets as tfds

NUM_TEST = 360


class Digits(tfds.core.GeneratorBasedBuilder):
  """8x8 grey-scale handwritten digits, 10 classes."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        # tfds.features.Image needs TensorFlow to encode PNG; raw uint8 tensors do not.
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ships with scikit-learn
    from sklearn.datasets import load_digits
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    test, train = order[:NUM_TEST], order[NUM_TEST:]
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return {'train': self._generate_examples(images, data.target, train),
            'test': self._generate_examples(images, data.target, test)}

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      yield int(i), {'image': images[i], 'label': int(labels[i])}
