"""Event-based bit-stream XOR, as a procedural TFDS builder: an irregularly sampled
sequence-classification task whose answer lives in the time gaps (the event-based XOR of
Lechner & Hasani 2020, "Learning long-term dependencies in irregularly-sampled time series",
used again for CfC by Hasani et al. 2022).

A dense stream of N bits (N uniform in MIN_BITS..MAX_BITS, each bit a fair coin) is sent as
events: each run of equal bits becomes one event that carries the bit and the time the run
lasted, in bit periods (a sensor that reports a value when it changes). The label is the
XOR (parity) of the whole dense stream, i.e. the parity of the summed durations of the
1-events:

  bits      0 0 1 1 1 0 1 1        label = 1+1+1+1+1 mod 2 = 1
  events    (0, 2) (1, 3) (0, 1) (1, 2)        values 0 1 0 1, gaps 2 3 1 2

Consecutive events alternate their bit, so the values alone say only the first bit and
the number of events; given those two the label is close to a fair coin (short streams of
one or two runs leak a little): the best rule that ignores the gaps, the majority label of
each (first bit, number of events) fitted on the train split, is right on 53.5% of it
(54.4% fitted on the test split itself; tests/test_liquid.py checks < 56%). A model must
read the parity of each 1-event's duration from its gap. Streams of 6 to 12 bits (2.5
1-events on average) are what the three networks of configs/liquid_seq.py learned within
minutes on 2 CPU cores; at 8 to 16 bits an LSTM escaped chance after about 1,500 steps of
batch 128 and the CfC after about 5,000 (standalone script, one seed each).

Each example (padded to LENGTH = MAX_BITS events, the most a stream can have):
  `values` (LENGTH, 1) float32  the bit of each event, 0 on padding
  `gaps`   (LENGTH,) float32    the elapsed time of each event in bit periods, 0 on padding
  `mask`   (LENGTH,) bool       True on the events, False on padding (events come first)
  `label`  int                  parity of the dense stream
Splits are drawn with numpy from fixed seeds: 100,000 train, 2,000 validation and 4,000
test examples.
"""

import numpy as np
import tensorflow_datasets as tfds

from train.datasets.procedural import Procedural

MIN_BITS, MAX_BITS = 6, 12
LENGTH = MAX_BITS
SPLITS = {'train': (100_000, 1), 'validation': (2_000, 2), 'test': (4_000, 3)}  # (count, seed)


def to_events(bits: np.ndarray):
  """A dense bit stream (N,) -> (bit of each run (E,), length of each run (E,))."""
  starts = np.flatnonzero(np.r_[True, bits[1:] != bits[:-1]])
  lengths = np.diff(np.r_[starts, len(bits)])
  return bits[starts], lengths


def examples(count: int, seed: int) -> dict:
  """`count` examples drawn from `seed`: the arrays described in the module docstring,
  plus `bits` (count, MAX_BITS) int8, the dense streams (-1 after their end)."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(MIN_BITS, MAX_BITS + 1, count)
  coins = rng.integers(0, 2, (count, MAX_BITS))
  out = {'values': np.zeros((count, LENGTH, 1), np.float32),
         'gaps': np.zeros((count, LENGTH), np.float32),
         'mask': np.zeros((count, LENGTH), bool),
         'label': np.zeros((count,), np.int64),
         'bits': np.full((count, MAX_BITS), -1, np.int8)}
  for i, n in enumerate(lengths):
    bits = coins[i, :n]
    value, duration = to_events(bits)
    e = len(value)
    out['values'][i, :e, 0] = value
    out['gaps'][i, :e] = duration
    out['mask'][i, :e] = True
    out['label'][i] = bits.sum() % 2
    out['bits'][i, :n] = bits
  return out


class Events(Procedural):
  """Event-based bit-stream XOR: runs of equal bits as (bit, duration) events; label the
  parity of the dense stream."""
  FEATURES = {'values': ((LENGTH, 1), np.float32), 'gaps': ((LENGTH,), np.float32),
              'mask': ((LENGTH,), np.bool_), 'label': tfds.features.ClassLabel(num_classes=2)}
  SPLITS = SPLITS

  def generate(self, count, seed):
    data = examples(count, seed)
    for i in range(count):
      yield {k: data[k][i] for k in ('values', 'gaps', 'mask', 'label')}
