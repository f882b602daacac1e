"""Procedural multi-object scenes for unsupervised object discovery (Slot Attention): RGB
images of 2-4 flat-coloured shapes with per-pixel instance masks, as a TFDS builder.

Each 32x32 image holds 2-4 objects drawn by the shapes builder's `_shape_mask`
(train/datasets/shapes.py: rotated ellipses, rectangles, triangles at random places and
sizes), painted in order, so later objects occlude earlier ones. Colours are distinct: every
object's colour lies at least MIN_COLOUR_GAP (Euclidean, RGB in [0, 1]) from the background's
and from the other objects', so an object is one colour patch. The background is a smooth
gradient (a random base colour plus a small linear slope), and every pixel gets N(0, 0.02^2)
noise. An object whose visible part (after occlusion) is under MIN_VISIBLE pixels is drawn
again, so an image's instance ids are exactly 1..k for k objects, all visible.

Features: `image` (32, 32, 3) uint8, `mask` (32, 32) uint8 instance ids (0 background,
1..k objects in painting order), `num_objects` int32. Splits come from different seeds:
5,000 train and 500 test images.
"""

import numpy as np

from train.datasets.procedural import Procedural
from train.datasets.shapes import _shape_mask

SIZE = 32
MAX_OBJECTS = 4
MIN_VISIBLE = 12       # pixels
MIN_COLOUR_GAP = 0.35  # RGB distance, colours in [0, 1]
NOISE = 0.02
SPLITS = {'train': (5000, 11), 'test': (500, 12)}  # (count, seed)


def _colour(rng, taken):
  """A colour at least MIN_COLOUR_GAP away from every colour in `taken`."""
  while True:
    c = rng.uniform(0, 1, 3)
    if all(np.linalg.norm(c - t) >= MIN_COLOUR_GAP for t in taken):
      return c


def render(rng, size=SIZE):
  """One scene: (image uint8 (size, size, 3), instance mask uint8 (size, size), objects)."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  base = rng.uniform(0.1, 0.9, 3)
  slope = rng.uniform(-0.15, 0.15, (2, 3))
  image = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]
  colours = [base]
  mask = np.zeros((size, size), np.uint8)
  count = int(rng.integers(2, MAX_OBJECTS + 1))
  k = 0
  while k < count:
    shape = _shape_mask(int(rng.integers(1, 4)), rng, size)
    after = np.where(shape, k + 1, mask)
    # every object so far must keep MIN_VISIBLE pixels once this one is painted over them
    if min(int((after == i).sum()) for i in range(1, k + 2)) < MIN_VISIBLE:
      continue
    colour = _colour(rng, colours)
    colours.append(colour)
    image[shape] = colour
    mask = after.astype(np.uint8)
    k += 1
  image = image + rng.normal(0, NOISE, image.shape)
  return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask, count


class Multishapes(Procedural):
  """32x32 scenes of 2-4 shapes with instance masks (0 background, 1..k objects)."""
  FEATURES = {'image': ((SIZE, SIZE, 3), np.uint8), 'mask': ((SIZE, SIZE), np.uint8),
              'num_objects': ((), np.int32)}
  SPLITS = SPLITS

  def generate(self, n, seed):
    rng = np.random.default_rng(seed)
    for _ in range(n):
      image, mask, count = render(rng)
      yield {'image': image, 'mask': mask, 'num_objects': np.int32(count)}
