"""Is a pydoc passage in its own word order? A two-class acceptability judgement (as CoLA's
grammatical / not, Warstadt et al. 2019) over `pydoc_chapters`' passages, as TFDS builder
`pydoc_chapters_order`: each passage of at least MIN_WORDS space-separated words appears
twice, as written (label 1) and with its words shuffled (label 0; a seeded permutation that
moves at least one word), in the same train / test blocks as pydoc_chapters. Both copies
hold the same bytes, so no bag of bytes (or of words) tells them apart: the task needs
the order of the text, what a language model's pre-training learns. Examples as
pydoc_chapters' (`text`, `tokens` (LENGTH,), `label`, `topic`).
"""

import numpy as np

from train.datasets import pydoc_chapters

MIN_WORDS = 4
NAMES = ('shuffled', 'original')
SEED = 0


def shuffle_words(data: bytes, rng: np.random.Generator) -> bytes:
  """The words of `data` (split on single spaces) in a random order other than their own."""
  words = data.split(b' ')
  while True:
    order = rng.permutation(len(words))
    out = b' '.join(words[i] for i in order)
    if out != data:
      return out


class PydocChaptersOrder(pydoc_chapters.PydocChapters):
  """pydoc passages as written or with their words shuffled."""
  LABELS = NAMES

  def _generate_examples(self, texts, test):
    def corrupt(data, rng):
      return shuffle_words(data, rng) if len(data.split(b' ')) >= MIN_WORDS else None
    return pydoc_chapters.paired_examples(texts, test, corrupt, SEED)
