"""The attribute reader of captioned two-object scenes (train/datasets/caption_shapes.py):
a small CNN that reads a 32x32 image back into its caption's five attributes, so that a
text-to-image model is scored on whether its pictures follow their prompts (the
"prompt-following" of DALL-E-style and diffusion evaluations, with a classifier of this
codebase in place of a human or a CLIP judge), and the feature space of its Fréchet
distance (the FID recipe of Heusel et al. 2017 with this reader in place of Inception).

A caption "a red circle above a blue square" and "a blue square below a red circle" are
one picture, so the reader predicts the CANONICAL attributes (`canonical`): "below" and
"right of" are mirrored into "above" and "left of" by swapping the two objects, and the
reader says which axis the pair lies on (0: vertical, first object upper; 1: horizontal,
first object left) and the colour (6) and kind (3) of the first and the second object.

Network (`Reader`): three stages of two 3x3 convolutions with GroupNorm (Wu & He 2018) and
GELU, a 2x2 max pool after each (32 -> 16 -> 8 -> 4); the 4x4 map is flattened (so the
head sees where things are, which relations need) into a Dense representation of
`hidden` units; linear heads give colour (B, 2, 6), kind (B, 2, 3) and axis (B, 2) logits.
No batch norm: the reader's variables are its params alone, so a frozen copy inside
another model is plain params.

`prompt_following` scores a batch of generated images against the captions they were
asked for: per attribute (the two colours, the two kinds, the relation) and all five at
once. The relation is right when the axis is and the pair is read in the caption's order:
the reader's joint log-probability of (first, second) = the caption's canonical (A, B) is
at least that of the swapped pair (B, A); so a picture with red BELOW blue, asked for red
above blue, fails the relation (and its colours) instead of passing on the axis alone.

The task (`make`, `task = 'vision.attributes'`, `model_name = 'vision.attributes'`) trains
the reader with the sum of the five cross-entropies on caption_shapes' `train`; its eval
reports each attribute's accuracy and `all_correct` on `test`, whose compositions `train`
never shows. Its `features` give the FD evaluator (train/evaluators.py) the representation
(B, hidden) and, as the 18-way class logits of `class_coverage`, the (colour, kind) of the
first (upper / left) object: log p(colour) + log p(kind).
Measured (configs/caption_reader_shapes.py, 1,000 steps of 64): test all_correct 0.999,
relation (axis) 1.000; its fd_floor on caption_shapes 24.26.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

import arch
from arch.images import scale_images
from arch.task import Task, parse_options

Dtype = str | jnp.dtype

NUM_COLOURS = 6
NUM_KINDS = 3
NUM_RELATIONS = 4   # above, below, left of, right of (caption_shapes.RELATIONS)
SIZE = 32


def canonical(colour_B2, kind_B2, relation_B):
  """(colour_B2, kind_B2, axis_B) of captions: 'below' / 'right of' become 'above' /
  'left of' with A and B swapped; axis 0 = vertical (first object above), 1 = horizontal
  (first object left)."""
  relation_B = jnp.asarray(relation_B)
  swap_B = (relation_B % 2 == 1)[:, None]
  colour_B2, kind_B2 = jnp.asarray(colour_B2), jnp.asarray(kind_B2)
  return (jnp.where(swap_B, colour_B2[:, ::-1], colour_B2),
          jnp.where(swap_B, kind_B2[:, ::-1], kind_B2),
          (relation_B // 2).astype(relation_B.dtype))


def _init(axes, init=nn.initializers.lecun_normal()):
  return nn.with_logical_partitioning(init, axes)


class Reader(nn.Module):
  """Images (B, 32, 32, 3) in [0, 1] -> canonical attribute logits and features."""
  widths: tuple = (16, 32, 64)  # channels of the three stages (two 3x3 convs each)
  hidden: int = 128             # F, the representation's width
  norm_groups: int = 4          # GroupNorm groups (each width a multiple)
  dtype: Dtype = 'float32'
  param_dtype: Dtype = 'float32'

  @nn.compact
  def __call__(self, images_BHWC, train: bool = False):
    del train  # no dropout, no batch statistics: the same function in training and eval
    if images_BHWC.ndim != 4 or images_BHWC.shape[1:] != (SIZE, SIZE, 3):
      raise ValueError(f'Reader takes (batch, {SIZE}, {SIZE}, 3) images in [0, 1]; got '
                       f'shape {images_BHWC.shape}')
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = jnp.asarray(images_BHWC, self.dtype)
    for s, width in enumerate(self.widths):
      for j in range(2):
        x = nn.Conv(width, (3, 3), padding='SAME', name=f'stage{s}_conv{j}', **dt,
                    kernel_init=_init((None, None, 'conv_in', 'conv_out')),
                    bias_init=_init(('conv_out',), nn.initializers.zeros))(x)
        x = nn.GroupNorm(self.norm_groups, name=f'stage{s}_norm{j}', **dt,
                         scale_init=_init(('conv_out',), nn.initializers.ones),
                         bias_init=_init(('conv_out',), nn.initializers.zeros))(x)
        x = nn.gelu(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)   # the 4x4 map in place: where each object is
    feats_BF = nn.gelu(nn.Dense(self.hidden, name='hidden', **dt,
                                kernel_init=_init(('embed', 'mlp')),
                                bias_init=_init(('mlp',), nn.initializers.zeros))(x))

    def head(n, name):
      return nn.Dense(n, name=name, **dt, kernel_init=_init(('mlp', 'classes')),
                      bias_init=_init(('classes',), nn.initializers.zeros))(feats_BF)
    b = feats_BF.shape[0]
    return {'colour': head(2 * NUM_COLOURS, 'colour').reshape(b, 2, NUM_COLOURS),
            'kind': head(2 * NUM_KINDS, 'kind').reshape(b, 2, NUM_KINDS),
            'axis': head(2, 'axis'),
            'features': feats_BF}


Model = Reader  # `model_name = 'vision.attributes'`


def _log_probs(out):
  return (jax.nn.log_softmax(out['colour'].astype(jnp.float32)),
          jax.nn.log_softmax(out['kind'].astype(jnp.float32)),
          jax.nn.log_softmax(out['axis'].astype(jnp.float32)))


def attribute_hits(out, colour_B2, kind_B2, relation_B):
  """Per-example hits of the reader's output against raw captions: {'colour': (B, 2),
  'kind': (B, 2), 'relation': (B,)} booleans (relation: the axis and the order, see the
  module docstring)."""
  colour_B2, kind_B2, axis_B = canonical(colour_B2, kind_B2, relation_B)
  lc_B2C, lk_B2K, _ = _log_probs(out)
  colour_hit = out['colour'].argmax(-1) == colour_B2
  kind_hit = out['kind'].argmax(-1) == kind_B2
  pick = lambda l_B2N, i_B: jnp.take_along_axis(l_B2N, i_B[:, None, None], -1)[:, :, 0]
  # log p(position p holds caption object o) for o in (A, B): (B, positions, objects)
  lp_B2O = jnp.stack([pick(lc_B2C, colour_B2[:, o]) + pick(lk_B2K, kind_B2[:, o])
                      for o in range(2)], -1)
  in_order = lp_B2O[:, 0, 0] + lp_B2O[:, 1, 1] >= lp_B2O[:, 0, 1] + lp_B2O[:, 1, 0]
  relation_hit = (out['axis'].argmax(-1) == axis_B) & in_order
  return {'colour': colour_hit, 'kind': kind_hit, 'relation': relation_hit}


def prompt_following(out, colour_B2, kind_B2, relation_B):
  """Means over the batch of whether images follow their (raw) captions, read by the
  Reader's `out`: `prompt_colour` and `prompt_kind` over both objects, `prompt_relation`,
  and `prompt_all` (all five attributes of an image right)."""
  hits = attribute_hits(out, colour_B2, kind_B2, relation_B)
  all_B = hits['colour'].all(-1) & hits['kind'].all(-1) & hits['relation']
  mean = lambda h: h.astype(jnp.float32).mean()
  return {'prompt_all': mean(all_B), 'prompt_colour': mean(hits['colour']),
          'prompt_kind': mean(hits['kind']), 'prompt_relation': mean(hits['relation'])}


def class_logits(out):
  """The 18-way (colour, kind) logits of the first (upper / left) object, colour-major:
  log p(colour) + log p(kind) (B, 18)."""
  lc_B2C, lk_B2K, _ = _log_probs(out)
  return (lc_B2C[:, 0, :, None] + lk_B2K[:, 0, None, :]).reshape(-1, NUM_COLOURS * NUM_KINDS)


@dataclasses.dataclass(frozen=True)
class Options:
  """The attribute reader's task_kwargs (none yet: the data fixes the sizes)."""


