"""Sequence tagging: the segmentation labels and the objective's metrics."""

import numpy as np

from arch import vocab
from arch.sequence import tagging
from train import text


def test_segmentation_removes_whitespace_and_tags_word_starts():
  tok = text.ByteTokenizer()
  window = np.array(tok.encode('the  import\nstatement') + [vocab.EOS, vocab.PAD, vocab.PAD],
                    np.int32)
  ex = tagging.segmentation_example(window)
  n = len('theimportstatement') + 1  # + </s>
  assert tok.decode(ex['tokens'][:n - 1]) == 'theimportstatement'
  assert ex['tokens'][n - 1] == vocab.EOS and (ex['tokens'][n:] == vocab.PAD).all()
  starts = [i for i, t in enumerate(ex['tags'][:n - 1]) if t == 1]
  assert starts == [0, 3, 9]
  assert ex['tags'][n - 1] == 0  # </s> follows a non-space
  assert (ex['tags'][n:] == -1).all()
  assert ex['tokens'].shape == ex['tags'].shape == window.shape
