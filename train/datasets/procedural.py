"""The skeleton the offline builders share: a TFDS builder whose examples a function of
the builder's module draws (from fixed seeds, or from data an installed package ships).

A builder subclasses `Procedural` and sets
  FEATURES  {name: (shape, numpy dtype)} (a shape may hold None: a variable-sized axis), or
            {name: a tfds feature} for anything else (a ClassLabel);
  SPLITS    {split name: a tuple of arguments for `generate`};
  generate(*args) -> an iterable of example dicts (numbered in order), or of (key,
            example) pairs where the keys mean something (TFDS orders a split by them).
Its description is its module's docstring; its version 1.0.0 unless it says otherwise.
"""

import abc
import sys

import tensorflow_datasets as tfds


class Procedural(tfds.core.GeneratorBasedBuilder):
  """A builder of `SPLITS` whose examples `generate(*SPLITS[split])` yields."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  FEATURES: dict = {}
  SPLITS: dict = {}
  HOMEPAGE: str = ''

  @abc.abstractmethod
  def generate(self, *args):
    """The examples of one split, from its SPLITS arguments."""

  def _info(self):
    features = {name: f if isinstance(f, tfds.features.FeatureConnector)
                else tfds.features.Tensor(shape=f[0], dtype=f[1])
                for name, f in self.FEATURES.items()}
    return self.dataset_info_from_configs(
        description=sys.modules[type(self).__module__].__doc__,
        features=tfds.features.FeaturesDict(features), homepage=self.HOMEPAGE or None)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {name: self._generate_examples(args) for name, args in self.SPLITS.items()}

  def _generate_examples(self, args):
    for i, item in enumerate(self.generate(*args)):
      yield item if isinstance(item, tuple) else (i, item)
