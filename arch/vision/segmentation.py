"""Semantic segmentation: per-pixel softmax cross-entropy; eval pixel accuracy and mean IoU.

Config keys read: `model_name`, `model` (its `num_classes`), dtypes, and `task_kwargs`,
the fields of `Options`. Batches hold `image` (B, H, W, C) uint8 and `mask`
(B, H, W) int class ids. When the network's output map is smaller than its input (U-Net's
unpadded convolutions), the mask is centre-cropped to the output, as in the paper.

`miou` is the dataset-level mean over classes of (sum of intersections) / (sum of unions),
over the classes that occur in the split's masks or predictions.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

import arch
from arch.layers.pool import center_crop
from arch.task import Task, parse_options


@dataclasses.dataclass(frozen=True)
class Options:
  """Segmentation's task_kwargs."""
  # (H, W) fed to the network: images are resized bilinearly, masks by nearest neighbour
  input_size: tuple = (48, 48)
  channels: int = 3
  num_classes: int = 2


def make(config) -> Task:
  opts = parse_options(Options, config)
  input_size = tuple(opts.input_size)
  channels = opts.channels
  num_classes = opts.num_classes
  model = arch.model_from_config(config)

  def inputs(batch):
    x = batch['image'].astype(jnp.float32) / 255.0
    y = batch['mask'].astype(jnp.int32)
    if x.shape[1:3] != input_size:
      x = jax.image.resize(x, (x.shape[0], *input_size, x.shape[-1]), 'bilinear')
      y = jax.image.resize(y, (y.shape[0], *input_size), 'nearest')
    return x, y

  def logits_and_targets(variables, batch, train, rng=None, mutable=False):
    x, y = inputs(batch)
    out = model.apply(variables, x, train=train, rngs={'dropout': rng} if rng is not None else None,
                      mutable=mutable)
    logits, updates = out if mutable else (out, {})
    logits = logits.astype(jnp.float32)
    return logits, center_crop(y, logits.shape[1], logits.shape[2]), updates

  def init(rng, batch):
    return model.init({'params': rng, 'dropout': rng}, inputs(batch)[0], train=False)

  def loss(variables, batch, rng):
    state = [k for k in variables if k != 'params']
    logits, y, updates = logits_and_targets(variables, batch, True, rng, state)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    acc = (logits.argmax(-1) == y).mean()
    return ce, ({'loss': ce, 'pixel_accuracy': acc}, dict(updates))

  def evaluate(variables, batch):
    logits, y, _ = logits_and_targets(variables, batch, False)
    pred = logits.argmax(-1)
    classes = jnp.arange(num_classes)
    p = pred[..., None] == classes            # (B, H, W, K)
    t = y[..., None] == classes
    return {
        'loss': optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(axis=(1, 2)),
        'pixel_accuracy': (pred == y).mean(axis=(1, 2)),
        'intersection': (p & t).sum(axis=(1, 2)).astype(jnp.float32),   # (B, K)
        'union': (p | t).sum(axis=(1, 2)).astype(jnp.float32),
    }

  def finalize_eval(sums, count):
    union = sums['union']
    present = union > 0
    iou = jnp.where(present, sums['intersection'] / jnp.maximum(union, 1), 0.0)
    out = {'loss': sums['loss'] / count, 'pixel_accuracy': sums['pixel_accuracy'] / count,
           'miou': iou.sum() / jnp.maximum(present.sum(), 1)}
    out.update({f'iou_{k}': iou[k] for k in range(num_classes)})
    return out

  def example_batch(batch_size):
    return {'image': jax.ShapeDtypeStruct((batch_size, *input_size, channels), jnp.uint8),
            'mask': jax.ShapeDtypeStruct((batch_size, *input_size), jnp.int32)}

  return Task(init=init, loss=loss, evaluate=evaluate, finalize_eval=finalize_eval,
              example_batch=example_batch)
