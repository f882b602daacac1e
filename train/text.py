"""Text for sequence experiments: tokenizers and the tokenized views of a TFDS split.

`config.data.tokenizer` switches the text stage on:
  'byte' byte-level: byte b -> id b + NUM_SPECIAL (vocabulary 260), nothing to train;
  'bpe'  byte-level BPE (Hugging Face `tokenizers`), trained on the train split's
         `text_features` to `config.data.vocab_size` ids on first use, saved as
         WORKDIR/tokenizer.json and reused by resumed runs and by the sampler.
Ids 0..3 are <pad> <s> </s> <mask> in both (`arch/sequence/vocab.py`).

Then each split is one of:
  packed (`config.data.pack = L`): the tokenized documents of the split, each followed by
      </s>, concatenated and cut into windows of L tokens: examples {'tokens': (L,)}.
      The last window is padded with <pad>.
  per-feature (`config.data.max_lengths = {feature: L}`): each feature's tokens + </s>,
      truncated to L (keeping </s> last) and padded with <pad>: examples {feature: (L,)}.
"""

import os
import tempfile

import numpy as np

from arch import vocab
from train.errors import UserError

TOKENIZER_FILE = 'tokenizer.json'


class ByteTokenizer:
  """UTF-8 bytes, shifted past the special ids."""
  kind = 'byte'
  vocab_size = vocab.BYTE_VOCAB_SIZE

  def encode(self, text: str) -> list[int]:
    return [b + vocab.NUM_SPECIAL for b in text.encode('utf-8')]

  def decode(self, ids) -> str:
    data = bytes(int(i) - vocab.NUM_SPECIAL for i in ids
                 if vocab.NUM_SPECIAL <= int(i) < self.vocab_size)
    return data.decode('utf-8', errors='replace')


class WordTokenizer:
  """A fixed vocabulary of words, id i = words[i], separated by spaces: the ids of a
  procedural token dataset made readable for the sampler (`config.sample.tokenizer =
  'words'`: the builder's `WORDS`). Id 0 is padding (dropped when decoding); there is no
  end-of-sequence id (`eos_id` None), since the dataset's ids need not reserve one."""
  kind = 'words'
  eos_id = None

  def __init__(self, words, name: str = ''):
    self.words = tuple(words)
    self.ids = {w: i for i, w in enumerate(self.words)}
    self.name = name

  def encode(self, text: str) -> list[int]:
    unknown = sorted({w for w in text.split() if self.ids.get(w, 0) == 0})
    if unknown:
      raise ValueError(f'{", ".join(unknown)} not in the {self.name} vocabulary '
                       f'({" ".join(self.words[1:])})')
    return [self.ids[w] for w in text.split()]

  def decode(self, ids) -> str:
    """' w1 w2 ...' (each word after a space, so a continuation appends to its prompt)."""
    return ''.join(' ' + self.words[int(i)] for i in ids if int(i) != 0)


