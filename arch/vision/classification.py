"""Image classification: softmax cross-entropy over any backbone's logits.

Config keys read: `model_name`, `model`, `compute_dtype`, `param_dtype`, and
`task_kwargs`, the fields of `Options`. Models with auxiliary classifiers (GoogLeNet's
`aux_logits`) sow their logits into the 'aux_logits' collection in training; each adds
`aux_weight` times its cross-entropy to the loss.
Batches hold `image` (B, H, W, C) uint8 in [0, 255] and `label` (B,) int; with
`frames` > 0, `video` (B, T, H, W, C) clips instead (video classifiers: arch/vision/c3d.py),
each frame resized alike. `target='motion'` replaces the label of a moving_digits clip by
the direction its digit moves (arch/vision/c3d.py `motion_class`, 9 classes).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.images import center_crop_resize, labelled_images, random_translate, scale_images
from arch.task import ConfigError, Task, parse_options
from arch.vision import c3d


@dataclasses.dataclass(frozen=True)
class Options:
  """Image classification's task_kwargs."""
  input_size: tuple = (32, 32)  # (H, W) the network sees; images are resized on device
  channels: int = 1
  num_classes: int = 10
  label_smoothing: float = 0.0
  shift: int = 0  # augmentation: random translations of up to `shift` pixels, zero-filled
  # For datasets of variable-sized images such as imagenet2012: on the host, resize the
  # shorter side to host_size * 8/7 and take the central host_size square, as the usual
  # ImageNet evaluation does; 0 = off.
  host_size: int = 0
  aux_weight: float = 0.3  # each auxiliary classifier's loss weight (GoogLeNet's 0.3)
  frames: int = 0  # > 0: batches hold 'video' clips of this many frames, not 'image'
  target: str = 'label'  # 'motion': a moving_digits clip's direction of motion (9 classes)


def make(config) -> Task:
  opts = parse_options(Options, config)
  input_size = tuple(opts.input_size)
  channels = opts.channels
  num_classes = opts.num_classes
  smoothing = opts.label_smoothing
  shift = int(opts.shift)
  host_size = int(opts.host_size)
  aux_weight = float(opts.aux_weight)
  backbone = None
  if 'num_classes' in arch.model_fields(config.model_name):
    if config.model.get('num_classes', num_classes) != num_classes:
      raise ConfigError(f'config.model.num_classes={config.model.num_classes} but '
                        f'config.task_kwargs.num_classes={num_classes}; make them agree')
    model = arch.model_from_config(config, num_classes=num_classes)
    backbone = arch.model_from_config(config, num_classes=0)  # the same net, no head
  else:
    model = arch.model_from_config(config)

  frames = int(opts.frames)
  if opts.target not in ('label', 'motion'):
    raise ConfigError(f"task_kwargs.target={opts.target!r}; valid: 'label', 'motion'")
  if opts.target == 'motion' and (not frames or num_classes != 9):
    raise ConfigError('target=motion classifies clips (task_kwargs.frames > 0) into 9 '
                      'directions (task_kwargs.num_classes=9)')
  if frames and (shift or host_size):
    raise ConfigError('clips (task_kwargs.frames > 0) take no shift or host_size')

  def images(batch):
    if not frames:
      return scale_images(batch['image'], input_size)
    v = batch['video']
    b, t = v.shape[:2]
    return scale_images(v.reshape(b * t, *v.shape[2:]), input_size).reshape(
        b, t, *input_size, v.shape[-1])

  def init(rng, batch):
    return model.init({'params': rng, 'dropout': rng}, images(batch), train=False)

  def loss(variables, batch, rng):
    state = [k for k in variables if k != 'params']
    aug_rng, rng = jax.random.split(rng)
    x = images(batch)
    if shift:
      x = random_translate(x, aug_rng, shift)
    logits, updates = model.apply(variables, x, train=True, rngs={'dropout': rng},
                                  mutable=state + ['aux_logits'])
    updates = dict(updates)
    aux = updates.pop('aux_logits', {})  # auxiliary classifiers' logits, sown in training
    targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], num_classes), smoothing) \
        if smoothing else jax.nn.one_hot(batch['label'], num_classes)
    xent = lambda z: optax.softmax_cross_entropy(z.astype(jnp.float32), targets).mean()
    ce = xent(logits)
    metrics = {'accuracy': (logits.argmax(-1) == batch['label']).mean()}
    total = ce
    for name, (aux_logits,) in sorted(aux.items()):
      metrics[f'loss_{name}'] = xent(aux_logits)
      total = total + aux_weight * metrics[f'loss_{name}']
    if aux:
      metrics['main_loss'] = ce
    metrics['loss'] = total
    return total, (metrics, updates)

  def evaluate(variables, batch):
    logits = model.apply(variables, images(batch), train=False).astype(jnp.float32)
    return {'loss': optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']),
            'accuracy': (logits.argmax(-1) == batch['label']).astype(jnp.float32)}

  def features(variables, batch):
    """{'features': the representation the head reads (B, F), 'logits': (B, K)}, for the
    evaluators (probes; the Fréchet distance of generative runs, train/evaluators.py)."""
    x = images(batch)
    rep = backbone.apply(variables, x, train=False)
    if rep.ndim != 2 or not rep.shape[-1]:
      raise ValueError(f'{config.model_name} with num_classes=0 gives {rep.shape}, not a '
                       f'representation (B, F): it has no features for the evaluators')
    return {'features': rep.astype(jnp.float32),
            'logits': model.apply(variables, x, train=False).astype(jnp.float32)}

  def example_batch(batch_size):
    if not frames:
      return labelled_images(batch_size, input_size, channels)
    return {'video': jax.ShapeDtypeStruct((batch_size, frames, *input_size, channels),
                                          jnp.uint8),
            'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32)}

  def preprocess(example):
    if opts.target == 'motion':
      return {**example, 'label': np.int64(c3d.motion_class(example['video']))}
    return {**example, 'image': center_crop_resize(example['image'], host_size)}

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              preprocess=preprocess if host_size or opts.target == 'motion' else None,
              features=features if backbone is not None else None)
