"""RotNet (Gidaris, Singh & Komodakis 2018, "Unsupervised representation learning by
predicting image rotations").

Every image is shown at all four rotations (0, 90, 180, 270 degrees; the paper found
feeding the four together best), and a linear classifier on the backbone's representation
predicts which. The representation probes read is the backbone's output. Images must be
square.

Config keys read: `model_name`, `model` (the backbone, `num_classes=0`), `task_kwargs`
(`Options`, contrastive.ImageOptions): `input_size`, `channels`, `augment` (views applied
before rotating; {} = none), `host_size`. Train metrics: `loss`, `rotation_accuracy`.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from arch.layers.conv import classifier_head
from arch.multimodal import augment
from arch.multimodal.contrastive import ImageOptions, ImageSetup
from arch.task import ConfigError, Task, parse_options


@dataclasses.dataclass(frozen=True)
class Options(ImageOptions):
  """RotNet's task_kwargs: the image options alone."""


class RotationNet(nn.Module):
  """backbone -> 4-way rotation logits; `represent` is the backbone alone."""
  backbone: nn.Module

  def setup(self):
    self.head = classifier_head(4, jnp.float32, jnp.float32, name='rotation_head')

  def represent(self, x_BHWC, *, train: bool = False):
    return self.backbone(x_BHWC, train=train)

  def __call__(self, x_BHWC, *, train: bool = False):
    return self.head(self.represent(x_BHWC, train=train)).astype(jnp.float32)


def make(config) -> Task:
  s = ImageSetup(config, parse_options(Options, config))
  if s.input_size[0] != s.input_size[1]:
    raise ConfigError(f'RotNet rotates by quarter turns: input_size must be square, got '
                      f'{s.input_size}')
  model = RotationNet(s.backbone)

  def init(rng, batch):
    return model.init({'params': rng, 'dropout': rng}, s.images(batch), train=False)

  def loss(variables, batch, rng):
    k_view, k_drop = jax.random.split(rng)
    x = s.images(batch)
    if s.augment:
      x = s.views(k_view, x)
    b = x.shape[0]
    k_BR = jnp.repeat(jnp.arange(4), b)  # rotation of each of the 4B inputs
    x4 = augment.rotate90(jnp.tile(x, (4, 1, 1, 1)), k_BR)
    state = [k for k in variables if k != 'params']
    logits, updates = model.apply(variables, x4, train=True, rngs={'dropout': k_drop},
                                  mutable=state)
    value = optax.softmax_cross_entropy_with_integer_labels(logits, k_BR).mean()
    acc = (logits.argmax(-1) == k_BR).mean()
    return value, ({'loss': value, 'rotation_accuracy': acc}, dict(updates))

  return Task(init=init, loss=loss, example_batch=s.example_batch, preprocess=s.preprocess(),
              features=s.features_fn(model))
