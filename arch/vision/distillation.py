"""Knowledge distillation for image classifiers: DeiT's hard and soft distillation
(Touvron et al. 2021, section 5) and Hinton et al.'s (2015) soft targets, from a frozen
teacher network.

The teacher is another run of this codebase, named in the config as a frozen model:
`config.frozen.teacher = dict(spec='configs/resnet_digits.py', workdir='')`. The loop
resolves the spec into `config.frozen.teacher.config`, trains it first when its workdir
holds no checkpoint, and restores its variables into the non-parameter collection
'teacher' (params and batch statistics), which no optimizer touches. The teacher runs in
inference mode on the student's input, augmentation included (as in DeiT: the teacher
labels the view the student sees), resized to its own input size.

The student returns logits (B, K) or, when it has a distillation head (DeiT), the pair
(class logits, distillation logits) in training; the distillation term then reads the
distillation head and the label term the class head, else both read the same logits.
  hard: (1/2) CE(class, y) + (1/2) CE(dist, argmax teacher)           (DeiT's default)
  soft: (1 - alpha) CE(class, y) + alpha tau^2 KL(softmax(t / tau) || softmax(dist / tau))
  none: (1/2) CE(class, y) + (1/2) CE(dist, y): the same network without a teacher, the
        baseline distillation is compared with.
At inference a DeiT student returns the mean of its two heads' logits.

Config keys read: `model_name`, `model`, `frozen.teacher.config` (the teacher run's
config) and `task_kwargs`, the fields of `Options`. Eval reports `loss`, `accuracy`, and,
with a teacher, `teacher_accuracy` and `agreement` (student and teacher predict the same
class).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

import arch
from arch.images import center_crop_resize, labelled_images, random_translate, scale_images
from arch.task import ConfigError, Task, parse_options

TEACHER = 'teacher'  # the collection the loop restores the frozen teacher into


@dataclasses.dataclass(frozen=True)
class Options:
  """Distillation's task_kwargs: the loss, then the images as classification's Options."""
  distillation: str = 'hard'  # 'hard' | 'soft' | 'none'
  alpha: float = 0.1  # soft: the distillation term's weight (DeiT's 0.1)
  tau: float = 3.0  # soft: the softmax temperature (DeiT's 3.0)
  input_size: tuple = (32, 32)
  channels: int = 1
  num_classes: int = 10
  shift: int = 0
  host_size: int = 0


def make(config) -> Task:
  opts = parse_options(Options, config)
  mode = opts.distillation
  if mode not in ('hard', 'soft', 'none'):
    raise ConfigError(f"unknown distillation {mode!r}; valid: 'hard', 'soft', 'none'")
  input_size = tuple(opts.input_size)
  channels = opts.channels
  num_classes = opts.num_classes
  shift = int(opts.shift)
  host_size = int(opts.host_size)
  alpha, tau = float(opts.alpha), float(opts.tau)
  student = arch.model_from_config(config, num_classes=num_classes)

  teacher, teacher_size = None, None
  if mode != 'none':
    frozen = config.get('frozen', {}).get(TEACHER)
    if not frozen or not frozen.get('config'):
      raise ConfigError(f"distillation={mode!r} needs a teacher: config.frozen.teacher = "
                        "dict(spec='configs/X.py', workdir='')")
    tcfg = frozen.config
    # The teacher run's options, as its own task reads them.
    t_opts = parse_options(arch.load(tcfg.task, 'make').Options, tcfg)
    if t_opts.num_classes != num_classes:
      raise ConfigError(f'the teacher has {t_opts.num_classes} classes, the student '
                        f'{num_classes}')
    teacher = arch.model_from_config(tcfg)
    teacher_size = tuple(t_opts.input_size)

  def heads(out):
    return out if isinstance(out, tuple) else (out, out)

  def teacher_logits(variables, x_BHWC):
    """The teacher on the student's (augmented) input, resized to its own input size."""
    t_vars = jax.lax.stop_gradient(variables[TEACHER])
    if x_BHWC.shape[1:3] != teacher_size:
      x_BHWC = jax.image.resize(x_BHWC, (x_BHWC.shape[0], *teacher_size, x_BHWC.shape[-1]),
                                'bilinear')
    return teacher.apply(t_vars, x_BHWC, train=False).astype(jnp.float32)

  def init(rng, batch):
    x = scale_images(batch['image'], input_size)
    variables = dict(student.init({'params': rng, 'dropout': rng}, x, train=False))
    if teacher is not None:
      variables[TEACHER] = teacher.init({'params': rng, 'dropout': rng},
                                        scale_images(batch['image'], teacher_size),
                                        train=False)
    return variables

  def loss(variables, batch, rng):
    aug_rng, rng = jax.random.split(rng)
    state = [k for k in variables if k not in ('params', TEACHER)]
    x = scale_images(batch['image'], input_size)
    if shift:
      x = random_translate(x, aug_rng, shift)
    out, updates = student.apply({k: v for k, v in variables.items() if k != TEACHER}, x,
                                 train=True, rngs={'dropout': rng}, mutable=state)
    cls_BK, dist_BK = (z.astype(jnp.float32) for z in heads(out))
    labels = batch['label']
    ce_cls = optax.softmax_cross_entropy_with_integer_labels(cls_BK, labels).mean()
    metrics = {'accuracy': (cls_BK.argmax(-1) == labels).mean(), 'loss_labels': ce_cls}
    if mode == 'none':
      term = optax.softmax_cross_entropy_with_integer_labels(dist_BK, labels).mean()
      total = 0.5 * ce_cls + 0.5 * term
    else:
      t_BK = teacher_logits(variables, x)
      if mode == 'hard':
        term = optax.softmax_cross_entropy_with_integer_labels(dist_BK, t_BK.argmax(-1)).mean()
        total = 0.5 * ce_cls + 0.5 * term
      else:
        term = tau ** 2 * optax.kl_divergence(jax.nn.log_softmax(dist_BK / tau),
                                              jax.nn.softmax(t_BK / tau)).mean()
        total = (1 - alpha) * ce_cls + alpha * term
      metrics['teacher_accuracy'] = (t_BK.argmax(-1) == labels).mean()
    metrics['loss_distill'] = term
    metrics['loss'] = total
    updates = dict(updates)
    if teacher is not None:
      updates[TEACHER] = variables[TEACHER]
    return total, (metrics, updates)

  def evaluate(variables, batch):
    student_vars = {k: v for k, v in variables.items() if k != TEACHER}
    x = scale_images(batch['image'], input_size)
    out = student.apply(student_vars, x, train=False)
    logits_BK = out.astype(jnp.float32)
    labels = batch['label']
    result = {'loss': optax.softmax_cross_entropy_with_integer_labels(logits_BK, labels),
              'accuracy': (logits_BK.argmax(-1) == labels).astype(jnp.float32)}
    if teacher is not None:
      t_BK = teacher_logits(variables, x)
      result['teacher_accuracy'] = (t_BK.argmax(-1) == labels).astype(jnp.float32)
      result['agreement'] = (t_BK.argmax(-1) == logits_BK.argmax(-1)).astype(jnp.float32)
    return result

  example_batch = lambda batch_size: labelled_images(batch_size, input_size, channels)

  def preprocess(example):
    return {**example, 'image': center_crop_resize(example['image'], host_size)}

  return Task(init=init, loss=loss, evaluate=evaluate, example_batch=example_batch,
              preprocess=preprocess if host_size else None)
