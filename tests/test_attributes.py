"""The attribute reader (arch/vision/attributes.py): canonical attributes against a direct
enumeration of every caption and against rendered scenes, prompt-following on hand-made
logits and against a per-example loop, the task's loss against the five cross-entropies,
the FD features, and the tiny config trained with an exact resume and read by the FD
evaluator as its classifier."""

import itertools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.vision import attributes as attr
from conftest import REPO, check_resumes_from_step_2, load_config, train_spec
from train.datasets import caption_shapes as cs

SPEC = 'caption_reader_shapes.py:tiny'


def _all_captions():
  rows = list(itertools.product(range(6), range(6), range(3), range(3), range(4)))
  colour = np.array([[r[0], r[1]] for r in rows], np.int32)
  kind = np.array([[r[2], r[3]] for r in rows], np.int32)
  relation = np.array([r[4] for r in rows], np.int32)
  return colour, kind, relation


def _canonical_by_hand(colour, kind, relation):
  """One caption's (colour, kind, axis), written out per relation."""
  a, b = (colour[0], kind[0]), (colour[1], kind[1])
  first, second, axis = {0: (a, b, 0),    # A above B
                         1: (b, a, 0),    # A below B = B above A
                         2: (a, b, 1),    # A left of B
                         3: (b, a, 1)}[int(relation)]  # A right of B = B left of A
  return [first[0], second[0]], [first[1], second[1]], axis


def test_canonical_against_enumeration():
  colour, kind, relation = _all_captions()
  got = jax.jit(attr.canonical)(colour, kind, relation)
  want = [np.array(w) for w in zip(*map(_canonical_by_hand, colour, kind, relation))]
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g), w)
  assert set(np.asarray(got[2]).tolist()) == {0, 1}


def test_canonical_first_object_is_upper_or_left_in_rendered_scenes():
  rng = np.random.default_rng(0)
  rgb = np.array(list(cs.COLOURS.values())) * 255
  for relation in range(4):
    for _ in range(5):
      colour = rng.choice(6, 2, replace=False).astype(np.int32)
      kind = rng.integers(0, 3, 2).astype(np.int32)
      image = cs.render(rng, colour, kind, relation).astype(np.float32)
      c, _, axis = attr.canonical(colour[None], kind[None], np.array([relation]))
      centre = lambda i: np.argwhere(np.abs(image - rgb[int(c[0, i])]).max(-1) < 40).mean(0)
      assert centre(0)[int(axis[0])] < centre(1)[int(axis[0])]


def _logits_for(colour, kind, relation, scale=10.0):
  """Reader outputs that read exactly the canonical attributes of these captions."""
  c, k, a = map(np.asarray, attr.canonical(colour, kind, relation))
  return {'colour': scale * jax.nn.one_hot(c, 6), 'kind': scale * jax.nn.one_hot(k, 3),
          'axis': scale * jax.nn.one_hot(a, 2)}


def _distinct_captions(b, seed=0):
  rng = np.random.default_rng(seed)
  colour = np.stack([rng.choice(6, 2, replace=False) for _ in range(b)]).astype(np.int32)
  kind = rng.integers(0, 3, (b, 2)).astype(np.int32)
  return colour, kind, (np.arange(b) % 4).astype(np.int32)


