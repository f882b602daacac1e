"""Tones: one-second mono clips of short melodies, procedural audio for autoregressive
waveform models (WaveNet) offline.

A clip at 4,000 Hz (4,000 samples, int16) holds 2 to 4 consecutive notes drawn from a
two-octave C-major pentatonic scale (C4 to A5, 10 pitches), each 0.25 to 0.5 s long (the
last note fills the rest of the second). A note is a fundamental with its 2nd and 3rd
harmonics at random relative amplitudes, a 10 ms linear attack and an exponential decay,
at a random loudness; a little Gaussian noise is added. The label is the first note's
pitch index. 2,000 train and 200 test clips from different seeds (numpy).
"""

import numpy as np
import tensorflow_datasets as tfds

SAMPLE_RATE, LENGTH = 4000, 4000
PITCHES = 440.0 * 2 ** (np.array([-9, -7, -5, -2, 0, 3, 5, 7, 10, 12]) / 12)  # C4..A5
SPLITS = {'train': (2000, 1), 'test': (200, 2)}  # (count, seed)


def render(rng, sample_rate=SAMPLE_RATE, length=LENGTH):
  """(int16 (length,) waveform, first pitch index)."""
  out = np.zeros(length)
  start, first = 0, None
  n = int(rng.integers(2, 5))
  for k in range(n):
    dur = length - start if k == n - 1 else int(rng.uniform(0.25, 0.5) * sample_rate)
    dur = min(dur, length - start)
    if dur <= 0:
      break
    p = int(rng.integers(len(PITCHES)))
    first = p if first is None else first
    t = np.arange(dur) / sample_rate
    h = rng.uniform(0, 0.5, 2)
    wave = (np.sin(2 * np.pi * PITCHES[p] * t) + h[0] * np.sin(4 * np.pi * PITCHES[p] * t)
            + h[1] * np.sin(6 * np.pi * PITCHES[p] * t)) / (1 + h.sum())
    envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t * rng.uniform(2, 6))
    out[start:start + dur] = rng.uniform(0.3, 0.9) * envelope * wave
    start += dur
  out += rng.normal(0, 0.005, length)
  return np.round(np.clip(out, -1, 1) * 32767).astype(np.int16), first


class Tones(tfds.core.GeneratorBasedBuilder):
  """One-second 4 kHz clips of pentatonic melodies, labelled with the first pitch."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'audio': tfds.features.Tensor(shape=(LENGTH,), dtype=np.int16),
            'label': tfds.features.ClassLabel(num_classes=len(PITCHES)),
        }),
        supervised_keys=('audio', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # procedural
    return {name: self._generate_examples(n, seed) for name, (n, seed) in SPLITS.items()}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
      audio, label = render(rng)
      yield i, {'audio': audio, 'label': label}