def make(config) -> Task:
  parse_options(Options, config)
  model = arch.model_from_config(config)

  def images(batch):
    return scale_images(batch['image'], (SIZE, SIZE))

  def per_example(out, batch):
    """Each example's summed cross-entropy and its hits, against canonical targets."""
    colour_B2, kind_B2, axis_B = canonical(batch['colour'], batch['kind'], batch['relation'])
    lc_B2C, lk_B2K, la_B2 = _log_probs(out)
    take = lambda l, i: jnp.take_along_axis(l, i[..., None], -1)[..., 0]
    xent_B = -(take(lc_B2C, colour_B2).sum(-1) + take(lk_B2K, kind_B2).sum(-1)
               + take(la_B2, axis_B))
    colour_hit = out['colour'].argmax(-1) == colour_B2
    kind_hit = out['kind'].argmax(-1) == kind_B2
    axis_hit = out['axis'].argmax(-1) == axis_B
    f = lambda h: h.astype(jnp.float32)
    return {'loss': xent_B,
            'colour_accuracy': f(colour_hit).mean(-1), 'kind_accuracy': f(kind_hit).mean(-1),
            'axis_accuracy': f(axis_hit),
            'all_correct': f(colour_hit.all(-1) & kind_hit.all(-1) & axis_hit)}

  def init(rng, batch):
    return model.init({'params': rng}, images(batch), train=False)

  def loss(variables, batch, rng):
    del rng
    out = model.apply(variables, images(batch), train=True)
    metrics = {k: v.mean() for k, v in per_example(out, batch).items()}
    return metrics['loss'], (metrics, {})

  def evaluate(variables, batch):
    return per_example(model.apply(variables, images(batch), train=False), batch)

  def features(variables, batch):
    """{'features': the representation (B, hidden), 'logits': the first object's 18-way
    (colour, kind) logits (B, 18)}, for the FD evaluator; reads `image` alone."""
    out = model.apply(variables, images(batch), train=False)
    return {'features': out['features'].astype(jnp.float32), 'logits': class_logits(out)}

  def example_batch(batch_size):
    s = lambda shape, dtype=jnp.int32: jax.ShapeDtypeStruct((batch_size, *shape), dtype)
    return {'image': s((SIZE, SIZE, 3), jnp.uint8), 'colour': s((2,)), 'kind': s((2,)),
            'relation': s(())}

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              features=features)
