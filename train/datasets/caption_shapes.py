"""Captioned two-object scenes for text-conditioned image models: 32x32 RGB images of two
flat-coloured shapes and a caption that says what they are and where one lies from the other,
e.g. "a red circle above a blue square", as a TFDS builder.

Every scene is five attributes: object A's colour and kind, the relation from A to B, and
object B's colour and kind. Colours: red, green, blue, yellow, purple, cyan (fixed RGB,
far apart); kinds: circle, square, triangle (upright); relations: above, below, left of,
right of. A's centre lies on the named side of B's, the two shapes never overlap, and the
offset along the other axis is at most half the offset along the named one (so "above" is
never also "left of"). The background is a dark grey with a slight gradient; every pixel gets
N(0, 0.02^2) noise.

Held-out compositions: a scene and its mirror ("A above B" and "B below A") are one
composition; every seventh composition (by a fixed index, see `held_out`) never appears in
`train`, and `test` holds only those. So a test caption names colours, kinds and relations
all seen in training, in a combination never seen: prompt-following there is composition,
not recall. 6 x 3 x 4 x 6 x 3 = 1,296 captions, 648 compositions, 93 held out.

Features: `image` (32, 32, 3) uint8; `tokens` (MAX_TOKENS,) int32, the caption's word ids
in VOCAB, 0-padded (`caption(tokens)` gives the text back, `tokenize(text)` the ids);
`colour` (2,) and `kind` (2,) int32 for A and B, `relation` () int32 (indices into COLOURS,
KINDS, RELATIONS). Splits from different seeds: 10,000 train and 1,000 test scenes.
"""

import numpy as np

from arch.vocab import word_ids
from train.datasets.procedural import Procedural
from train.errors import UserError

SIZE = 32
COLOURS = {'red': (0.92, 0.12, 0.10), 'green': (0.10, 0.75, 0.15), 'blue': (0.15, 0.30, 0.95),
           'yellow': (0.95, 0.88, 0.10), 'purple': (0.60, 0.15, 0.80), 'cyan': (0.10, 0.85, 0.90)}
KINDS = ('circle', 'square', 'triangle')
RELATIONS = ('above', 'below', 'left of', 'right of')
# word ids: 0 pads; the rest in a fixed order
VOCAB = ('<pad>', 'a', *COLOURS, *KINDS, 'above', 'below', 'left', 'right', 'of')
MAX_TOKENS = 8   # "a red circle left of a blue square"
HELD_OUT_EVERY = 7
NOISE = 0.02
SPLITS = {'train': (10000, 21, False), 'test': (1000, 22, True)}  # (count, seed, held out)


def caption_text(colour, kind, relation):
  """The caption of attributes (colour (2,), kind (2,), relation)."""
  names = list(COLOURS)
  return (f'a {names[colour[0]]} {KINDS[kind[0]]} {RELATIONS[relation]} '
          f'a {names[colour[1]]} {KINDS[kind[1]]}')


def tokenize(text):
  """Word ids of a caption, 0-padded to MAX_TOKENS (arch.vocab.word_ids); a word outside
  VOCAB is a ConfigError that lists it."""
  return word_ids(text, VOCAB, MAX_TOKENS)


def caption(tokens):
  """The text of word ids (padding dropped)."""
  return ' '.join(VOCAB[int(t)] for t in tokens if int(t) != 0)


def parse(text):
  """(colour (2,), kind (2,), relation) of a caption in this dataset's grammar, or a
  UserError that shows the grammar."""
  words = text.lower().split()
  names = list(COLOURS)
  try:
    one_word = words[3] in ('above', 'below')
    relation = words[3] if one_word else ' '.join(words[3:5])
    rest = words[4:] if one_word else words[5:]
    if words[0] != 'a' or len(rest) != 3 or rest[0] != 'a':
      raise ValueError
    return (np.array([names.index(words[1]), names.index(rest[1])], np.int32),
            np.array([KINDS.index(words[2]), KINDS.index(rest[2])], np.int32),
            np.int32(RELATIONS.index(relation)))
  except (ValueError, IndexError):
    raise UserError(f'caption {text!r} is not "a COLOUR KIND RELATION a COLOUR KIND" '
                    f'(colours {", ".join(names)}; kinds {", ".join(KINDS)}; '
                    f'relations {", ".join(RELATIONS)})') from None


