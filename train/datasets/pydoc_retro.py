"""The pydoc help() topics split for retrieval: a held-out split whose documents have near
neighbours in the train split (`near_neighbour_split`).

Many topics repeat long passages of others (the grammar and the semantics of one statement
under several topic names). Validation takes, greedily from the most overlapping, documents
whose 32-byte chunks mostly (at least half) recur verbatim in the train documents, up to 10%
of the bytes; everything else is train, the retrieval database of configs/retro_pydoc.py.
"""

import numpy as np
import tensorflow_datasets as tfds

# near_neighbour_split(pydoc_data.topics.topics)'s validation documents (Python 3.11's
# topics; tests/test_retro.py recomputes them): configs/retro_pydoc.py keeps them out of
# RETRO's database without recomputing the split at every config load.
VALIDATION = ('augassign', 'context-managers', 'customization', 'dynamic-features', 'else',
              'function', 'id-classes', 'if', 'numeric-types', 'sequence-types',
              'typesseq-mutable')


def near_neighbour_split(docs: dict, chunk: int = 32, min_overlap: float = 0.5,
                         max_fraction: float = 0.1):
  """(train names, validation names, {name: overlap}): validation documents whose
  `chunk`-byte chunks (at multiples of `chunk`) recur verbatim somewhere in the train
  documents at least `min_overlap` of the time, taken greedily from the most overlapping
  until they hold `max_fraction` of the bytes; a document joins only if its overlap with
  the documents still in train stays above `min_overlap`. `overlap` is that fraction."""
  names = sorted(docs)
  pieces = {n: [docs[n][i:i + chunk] for i in range(0, len(docs[n]) - chunk + 1, chunk)]
            for n in names}
  wanted = {p for n in names for p in pieces[n]}
  where = {}  # each aligned chunk: the documents that hold it anywhere
  for n in names:
    text = docs[n]
    for i in range(len(text) - chunk + 1):
      piece = text[i:i + chunk]
      if piece in wanted:
        where.setdefault(piece, set()).add(n)

  def overlap(name, held_out):
    if not pieces[name]:
      return 0.0
    return float(np.mean([bool(where[p] - held_out - {name}) for p in pieces[name]]))

  total = sum(len(docs[n]) for n in names)
  first = {n: overlap(n, set()) for n in names}
  val, size = [], 0
  for n in sorted(names, key=lambda n: (-first[n], n)):
    if first[n] < min_overlap or size + len(docs[n]) > max_fraction * total:
      continue
    held = set(val) | {n}
    if all(overlap(v, held) >= min_overlap for v in held):
      val.append(n)
      size += len(docs[n])
  train = [n for n in names if n not in val]
  stats = {v: overlap(v, set(val)) for v in val}
  return train, sorted(val), stats


class PydocRetro(tfds.core.GeneratorBasedBuilder):
  """Python's help() topics, validation documents with near neighbours in train."""
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
    docs = dict(topics.topics)
    train, val, _ = near_neighbour_split(docs)
    return {'train': self._generate_examples(docs, train),
            'validation': self._generate_examples(docs, val)}

  def _generate_examples(self, docs, names):
    for name in names:
      yield name, {'topic': name, 'text': docs[name]}
