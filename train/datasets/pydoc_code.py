"""Lexical tagging of the Python code in pydoc: every byte of the code snippets of Python's
help() topics (`pydoc_data.topics`) tagged by the token it belongs to, as Python's own
`tokenize` module reads it, as TFDS builder `pydoc_code`.

Snippets: the paragraphs of the topics' indented blocks that `ast.parse` accepts, runs of
them joined (looking inside paragraphs that do not parse for indented blocks that do, so
grammar productions and prose stay out), and the statements of interactive sessions
('>>> ' and '... ' lines, output dropped), each distinct snippet once. A snippet's bytes
are tagged as a whole, then cut at line ends into windows of at most LENGTH - 2 bytes (a
longer line is cut inside). A fixed permutation (seed 0) of the sorted snippets puts a
fifth of them in the test split.

Tags (TAGS): 0 other token text (operators, brackets, line continuations), 1 identifier
(NAME tokens that are not keywords), 2 keyword (`keyword.kwlist`; soft keywords such as
'match' are identifiers), 3 string literal (prefix and quotes included), 4 number,
5 comment; whitespace and newlines are not tagged (-1). Examples: `text` (the window),
`tokens` (LENGTH,) byte ids (<s> bytes </s>, <pad>-padded: `arch/vocab.py`), `tags` (LENGTH,)
with -1 on <s>, </s>, padding and whitespace.
"""

import ast
import io
import keyword
import re
import textwrap
import tokenize

import numpy as np
import tensorflow_datasets as tfds

from arch import vocab

LENGTH = 128
TAGS = ('other', 'identifier', 'keyword', 'string', 'number', 'comment')
OTHER, IDENTIFIER, KEYWORD, STRING, NUMBER, COMMENT = range(len(TAGS))
TEST_FRACTION = 0.2
_KIND = {tokenize.STRING: STRING, tokenize.NUMBER: NUMBER, tokenize.COMMENT: COMMENT,
         tokenize.OP: OTHER, tokenize.ERRORTOKEN: OTHER}
for _name in ('FSTRING_START', 'FSTRING_MIDDLE', 'FSTRING_END'):  # Python >= 3.12
  if hasattr(tokenize, _name):
    _KIND[getattr(tokenize, _name)] = STRING


def byte_tags(code: str) -> np.ndarray:
  """One tag per UTF-8 byte of `code` (TAGS' indices; -1 for whitespace and newlines)."""
  lines = code.splitlines(keepends=True)
  line_start = np.cumsum([0] + [len(line) for line in lines])  # in characters
  char_tags = np.full((len(code),), -1, np.int32)
  for tok in tokenize.generate_tokens(io.StringIO(code).readline):
    if tok.type == tokenize.NAME:
      kind = KEYWORD if keyword.iskeyword(tok.string) else IDENTIFIER
    elif tok.type in _KIND:
      kind = _KIND[tok.type]
    else:  # NEWLINE, NL, INDENT, DEDENT, ENDMARKER: layout
      continue
    (r0, c0), (r1, c1) = tok.start, tok.end
    if r0 > len(lines):
      continue
    char_tags[line_start[r0 - 1] + c0:line_start[r1 - 1] + c1] = kind
  for i, ch in enumerate(code):
    if ch.isspace():
      char_tags[i] = -1
    elif ch == '\\' and code[i + 1:i + 2] in ('\n', '\r') and char_tags[i] == -1:
      char_tags[i] = OTHER  # an explicit line join, outside any token
  widths = [len(ch.encode('utf-8')) for ch in code]
  return np.repeat(char_tags, widths).astype(np.int32)


def _blocks(text: str) -> list:
  """The runs of lines indented by at least 3 spaces (blank lines inside kept)."""
  out, cur = [], []
  for line in text.split('\n') + [None]:
    if line is not None and (line.startswith('   ') or (cur and not line.strip())):
      cur.append(line)
    else:
      if cur:
        out.append('\n'.join(cur).strip('\n'))
      cur = []
  return out


def _parses(code: str) -> bool:
  try:
    ast.parse(code)
    return True
  except SyntaxError:
    return False