def composition(colour, kind, relation):
  """A scene's composition index in [0, 648): the scene and its mirror share one."""
  a, b = int(colour[0]) * 3 + int(kind[0]), int(colour[1]) * 3 + int(kind[1])
  if relation in (1, 3):  # below / right of: read it from B's side
    a, b, relation = b, a, relation - 1
  return (a * 18 + b) * 2 + relation // 2


def held_out(colour, kind, relation):
  """Whether a scene's composition is kept out of `train` (and makes up `test`)."""
  return composition(colour, kind, relation) % HELD_OUT_EVERY == 3


def _shape(kind, cy, cx, r, size):
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  if kind == 0:
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
  if kind == 1:
    h = 0.88 * r
    return (np.abs(yy - cy) <= h) & (np.abs(xx - cx) <= h)
  # upright triangle: apex up, base at cy + r/2, half-width r * sqrt(3)/2 * 1.15
  top, bottom = cy - 1.1 * r, cy + 0.65 * r
  half = (yy - top) / (bottom - top) * 1.1 * r
  return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)


def render(rng, colour, kind, relation, size=SIZE):
  """A uint8 (size, size, 3) image of the scene: A `relation` B, no overlap."""
  r = rng.uniform(4.5, 6.5, 2)
  while True:
    c = rng.uniform(r[:, None] + 0.5, size - r[:, None] - 0.5, (2, 2))  # (object, (y, x))
    axis = 0 if relation in (0, 1) else 1
    sign = -1 if relation in (0, 2) else 1   # A above / left of B: A's coordinate smaller
    gap = (c[0, axis] - c[1, axis]) * sign
    if gap >= r.sum() + 1.0 and abs(c[0, 1 - axis] - c[1, 1 - axis]) <= 0.5 * gap:
      break
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  image = rng.uniform(0.05, 0.2) + 0.08 * (yy[..., None] * rng.uniform(-1, 1, 3)
                                           + xx[..., None] * rng.uniform(-1, 1, 3))
  rgb = list(COLOURS.values())
  for i in range(2):
    image = np.where(_shape(int(kind[i]), c[i, 0], c[i, 1], r[i], size)[..., None],
                     np.asarray(rgb[int(colour[i])]), image)
  image = image + rng.normal(0, NOISE, image.shape)
  return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def sample_attributes(rng, want_held_out):
  """Random (colour, kind, relation) whose composition is held out iff `want_held_out`."""
  while True:
    colour = rng.integers(0, len(COLOURS), 2).astype(np.int32)
    kind = rng.integers(0, len(KINDS), 2).astype(np.int32)
    relation = np.int32(rng.integers(0, len(RELATIONS)))
    if held_out(colour, kind, relation) == want_held_out:
      return colour, kind, relation


class CaptionShapes(Procedural):
  """32x32 two-shape scenes with captions; `test` holds compositions `train` never shows."""
  FEATURES = {'image': ((SIZE, SIZE, 3), np.uint8), 'tokens': ((MAX_TOKENS,), np.int32),
              'colour': ((2,), np.int32), 'kind': ((2,), np.int32), 'relation': ((), np.int32)}
  SPLITS = SPLITS

  def generate(self, n, seed, want_held_out):
    rng = np.random.default_rng(seed)
    for _ in range(n):
      colour, kind, relation = sample_attributes(rng, want_held_out)
      yield {'image': render(rng, colour, kind, relation),
             'tokens': tokenize(caption_text(colour, kind, relation)),
             'colour': colour, 'kind': kind, 'relation': relation}
