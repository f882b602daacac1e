"""Key-value recall across segments, as a procedural TFDS builder: a sequence of
NUM_SEGMENTS segments of SEGMENT_LENGTH tokens whose first segment states a key and its
value among noise and whose last segment asks for the value of that key. For memory
models that read one segment at a time (the Recurrent Memory Transformer,
arch/sequence/rmt.py): the answer is in a segment the model no longer sees.

Layout of one example (48 tokens = 3 segments of 16; NUM_PAIRS = 1):

  segment 0   k v  n n n n n n n n n n n n n n        the pair, then noise
  segment 1   n n n n n n n n n n n n n n n n         a distractor: noise only
  segment 2   n n n n n n n n n n n n n  ? k v        noise, then the query and answer

The code is general in NUM_PAIRS (distinct keys, queried in a random order) and
NUM_SEGMENTS (the middle segments are noise); the shipped splits hold 1 pair and 3
segments, a setting the recurrent memory learned within this CPU's 15-minute budget
(configs/rmt_recall.py says what harder settings did). Keys are drawn from NUM_KEYS
tokens; values independently and uniformly from NUM_VALUES; noise uniformly from NUM_NOISE
tokens of its own. `targets` holds the value at the position of each queried key (the
position whose next token is the answer, as a causal LM reads it) and -1 everywhere else:
one scored position per example, in its last segment. A model that sees only the last
segment has no information about the value: its best accuracy is chance,
1 / NUM_VALUES = 0.0625.

Token ids: 0 <pad> (unused), 1 the query mark `?`, then the keys, the values, the noise
(VOCAB_SIZE = 50). Splits are drawn with numpy from fixed seeds: 100,000 train, 2,000
validation and 2,000 test examples.
"""

import numpy as np

from train.datasets.procedural import Procedural

SEGMENT_LENGTH, NUM_SEGMENTS = 16, 3
LENGTH = SEGMENT_LENGTH * NUM_SEGMENTS
NUM_PAIRS, NUM_KEYS, NUM_VALUES, NUM_NOISE = 1, 16, 16, 16
QUERY = 1
FIRST_KEY = 2
FIRST_VALUE = FIRST_KEY + NUM_KEYS
FIRST_NOISE = FIRST_VALUE + NUM_VALUES
VOCAB_SIZE = FIRST_NOISE + NUM_NOISE
SPLITS = {'train': (100_000, 1), 'validation': (2_000, 2), 'test': (2_000, 3)}  # (count, seed)


def examples(count: int, seed: int, num_pairs: int = NUM_PAIRS) -> dict:
  """`count` examples drawn from `seed`: tokens (count, LENGTH) and targets (count, LENGTH)
  int32 (-1 where unscored)."""
  rng = np.random.default_rng(seed)
  tokens = FIRST_NOISE + rng.integers(0, NUM_NOISE, (count, LENGTH))
  keys = np.argsort(rng.random((count, NUM_KEYS)), axis=1)[:, :num_pairs]  # distinct
  values = rng.integers(0, NUM_VALUES, (count, num_pairs))
  tokens[:, 0:2 * num_pairs:2] = FIRST_KEY + keys
  tokens[:, 1:2 * num_pairs:2] = FIRST_VALUE + values
  rows = np.arange(count)[:, None]
  order = np.argsort(rng.random((count, num_pairs)), axis=1)  # the queries' order
  start = LENGTH - 3 * num_pairs  # the queries fill the end of the last segment
  targets = np.full((count, LENGTH), -1)
  tokens[:, start::3] = QUERY
  tokens[:, start + 1::3] = FIRST_KEY + keys[rows, order]
  tokens[:, start + 2::3] = FIRST_VALUE + values[rows, order]
  targets[:, start + 1::3] = FIRST_VALUE + values[rows, order]
  return {'tokens': tokens.astype(np.int32), 'targets': targets.astype(np.int32)}


# The ids as words, for the sampler (`config.sample.tokenizer='words'`, train/text.py): '?'
# the query mark, k0-k15 the keys, v0-v15 the values, n0-n15 the noise.
WORDS = (('<pad>', '?') + tuple(f'k{i}' for i in range(NUM_KEYS))
         + tuple(f'v{i}' for i in range(NUM_VALUES)) + tuple(f'n{i}' for i in range(NUM_NOISE)))


class Recall(Procedural):
  """Key-value recall across 3 segments of 16 tokens: the pair first, the query last."""
  FEATURES = {'tokens': ((LENGTH,), np.int32), 'targets': ((LENGTH,), np.int32)}
  SPLITS = SPLITS
  WORDS = WORDS

  def generate(self, count, seed):
    data = examples(count, seed)
    for i in range(count):
      yield {'tokens': data['tokens'][i], 'targets': data['targets'][i]}