def test_prompt_following_on_hand_made_logits():
  b = 8
  colour, kind, relation = _distinct_captions(b)
  score = jax.jit(attr.prompt_following)
  right = _logits_for(colour, kind, relation)
  assert {k: float(v) for k, v in score(right, colour, kind, relation).items()} == {
      'prompt_all': 1.0, 'prompt_colour': 1.0, 'prompt_kind': 1.0, 'prompt_relation': 1.0}

  def with_wrong(key, row, index, value):
    out = {k: np.array(v) for k, v in right.items()}
    out[key][(row, *index)] = 0.0
    out[key][(row, *index, value)] = 10.0
    return {k: float(v) for k, v in score(out, colour, kind, relation).items()}

  c, k, a = map(np.asarray, attr.canonical(colour, kind, relation))
  other_colour = next(x for x in range(6) if x not in colour[3])
  got = with_wrong('colour', 3, (1,), other_colour)   # the second object's colour
  assert got == {'prompt_all': 1 - 1 / b, 'prompt_colour': 1 - 1 / (2 * b),
                 'prompt_kind': 1.0, 'prompt_relation': 1.0}
  got = with_wrong('kind', 5, (0,), (k[5, 0] + 1) % 3)
  assert got == {'prompt_all': 1 - 1 / b, 'prompt_colour': 1.0,
                 'prompt_kind': 1 - 1 / (2 * b), 'prompt_relation': 1.0}
  got = with_wrong('axis', 2, (), 1 - a[2])
  assert got == {'prompt_all': 1 - 1 / b, 'prompt_colour': 1.0, 'prompt_kind': 1.0,
                 'prompt_relation': 1 - 1 / b}

  # A picture of the relation reversed (red BELOW blue for "red above blue") reads with the
  # objects swapped on the right axis: the relation fails, not only the colours and kinds.
  swapped = {k: np.array(v) for k, v in right.items()}
  for key in ('colour', 'kind'):
    swapped[key][0] = swapped[key][0, ::-1]
  got = {k: float(v) for k, v in score(swapped, colour, kind, relation).items()}
  assert got['prompt_relation'] == 1 - 1 / b and got['prompt_all'] == 1 - 1 / b
  # ... unless the two objects are the same, when either order is the caption.
  same_colour, same_kind = colour.copy(), kind.copy()
  same_colour[0, 1], same_kind[0, 1] = colour[0, 0], kind[0, 0]
  both = _logits_for(same_colour, same_kind, relation)
  assert float(score(both, same_colour, same_kind, relation)['prompt_all']) == 1.0


def test_prompt_following_against_a_loop_on_random_logits():
  b = 64
  rng = np.random.default_rng(1)
  colour, kind, relation = (rng.integers(0, 6, (b, 2)), rng.integers(0, 3, (b, 2)),
                            rng.integers(0, 4, b))
  out = {'colour': rng.normal(size=(b, 2, 6)), 'kind': rng.normal(size=(b, 2, 3)),
         'axis': rng.normal(size=(b, 2))}
  # bias half the rows towards the right answer so that every outcome occurs
  right = _logits_for(colour, kind, relation, scale=2.0)
  out = {k: v + np.asarray(right[k]) * (np.arange(b) % 2).reshape(-1, *[1] * (v.ndim - 1))
         for k, v in out.items()}
  got = attr.prompt_following({k: jnp.asarray(v, jnp.float32) for k, v in out.items()},
                              colour, kind, relation)

  logsm = lambda z: z - np.log(np.exp(z).sum(-1, keepdims=True))
  hits = {'colour': [], 'kind': [], 'relation': [], 'all': []}
  for i in range(b):
    (c0, c1), (k0, k1), axis = _canonical_by_hand(colour[i], kind[i], relation[i])
    lc, lk = logsm(out['colour'][i]), logsm(out['kind'][i])
    ch = [out['colour'][i, 0].argmax() == c0, out['colour'][i, 1].argmax() == c1]
    kh = [out['kind'][i, 0].argmax() == k0, out['kind'][i, 1].argmax() == k1]
    as_asked = lc[0, c0] + lk[0, k0] + lc[1, c1] + lk[1, k1]
    reversed_ = lc[0, c1] + lk[0, k1] + lc[1, c0] + lk[1, k0]
    rh = out['axis'][i].argmax() == axis and as_asked >= reversed_
    hits['colour'] += ch
    hits['kind'] += kh
    hits['relation'].append(rh)
    hits['all'].append(all(ch) and all(kh) and rh)
  for name, h in hits.items():
    assert float(got[f'prompt_{name}']) == pytest.approx(np.mean(h), abs=1e-6), name
  assert 0.1 < float(got['prompt_all']) < 0.9


