"""Procedural shapes for semantic segmentation: noisy RGB images with ellipses, rectangles
and triangles, and per-pixel class masks (0 background, 1 ellipse, 2 rectangle, 3 triangle).

Every image holds 2-4 shapes of random size, position and colour (colour says nothing
about the class; later shapes occlude earlier ones), over a random smooth background
with pixel noise. Generated with numpy from fixed seeds: 2,000 train and 500 test images
of 48x48, from different seeds.
"""

import numpy as np
import tensorflow_datasets as tfds

SIZE = 48
CLASSES = ('background', 'ellipse', 'rectangle', 'triangle')
SPLITS = {'train': (2000, 1), 'test': (500, 2)}  # (count, seed)


def _shape_mask(kind, rng, size):
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  cy, cx = rng.uniform(0.2, 0.8, 2) * size
  if kind == 1:    # ellipse, random axes and rotation
    a, b = rng.uniform(0.08, 0.22, 2) * size
    t = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0
  if kind == 2:    # axis-aligned rectangle
    h, w = rng.uniform(0.15, 0.4, 2) * size
    return (np.abs(yy - cy) <= h / 2) & (np.abs(xx - cx) <= w / 2)
  # triangle: three vertices around the centre; inside = same side of all three edges
  r = rng.uniform(0.12, 0.3) * size
  angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
  angles += rng.uniform(-0.4, 0.4, 3)
  px, py = cx + r * np.cos(angles), cy + r * np.sin(angles)
  sides = [(xx - px[i]) * (py[(i + 1) % 3] - py[i]) - (yy - py[i]) * (px[(i + 1) % 3] - px[i])
           for i in range(3)]
  return ((sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0)) | \
         ((sides[0] <= 0) & (sides[1] <= 0) & (sides[2] <= 0))


def render(rng, size=SIZE):
  """One (image uint8 HxWx3, mask uint8 HxW) pair."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  base = rng.uniform(0, 1, 3)
  slope = rng.uniform(-0.3, 0.3, (2, 3))
  image = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]
  mask = np.zeros((size, size), np.uint8)
  for _ in range(rng.integers(2, 5)):
    kind = int(rng.integers(1, 4))
    m = _shape_mask(kind, rng, size)
    image[m] = rng.uniform(0, 1, 3)
    mask[m] = kind
  image = image + rng.normal(0, 0.05, image.shape)
  return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask


class Shapes(tfds.core.GeneratorBasedBuilder):
  """48x48 RGB images of random shapes with 4-class segmentation masks."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(SIZE, SIZE, 3), dtype=np.uint8),
            'mask': tfds.features.Tensor(shape=(SIZE, SIZE), dtype=np.uint8),
        }),
        supervised_keys=('image', 'mask'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # procedural
    return {name: self._generate_examples(n, seed) for name, (n, seed) in SPLITS.items()}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
      image, mask = render(rng)
      yield i, {'image': image, 'mask': mask}
