"""Which documentation file a pydoc passage comes from: text classification over Python's
help() topics (`pydoc_data.topics`), labelled by the file of the CPython docs each topic is
taken from (its chapter, e.g. reference/datamodel), as TFDS builder `pydoc_chapters`.

The topics overlap (the 'compound' topic holds the whole compound-statements chapter, 'if'
and 'while' again), so each chapter's text is its topics' paragraphs (split on blank lines,
topics in name order), each kept once; a paragraph found in two chapters is dropped (its
label would be ambiguous). Each chapter's text is cut into passages of `PASSAGE_BYTES`
UTF-8 bytes, and one block of `BLOCK` consecutive passages in five is held out as the test
split (the passages after every 4 x BLOCK go to test), so test passages are unseen text
from the same chapters. Examples: `text` (the passage), `tokens` (LENGTH,) byte ids
(`arch/vocab.py`: <s> passage </s>, <pad>-padded, as the byte tokenizer makes them),
`label` (the chapter's index in CHAPTERS) and `topic` (the first topic holding the
paragraph the passage starts in).
"""

import sys

import numpy as np
import tensorflow_datasets as tfds

from arch import vocab

LENGTH = 128  # tokens: <s> + PASSAGE_BYTES + </s>
PASSAGE_BYTES = LENGTH - 2
BLOCK = 4  # consecutive passages held out together
# The docs file each help() topic comes from (Python 3.11's topics; CPython's
# Doc/tools/extensions/pyspecific.py names the labels, the headings say where they sit).
CHAPTERS = {
    'reference/lexical_analysis': ('floating', 'id-classes', 'identifiers', 'imaginary',
                                   'integers', 'numbers', 'strings'),
    'reference/datamodel': ('attribute-access', 'callable-types', 'context-managers',
                            'customization', 'numeric-types', 'objects', 'sequence-types',
                            'specialnames', 'types'),
    'reference/executionmodel': ('dynamic-features', 'exceptions', 'execmodel', 'naming'),
    'reference/expressions': ('atom-identifiers', 'atom-literals', 'attribute-references',
                              'await', 'binary', 'bitwise', 'booleans', 'calls',
                              'comparisons', 'conversions', 'dict', 'exprlists', 'in',
                              'lambda', 'lists', 'operator-summary', 'power', 'shifting',
                              'slicings', 'subscriptions', 'unary'),
    'reference/simple_stmts': ('assert', 'assignment', 'augassign', 'break', 'continue',
                               'del', 'global', 'import', 'nonlocal', 'pass', 'raise',
                               'return', 'yield'),
    'reference/compound_stmts': ('async', 'class', 'compound', 'else', 'for', 'function',
                                 'if', 'try', 'while', 'with'),
    'library/stdtypes': ('bltin-code-objects', 'bltin-ellipsis-object', 'bltin-null-object',
                         'bltin-type-objects', 'specialattrs', 'string-methods', 'truth',
                         'typesfunctions', 'typesmapping', 'typesmethods', 'typesmodules',
                         'typesseq', 'typesseq-mutable'),
    'library/string': ('formatstrings',),
    'library/pdb': ('debugger',),
}
NAMES = tuple(CHAPTERS)


def chapter_texts(docs: dict) -> dict:
  """{chapter: [(paragraph, topic), ...]}: each chapter's paragraphs in topic-name order,
  each once, without the paragraphs that also occur in another chapter. Topics that
  CHAPTERS does not name are left out."""
  paragraphs = {}
  for chapter, names in CHAPTERS.items():
    seen = paragraphs.setdefault(chapter, {})
    for name in sorted(n for n in names if n in docs):
      for p in docs[name].split('\n\n'):
        p = p.strip('\n')
        if p.strip() and p not in seen:
          seen[p] = name
  owners = {}
  for chapter, seen in paragraphs.items():
    for p in seen:
      owners.setdefault(p, set()).add(chapter)
  return {chapter: [(p, t) for p, t in seen.items() if len(owners[p]) == 1]
          for chapter, seen in paragraphs.items()}


def passages(paragraphs) -> list:
  """[(passage bytes, topic)]: the paragraphs joined by blank lines, cut every
  PASSAGE_BYTES bytes (a last, shorter passage included)."""
  data, starts, topics = b'', [], []
  for p, topic in paragraphs:
    starts.append(len(data))
    topics.append(topic)
    data += p.encode('utf-8') + b'\n\n'
  out = []
  for i in range(0, len(data), PASSAGE_BYTES):
    k = int(np.searchsorted(starts, i, side='right')) - 1
    out.append((data[i:i + PASSAGE_BYTES], topics[k]))
  return out


def is_test(index: int) -> bool:
  """Passage `index` of its chapter is held out: the fifth block of BLOCK in every five."""
  return (index // BLOCK) % 5 == 4


def byte_tokens(data: bytes) -> np.ndarray:
  """<s> bytes </s>, padded to LENGTH, in the byte tokenizer's ids."""
  ids = [vocab.BOS] + [b + vocab.NUM_SPECIAL for b in data] + [vocab.EOS]
  if len(ids) > LENGTH:
    raise ValueError(f'{len(data)} bytes do not fit {LENGTH} tokens')
  return np.asarray(ids + [vocab.PAD] * (LENGTH - len(ids)), np.int32)


def paired_examples(texts, test, corrupt, seed):
  """The two-class examples of a subclass that judges passages: each passage of the split
  as written (label 1) and `corrupt(data, rng)` of it (label 0), in the split's blocks as
  pydoc_chapters'; a passage is left out where `corrupt` returns None or the passage
  itself. The rng is seeded with `seed` + the split."""
  rng = np.random.default_rng(seed + int(test))
  for chapter in NAMES:
    for i, (data, topic) in enumerate(passages(texts[chapter])):
      if is_test(i) != test:
        continue
      corrupted = corrupt(data, rng)
      if corrupted is None or corrupted == data:
        continue
      for label, text in ((1, data), (0, corrupted)):
        yield f'{chapter}/{i}/{label}', {'text': text.decode('utf-8', errors='replace'),
                                         'tokens': byte_tokens(text), 'label': label,
                                         'topic': topic}


class PydocChapters(tfds.core.GeneratorBasedBuilder):
  """pydoc passages labelled by the docs file (chapter) they come from. A subclass labels
  the same passages otherwise: its LABELS and `_generate_examples(texts, test)`."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  LABELS = NAMES

  def _info(self):
    return self.dataset_info_from_configs(
        description=sys.modules[type(self).__module__].__doc__,
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'tokens': tfds.features.Tensor(shape=(LENGTH,), dtype=np.int32),
            'label': tfds.features.ClassLabel(names=self.LABELS),
            'topic': tfds.features.Text(),
        }),
        supervised_keys=('tokens', 'label'),
        homepage='https://docs.python.org/3/library/pydoc.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ships with the Python standard library
    from pydoc_data import topics
    texts = chapter_texts(topics.topics)
    return {'train': self._generate_examples(texts, False),
            'test': self._generate_examples(texts, True)}

  def _generate_examples(self, texts, test):
    for label, chapter in enumerate(NAMES):
      for i, (data, topic) in enumerate(passages(texts[chapter])):
        if is_test(i) == test:
          yield f'{chapter}/{i}', {'text': data.decode('utf-8', errors='replace'),
                                   'tokens': byte_tokens(data), 'label': label,
                                   'topic': topic}
