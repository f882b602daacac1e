"""Is a pydoc passage spelled as written? A two-class judgement over `pydoc_chapters`'
passages, as TFDS builder `pydoc_chapters_spell`: each passage holding a word of at least
MIN_BYTES bytes appears twice, as written (label 1) and with the inner letters of each such
word shuffled, its first and last bytes kept (label 0; as in the "Cmabrigde
Uinervtisy" text), in the same train / test blocks as pydoc_chapters. Both copies hold
the same bytes and the same word lengths, so no bag of bytes tells them apart: the task
needs the spelling of English, what a byte-level masked LM's pre-training learns first.
A word is what lies between two spaces; it is scrambled when all its bytes but the
first and last are ASCII letters (so "name," and "*name*" are, "__init__" and "x1" are
not). Examples as pydoc_chapters' (`text`, `tokens` (LENGTH,), `label`, `topic`).
"""

import numpy as np

from train.datasets import pydoc_chapters

MIN_BYTES = 4  # a shorter word has at most one inner letter
NAMES = ('scrambled', 'original')
SEED = 0


def scramble_words(data: bytes, rng: np.random.Generator) -> bytes:
  """`data` with the inner letters of each word of MIN_BYTES or more bytes whose inner
  bytes are all letters shuffled (its first and last bytes kept)."""
  out = []
  for word in data.split(b' '):
    if len(word) >= MIN_BYTES and word[1:-1].isalpha():
      inner = bytearray(word[1:-1])
      rng.shuffle(inner)
      word = word[:1] + bytes(inner) + word[-1:]
    out.append(word)
  return b' '.join(out)


class PydocChaptersSpell(pydoc_chapters.PydocChapters):
  """pydoc passages as written or with the inner letters of their words shuffled."""
  LABELS = NAMES

  def _generate_examples(self, texts, test):
    return pydoc_chapters.paired_examples(texts, test, scramble_words, SEED)