class BpeTokenizer:
  """Byte-level BPE through Hugging Face `tokenizers`."""
  kind = 'bpe'

  def __init__(self, tok):
    self._tok = tok
    self.vocab_size = tok.get_vocab_size()

  @classmethod
  def train(cls, texts, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(vocab.SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    for i, name in enumerate(vocab.SPECIAL_TOKENS):
      assert tok.token_to_id(name) == i, (name, tok.token_to_id(name))
    return cls(tok)

  @classmethod
  def load(cls, path):
    from tokenizers import Tokenizer
    return cls(Tokenizer.from_file(path))

  def save(self, path):
    d = os.path.dirname(path) or '.'
    os.makedirs(d, exist_ok=True)
    with tempfile.NamedTemporaryFile('w', dir=d, delete=False, suffix='.tmp') as f:
      f.write(self._tok.to_str())
    os.replace(f.name, path)  # atomic: processes of one run may race to write it

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text).ids

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


def enabled(config) -> bool:
  return bool(config.data.get('tokenizer'))


def _features(config):
  feats = tuple(config.data.get('text_features') or ())
  if config.data.get('pack'):
    return feats or ('text',)
  return feats or tuple(config.data.get('max_lengths') or ())


def tokenizer(config, workdir: str | None = None, train_if_missing: bool = True,
              kind: str | None = None, train_source=None):
  """The run's tokenizer (`kind`, default config.data.tokenizer): byte-level, or the BPE
  saved in (or trained for, on the examples of `train_source()`) `workdir`; 'words' (a
  sampler's `config.sample.tokenizer` only) the `WORDS` of config.data.name's builder."""
  kind = kind or config.data.get('tokenizer')
  if kind == 'byte':
    tok = ByteTokenizer()
  elif kind == 'bpe':
    path = os.path.join(workdir, TOKENIZER_FILE) if workdir else None
    if path and os.path.exists(path):
      tok = BpeTokenizer.load(path)
    elif not train_if_missing or train_source is None:
      raise UserError(f'no {TOKENIZER_FILE} in {workdir}; the BPE tokenizer is trained by '
                      f'`python -m train` for this workdir first')
    else:
      size = int(config.data.get('vocab_size') or 0)
      if size <= vocab.BYTE_VOCAB_SIZE:
        raise UserError(f'config.data.vocab_size={size}: a BPE vocabulary needs more than '
                        f'{vocab.BYTE_VOCAB_SIZE} ids (the bytes and the special tokens)')
      src = train_source()
      feats = _features(config)
      texts = (_text(src[i][f]) for i in range(len(src)) for f in feats)
      tok = BpeTokenizer.train(texts, size)
      if path:
        tok.save(path)
  elif kind == 'words':  # a sampler's words for a token dataset's ids (no text stage)
    from train import datasets
    name = config.data.name
    words = getattr(datasets.OFFLINE.get(name), 'WORDS', None)
    if words is None:
      raise UserError(f"tokenizer 'words': dataset {name!r} has no WORDS vocabulary")
    tok = WordTokenizer(words, name)
  else:
    raise UserError(f"config.data.tokenizer={kind!r}; valid: 'byte', 'bpe' ('words' for "
                    f"the sampler)")
  return tok


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


class PackedSource:
  """A split as windows of `length` tokens over its concatenated documents."""

  def __init__(self, src, tok, features, length: int):
    ids = []
    for i in range(len(src)):
      example = src[i]
      for f in features:
        if f not in example:
          raise UserError(f'text feature {f!r} is not in the dataset; features: '
                          f'{", ".join(sorted(example))}')
        ids.extend(tok.encode(_text(example[f])))
        ids.append(vocab.EOS)
    n = -(-len(ids) // length)
    tokens = np.full((n * length,), vocab.PAD, np.int32)
    tokens[:len(ids)] = ids
    self.windows = tokens.reshape(n, length)
    self.num_tokens = len(ids)

  def __len__(self):
    return len(self.windows)

  def __getitem__(self, i):
    return {'tokens': self.windows[i]}


class PaddedSource:
  """A split with each text feature tokenized, </s>-terminated and padded to its length."""

  def __init__(self, src, tok, max_lengths: dict):
    self._src, self._tok, self._lengths = src, tok, dict(max_lengths)

  def __len__(self):
    return len(self._src)

  def __getitem__(self, i):
    example = self._src[i]
    out = {}
    for f, length in self._lengths.items():
      ids = self._tok.encode(_text(example[f]))[:length - 1] + [vocab.EOS]
      row = np.full((length,), vocab.PAD, np.int32)
      row[:len(ids)] = ids
      out[f] = row
    return out


def tokenized_source(config, src, tok):
  """The tokenized view of a TFDS data source that `config.data` asks for."""
  pack = int(config.data.get('pack') or 0)
  lengths = dict(config.data.get('max_lengths') or {})
  if bool(pack) == bool(lengths):
    raise UserError('a text dataset needs exactly one of config.data.pack (window length '
                    'for packed documents) or config.data.max_lengths ({feature: length})')
  if pack:
    return PackedSource(src, tok, _features(config), pack)
  return PaddedSource(src, tok, lengths)