def test_reader_shapes_params_only_and_task_loss():
  from train import core
  config = load_config(SPEC)
  task = core.load_task(config)
  colour, kind, relation = _distinct_captions(6, seed=2)
  rng = np.random.default_rng(3)
  image = np.stack([cs.render(rng, c, k, r) for c, k, r in zip(colour, kind, relation)])
  batch = {'image': image, 'colour': colour, 'kind': kind, 'relation': relation,
           'tokens': np.zeros((6, cs.MAX_TOKENS), np.int32)}
  # Random params of init's shapes (compiling init itself, threefry for every kernel, costs
  # XLA:CPU far more than the network; the loop's init runs in the config test below).
  shapes = jax.eval_shape(task.init, jax.random.key(0), batch)
  assert set(shapes) == {'params'}   # no batch statistics: a frozen copy is plain params
  rng = np.random.default_rng(4)
  variables = jax.tree.map(
      lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), s.dtype), nn.meta.unbox(shapes))
  reader = attr.Reader(**config.model)
  x = jnp.asarray(image, jnp.float32) / 255
  out = jax.jit(reader.apply)(variables, x)
  assert out['colour'].shape == (6, 2, 6) and out['kind'].shape == (6, 2, 3)
  assert out['axis'].shape == (6, 2) and out['features'].shape == (6, config.model.hidden)

  # the loss (train=True) is the sum of the five cross-entropies against the canonical
  # attributes of the eval-mode logits: one function in both modes
  logsm = lambda z: np.asarray(jax.nn.log_softmax(z))
  lc, lk, la = logsm(out['colour']), logsm(out['kind']), logsm(out['axis'])
  want = []
  for i in range(6):
    (c0, c1), (k0, k1), axis = _canonical_by_hand(colour[i], kind[i], relation[i])
    want.append(-(lc[i, 0, c0] + lc[i, 1, c1] + lk[i, 0, k0] + lk[i, 1, k1] + la[i, axis]))
  loss, (metrics, _) = jax.jit(task.loss)(variables, batch, jax.random.key(1))
  assert float(loss) == pytest.approx(np.mean(want), rel=1e-5)
  assert float(metrics['loss']) == float(loss) and 0 <= float(metrics['all_correct']) <= 1
  per_example = jax.jit(task.evaluate)(variables, batch)
  np.testing.assert_allclose(per_example['loss'], want, rtol=1e-5)
  assert per_example['all_correct'].shape == (6,)
  with pytest.raises(ValueError, match='32, 32, 3'):
    jax.eval_shape(reader.apply, variables, x[:, :16])

  # FD features: the representation and the first object's joint (colour, kind) logits
  feats = jax.jit(task.features)(variables, {'image': image})
  assert feats['features'].shape == (6, config.model.hidden)
  joint = np.asarray(feats['logits']).reshape(6, 6, 3)
  np.testing.assert_allclose(jax.nn.logsumexp(joint.reshape(6, -1), -1), 0.0, atol=1e-5)
  np.testing.assert_allclose(joint, lc[:, 0, :, None] + lk[:, 0, None, :], rtol=1e-5)


def test_config_trains_resumes_and_serves_as_fd_classifier(tmp_path, data_dir):
  """4 tiny steps (checkpoints at 2 and 4) with an eval on 16 test scenes resume exactly
  from step 2; the run then serves the FD evaluator as its classifier."""
  result = train_spec(SPEC, tmp_path / 'straight', data_dir, data__eval_split='test[:16]')
  assert {'loss', 'all_correct', 'colour_accuracy', 'kind_accuracy', 'axis_accuracy'} <= \
      set(result)
  assert 0 <= result['all_correct'] <= result['axis_accuracy'] <= 1
  check_resumes_from_step_2(SPEC, train_spec, tmp_path, data_dir)

  from train import config_lib, evaluators
  generator = config_lib.base()
  generator.data.name = 'caption_shapes'
  generator.data.eval_split = 'test[:16]'
  generator.data.data_dir = data_dir
  opts = evaluators.FdOptions(classifier=os.path.join(REPO, 'configs', SPEC),
                              workdir=str(tmp_path / 'straight'))
  embed, real, floor = evaluators.fd_reference(generator, opts)
  assert real.shape == (16, 8) and np.isfinite(floor) and floor > 0
  out = embed(np.zeros((3, 32, 32, 3), np.uint8))
  assert out['features'].shape == (3, 8) and out['logits'].shape == (3, 18)
