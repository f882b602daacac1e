"""The text stage: tokenizers and the packed / padded views of a split."""

import numpy as np

from arch import vocab
from train import text


def test_byte_tokenizer_round_trip_and_ids():
  tok = text.ByteTokenizer()
  s = 'Größe — naïve\nok'
  ids = tok.encode(s)
  assert ids == [b + 4 for b in s.encode('utf-8')]
  assert min(ids) >= vocab.NUM_SPECIAL and max(ids) < tok.vocab_size == 260
  assert tok.decode(ids) == s
  assert tok.decode([vocab.BOS] + ids + [vocab.EOS, vocab.PAD]) == s  # specials dropped


def test_bpe_tokenizer_trains_saves_and_reloads(tmp_path):
  texts = ['the quick brown fox jumps over the lazy dog. ' * 20,
           'import statement, def statement, the class statement. ' * 20]
  tok = text.BpeTokenizer.train(iter(texts), vocab_size=300)
  assert 260 < tok.vocab_size <= 300
  s = 'the lazy statement'
  ids = tok.encode(s)
  assert tok.decode(ids) == s
  assert len(ids) < len(s)  # merges learned from the corpus
  assert all(i >= vocab.NUM_SPECIAL for i in ids)
  path = str(tmp_path / 'tokenizer.json')
  tok.save(path)
  again = text.BpeTokenizer.load(path)
  assert again.encode(s) == ids and again.vocab_size == tok.vocab_size
  assert again.decode([vocab.BOS] + ids + [vocab.EOS]) == s


class _Src:
  def __init__(self, rows):
    self.rows = rows

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, i):
    return self.rows[i]


def test_packed_source_concatenates_documents_with_eos():
  src = _Src([{'text': b'abc'}, {'text': b'hello'}, {'text': b'xy'}])
  tok = text.ByteTokenizer()
  packed = text.PackedSource(src, tok, ('text',), length=4)
  stream = np.concatenate([packed[i]['tokens'] for i in range(len(packed))])
  want = (tok.encode('abc') + [vocab.EOS] + tok.encode('hello') + [vocab.EOS]
          + tok.encode('xy') + [vocab.EOS])
  assert len(packed) == 4 and packed.num_tokens == len(want) == 13
  np.testing.assert_array_equal(stream[:13], want)
  assert (stream[13:] == vocab.PAD).all()


def test_padded_source_truncates_keeping_eos():
  src = _Src([{'source': b'abcdef', 'target': b'xy'}])
  padded = text.PaddedSource(src, text.ByteTokenizer(), {'source': 4, 'target': 5})
  ex = padded[0]
  np.testing.assert_array_equal(ex['source'], [ord('a') + 4, ord('b') + 4, ord('c') + 4,
                                               vocab.EOS])
  np.testing.assert_array_equal(ex['target'], [ord('x') + 4, ord('y') + 4, vocab.EOS, 0, 0])


def test_a_model_vocabulary_smaller_than_the_tokenizer_is_a_clear_error():
  """The text tasks refuse an embedding table that cannot hold every token id (an id past
  it would read a clamped row inside jit, silently)."""
  import os
  from conftest import REPO
  from train import config_lib, core
  from train.errors import UserError
  for spec, key in (('gpt_pydoc.py:variant=tiny', 'model.vocab_size'),     # lm
                    ('t5_translate.py:variant=tiny', 'model.vocab_size'),  # seq2seq
                    ('seq2seq_translate.py:variant=tiny', 'model.tgt_vocab_size'),
                    ('bart_pydoc.py:variant=tiny', 'model.vocab_size')):   # denoise
    config = config_lib.load(os.path.join(REPO, 'configs', spec))
    config_lib.override(config, key, '100')
    try:
      core.load_task(config)
    except UserError as e:
      assert f'config.{key}=100 is smaller than the byte tokenizer\'s 260 ids' in str(e), e
    else:
      raise AssertionError(f'{spec}: a vocabulary of 100 was accepted')
