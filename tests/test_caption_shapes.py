"""The captioned shapes builder: captions round-trip, held-out compositions are closed under
mirroring and never drawn for `train`, and the rendered scene shows what its caption says."""

import itertools

import numpy as np
import pytest

from arch.task import ConfigError
from train.datasets import caption_shapes as cs
from train.errors import UserError


def _all_scenes():
  for c0, c1, k0, k1, r in itertools.product(range(6), range(6), range(3), range(3), range(4)):
    yield np.array([c0, c1], np.int32), np.array([k0, k1], np.int32), r


def _mirror(colour, kind, relation):
  return colour[::-1], kind[::-1], relation ^ 1   # above <-> below, left of <-> right of


def test_compositions_and_held_out():
  scenes = list(_all_scenes())
  assert len({cs.composition(*s) for s in scenes}) == 648
  for s in scenes:
    assert cs.composition(*s) == cs.composition(*_mirror(*s))
  held = [s for s in scenes if cs.held_out(*s)]
  assert len(held) == 186   # 93 compositions, each two ways
  rng = np.random.default_rng(0)
  for want in (False, True):
    for _ in range(200):
      assert cs.held_out(*cs.sample_attributes(rng, want)) == want


def test_captions_round_trip():
  for s in list(_all_scenes())[::37]:
    text = cs.caption_text(*s)
    colour, kind, relation = cs.parse(text)
    assert (colour == s[0]).all() and (kind == s[1]).all() and relation == s[2]
    assert cs.caption(cs.tokenize(text)) == text
  assert cs.caption_text(*cs.parse('a red circle left of a blue square')) == \
      'a red circle left of a blue square'
  with pytest.raises(ConfigError, match='not in the vocabulary'):
    cs.tokenize('a pink circle above a blue square')
  with pytest.raises(UserError, match='COLOUR KIND RELATION'):
    cs.parse('a red circle near a blue square')


@pytest.mark.parametrize('relation', range(4))
def test_render_matches_caption(relation):
  rng = np.random.default_rng(relation)
  rgb = (np.array(list(cs.COLOURS.values())) * 255)
  for _ in range(20):
    colour = rng.choice(6, 2, replace=False).astype(np.int32)
    kind = rng.integers(0, 3, 2).astype(np.int32)
    image = cs.render(rng, colour, kind, relation).astype(np.float32)
    centres = []
    for i in range(2):
      near = np.abs(image - rgb[colour[i]]).max(-1) < 40
      assert near.sum() > 30, 'each object is visible in its colour'
      centres.append(np.argwhere(near).mean(0))    # (row, col)
    axis, sign = (0, -1) if relation in (0, 1) else (1, -1)
    if relation in (1, 3):
      sign = 1
    offset = (centres[0] - centres[1]) * sign
    assert offset[axis] > 0 and abs(offset[1 - axis]) < offset[axis]