def _session(code: str) -> str:
  """The statements of an interactive session that parse, one after another."""
  stmts, cur = [], None
  for line in code.split('\n'):
    s = line.lstrip()
    if s.startswith('>>> ') or s == '>>>':
      if cur is not None:
        stmts.append('\n'.join(cur))
      cur = [s[4:]]
    elif cur is not None and (s.startswith('... ') or s == '...'):
      cur.append(s[4:])
    else:
      if cur is not None:
        stmts.append('\n'.join(cur))
      cur = None
  if cur is not None:
    stmts.append('\n'.join(cur))
  return '\n'.join(s for s in stmts if s.strip() and _parses(s))


def _paragraphs(code: str) -> list:
  """A dedented block cut before each unindented line that follows a blank line."""
  out, cur = [], []
  for line in code.split('\n'):
    if cur and line[:1].strip() and not cur[-1].strip():
      out.append('\n'.join(cur).strip('\n'))
      cur = []
    cur.append(line)
  if cur:
    out.append('\n'.join(cur).strip('\n'))
  return [p for p in out if p.strip()]


def _is_code(code: str) -> bool:
  return _parses(code) and not re.fullmatch(r'[\w .,]*', code)  # not a lone prose line


def snippets(text: str) -> list:
  """The code snippets of a help() topic, in order (see the module docstring): consecutive
  paragraphs of code in an indented block make one snippet."""
  out = []
  for block in _blocks(text):
    run = []
    for para in _paragraphs(textwrap.dedent(block)) + [None]:
      if para is not None and not para.startswith('>>>') and _is_code(para):
        run.append(para)
        continue
      if run:
        out.append('\n\n'.join(run))
        run = []
      if para is None:
        continue
      if para.startswith('>>>'):
        session = _session(para)
        if session:
          out.append(session)
      else:
        out.extend(snippets(para))
  return [s for s in out if len(s.strip()) >= 8]


def windows(code: str) -> list:
  """[(bytes, tags)] of a snippet: cut at line ends into at most LENGTH - 2 bytes."""
  data, tags = code.encode('utf-8'), byte_tags(code)
  size, out, start = LENGTH - 2, [], 0
  while start < len(data):
    end = min(start + size, len(data))
    if end < len(data):
      cut = data.rfind(b'\n', start, end)
      end = cut + 1 if cut > start else end
    if data[start:end].strip():
      out.append((data[start:end], tags[start:end]))
    start = end
  return out


def example(data: bytes, tags: np.ndarray) -> dict:
  """The padded `tokens` and `tags` of one window."""
  tokens = np.full((LENGTH,), vocab.PAD, np.int32)
  row = np.full((LENGTH,), -1, np.int32)
  n = len(data)
  tokens[0], tokens[n + 1] = vocab.BOS, vocab.EOS
  tokens[1:n + 1] = np.frombuffer(data, np.uint8).astype(np.int32) + vocab.NUM_SPECIAL
  row[1:n + 1] = tags
  return {'tokens': tokens, 'tags': row}


def split_snippets(docs: dict):
  """(train, test): the distinct snippets of all topics, sorted, split by a fixed
  permutation (seed 0)."""
  found = sorted({s for name in sorted(docs) for s in snippets(docs[name])})
  order = np.random.default_rng(0).permutation(len(found))
  n_test = max(1, int(round(TEST_FRACTION * len(found))))
  test = {found[i] for i in order[:n_test]}
  return [s for s in found if s not in test], [s for s in found if s in test]


class PydocCode(tfds.core.GeneratorBasedBuilder):
  """Windows of pydoc's code snippets with a lexical tag per byte."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'tokens': tfds.features.Tensor(shape=(LENGTH,), dtype=np.int32),
            'tags': tfds.features.Tensor(shape=(LENGTH,), dtype=np.int32),
        }),
        homepage='https://docs.python.org/3/library/tokenize.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ships with the Python standard library
    from pydoc_data import topics
    train, test = split_snippets(topics.topics)
    return {'train': self._generate_examples(train), 'test': self._generate_examples(test)}

  def _generate_examples(self, codes):
    for i, code in enumerate(codes):
      for j, (data, tags) in enumerate(windows(code)):
        yield f'{i}/{j}', {'text': data.decode('utf-8', errors='replace'),
                           **example(data, tags)}
