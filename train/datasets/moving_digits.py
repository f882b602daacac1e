"""Moving digits: short grey-scale clips of one 8x8 handwritten digit (scikit-learn's, as in
`digits`) gliding and bouncing inside a 16x16 canvas, the offline stand-in for Moving MNIST
(Srivastava et al. 2015).

Each clip has 8 frames. The digit starts at a random position with a random velocity of
-2..2 pixels per frame along each axis (not both zero) and reflects off the canvas edges;
frames are the maximum of the canvas and the digit (one digit here, so the digit itself).
Train clips use the `digits` train images (4 clips each, 5,748 clips), test clips the
`digits` test images (1 each, 360 clips), so no test digit is ever seen in training.
Generated with numpy from fixed seeds.
"""

import numpy as np
import tensorflow_datasets as tfds

from train.datasets.digits import NUM_TEST

FRAMES, SIZE, DIGIT = 8, 16, 8
SPLITS = {'train': (4, 1), 'test': (1, 2)}  # (clips per digit image, seed)


def trajectory(rng, frames=FRAMES, room=SIZE - DIGIT):
  """(frames, 2) integer top-left corners of a bouncing path in [0, room]."""
  pos = rng.integers(0, room + 1, 2)
  vel = np.zeros(2, int)
  while not vel.any():
    vel = rng.integers(-2, 3, 2)
  out = []
  for _ in range(frames):
    out.append(pos.copy())
    pos = pos + vel
    for a in range(2):  # reflect off the walls
      if pos[a] < 0:
        pos[a], vel[a] = -pos[a], -vel[a]
      elif pos[a] > room:
        pos[a], vel[a] = 2 * room - pos[a], -vel[a]
  return np.stack(out)


def render(digit_HW, corners_T2, size=SIZE):
  """uint8 (T, size, size, 1) frames of the digit at each corner."""
  t, d = len(corners_T2), digit_HW.shape[0]
  video = np.zeros((t, size, size, 1), np.uint8)
  for i, (y, x) in enumerate(corners_T2):
    video[i, y:y + d, x:x + d, 0] = np.maximum(video[i, y:y + d, x:x + d, 0], digit_HW)
  return video


class MovingDigits(tfds.core.GeneratorBasedBuilder):
  """8-frame 16x16 clips of a bouncing handwritten digit, labelled with the digit."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Tensor(shape=(FRAMES, SIZE, SIZE, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('video', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the digits ship with scikit-learn
    from sklearn.datasets import load_digits
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))  # as `digits` splits
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    parts = {'test': order[:NUM_TEST], 'train': order[NUM_TEST:]}
    return {name: self._generate_examples(images, data.target, parts[name], per, seed)
            for name, (per, seed) in SPLITS.items()}

  def _generate_examples(self, images, labels, indices, per, seed):
    rng = np.random.default_rng(seed)
    for i in indices:
      for k in range(per):
        yield f'{i}_{k}', {'video': render(images[i], trajectory(rng)),
                           'label': int(labels[i])}
