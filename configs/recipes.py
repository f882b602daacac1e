"""Recipes that experiment configs share: the dataset, objective and schedule of a family of
experiments (ImageNet at published recipes, the offline digits, the translation pairs).

A config imports them as `from configs import recipes` (`train.config_lib.load` makes the
folder above configs/ importable).
"""

import ml_collections

from arch.vision import resnet
from train import config_lib, evaluators
from train.errors import UserError

IMAGENET_TRAIN_EXAMPLES = 1_281_167


def imagenet(c: ml_collections.ConfigDict, size: int = 224, batch_size: int = 256,
             epochs: int = 90) -> int:
  """Sets `c` up for ImageNet-1k classification from TFDS `imagenet2012` (prepared in
  `data.data_dir`): 1000 classes, RGB at `size`, each image centre-cropped and resized to
  `size` on the host; step counts from `epochs`. Returns the steps per epoch."""
  c.task = 'vision.classification'
  c.task_kwargs = dict(input_size=(size, size), channels=3, num_classes=1000, host_size=size)
  c.data.name = 'imagenet2012'
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.batch_size = batch_size
  steps_per_epoch = IMAGENET_TRAIN_EXAMPLES // batch_size
  c.total_steps = epochs * steps_per_epoch
  c.log_every = 100
  c.eval_every = steps_per_epoch
  c.ckpt_every = steps_per_epoch
  return steps_per_epoch


def transformer_imagenet(c: ml_collections.ConfigDict, *, epochs: int, batch_size: int,
                         lr: float, warmup_epochs: int, label_smoothing: float = 0.1,
                         weight_decay: float = 0.05) -> int:
  """ImageNet at 224x224 with the vision-transformer recipe of DeiT and its successors:
  AdamW (decoupled weight decay), cosine decay after a linear warm-up, label smoothing
  (without their RandAugment/Mixup/CutMix/repeated augmentation). Returns the steps per
  epoch."""
  epoch = imagenet(c, size=224, batch_size=batch_size, epochs=epochs)
  c.task_kwargs.label_smoothing = label_smoothing
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=weight_decay)
  c.lr = lr
  c.schedule = 'cosine'
  c.warmup_steps = warmup_epochs * epoch
  return epoch


def digits(c: ml_collections.ConfigDict, size: int = 32, shift: int = 0) -> None:
  """Sets `c` up for classifying the offline `digits` (8x8 images, resized on device to
  size x size; random +-`shift` px translations in training), batch 64, test split."""
  c.task = 'vision.classification'
  c.task_kwargs = dict(input_size=(size, size), channels=1, num_classes=10, shift=shift,
                       label_smoothing=0.0)
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.batch_size = 64


def selfsup_digits(c: ml_collections.ConfigDict, task: str, size: int = 16) -> None:
  """Sets `c` up for self-supervised learning on the offline `digits` (labels unused in
  training; 8x8 images resized on device to size x size) with the tiny CIFAR-style ResNet
  as the backbone, and the linear-probe and k-NN evaluators (train split -> test split)."""
  c.task = task
  c.task_kwargs = dict(input_size=(size, size), channels=1,
                       augment=dict(crop_scale=(0.35, 1.0), flip=False, jitter=0.4,
                                    noise=0.05))
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.model_name = 'vision.resnet'
  c.model = dict(resnet.TINY, num_classes=0)
  c.evals.linear_probe = evaluators.entry('linear_probe')
  c.evals.knn = evaluators.entry('knn')
  c.batch_size = 128


def selfsup_variant(c: ml_collections.ConfigDict, variant: str, tiny: bool) -> None:
  """The backbone of a self-supervised digits config: 'tiny' (as set), or the papers'
  'resnet50' (torchvision's trunk, 2048-2048-128 head) on ImageNet at 224x224; `tiny`
  shrinks everything for tests. Projection-head and queue sizes are set only where the
  objective has them (SimCLR's and MoCo's head, MoCo's queue; RotNet has neither)."""
  def resize(kwargs, **sizes):
    return dict(kwargs, **{k: v for k, v in sizes.items() if k in kwargs})
  if tiny:
    c.model = dict(resnet.TINY, stage_sizes=(1, 1), widths=(4, 8), stem_features=4,
                   num_classes=0)
    c.task_kwargs = resize(c.task_kwargs.to_dict(), proj_hidden=16, proj_dim=8, queue_size=32)
    c.batch_size = 8
  elif variant == 'resnet50':
    task, kwargs = c.task, c.task_kwargs.to_dict()
    imagenet(c, size=224, batch_size=256, epochs=200)
    c.task = task
    c.task_kwargs = dict(resize(kwargs, proj_hidden=2048, proj_dim=128),
                         input_size=(224, 224), channels=3, host_size=224,
                         augment=dict(crop_scale=(0.08, 1.0), flip=True, jitter=0.4,
                                      noise=0.0))
    c.model = dict(resnet.VARIANTS['50'], num_classes=0)
  elif variant != 'tiny':
    raise UserError(f"unknown variant {variant!r}; valid: tiny, resnet50")


def translation(c: ml_collections.ConfigDict) -> None:
  """Sets `c` up for the offline `translation` pairs (dates and numbers between renderings;
  train/datasets/translation.py): byte-level tokens, sources padded to 56 and targets to
  52 (the data's at most 54 / 50 bytes + </s>), the seq2seq
  objective, eval (loss, token_accuracy, greedy exact_match) on the test split."""
  c.task = 'sequence.seq2seq'
  c.data.name = 'translation'
  c.data.eval_split = 'test'
  c.data.tokenizer = 'byte'
  c.data.max_lengths = dict(source=56, target=52)
  c.sample.max_new_tokens = 52
  c.sample.temperature = 0.0
  c.sample.prompt = 'the 21st of September 1904'


def pydoc_lm(model_name: str, variant: str, tokenizer: str, *, published: dict, cpu: dict,
             tiny: dict) -> ml_collections.ConfigDict:
  """A decoder language model on the English text of Python's help() topics (`pydoc_text`),
  the setup gpt_pydoc's default fixed and the other decoder families copy so that their
  results compare: `cpu` (`cpu`'s model fields, 129-byte windows, batch 32) and `tiny`
  (tests: 33-byte windows, batch 8) byte-level unless `tokenizer='bpe'` (vocabulary 8192);
  a `published` size `name: (model fields, vocabulary, window)` with a BPE tokenizer fitted
  to the train split and batch 8. 600 steps of AdamW (b2 0.99, weight decay 0.1) at 2e-3
  after 100 warm-up steps, gradients clipped at 1; samples of 96 new tokens at temperature
  0.8, top-k 40."""
  c = config_lib.base()
  c.task = 'sequence.lm'
  c.model_name = model_name
  c.data.name = 'pydoc_text'
  c.data.eval_split = 'validation'
  c.data.text_features = ('text',)
  tokenizer = tokenizer or ('bpe' if variant in published else 'byte')
  c.data.tokenizer = tokenizer
  if variant in published:
    model, vocab_size, window = published[variant]
    c.model = dict(model, vocab_size=vocab_size)
    c.data.vocab_size = vocab_size
    c.data.pack = window
    c.batch_size = 8
  elif variant in ('cpu', 'tiny'):
    vocab_size = 8192 if tokenizer == 'bpe' else 260
    c.data.vocab_size = vocab_size if tokenizer == 'bpe' else 0
    c.model = dict(vocab_size=vocab_size, **(cpu if variant == 'cpu' else tiny))
    c.data.pack = 129 if variant == 'cpu' else 33
    c.batch_size = 32 if variant == 'cpu' else 8
  else:
    raise UserError(f'unknown variant {variant!r}; valid: cpu, tiny, {", ".join(published)}')
  c.total_steps = 600
  c.log_every = 50
  c.eval_every = 200
  c.ckpt_every = 200
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.99, weight_decay=0.1)
  c.lr = 2e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.sample.max_new_tokens = 96  # a prompt plus 96 fits gpt/llama's cpu max_length of 128
  c.sample.temperature = 0.8
  c.sample.top_k = 40
  return c


def off_policy_pendulum(task: str, tiny: bool, total_env_steps: int, lr: float,
                        phases: tuple[str, ...], **task_kwargs) -> ml_collections.ConfigDict:
  """An off-policy actor-critic (DDPG, SAC) on gymnax's Pendulum-v1: one environment, one
  update per environment step on minibatches of 256 from a replay buffer holding the whole
  run, 1,000 steps before learning starts, 256-256 networks; a loop step is one 200-step
  episode, one Adam at `lr` per Task.phases group in `phases`. `tiny` shrinks it for tests."""
  c = config_lib.base()
  c.task = task
  c.task_kwargs = dict(env='Pendulum-v1', num_envs=1, num_steps=200, updates_per_step=1,
                       minibatch_size=256, buffer_size=total_env_steps,
                       learning_starts=1_000, gamma=0.99, tau=0.005, eval_episodes=10,
                       **task_kwargs)
  c.model_name = 'rl.continuous'
  c.model = dict(hidden=(8, 8) if tiny else (256, 256))
  k = c.task_kwargs
  if tiny:
    k.num_envs, k.num_steps, k.minibatch_size, k.buffer_size = 2, 4, 8, 12
    k.learning_starts, k.eval_episodes = 8, 2
  # One loop step is num_envs x num_steps environment steps: the batch (so the loop's
  # examples_per_sec is environment steps per second).
  c.batch_size = k.get_ref('num_envs') * k.get_ref('num_steps')
  c.total_steps = 4 if tiny else total_env_steps // (k.num_envs * k.num_steps)
  c.log_every = 1 if tiny else 5
  c.eval_every = 4 if tiny else 10
  c.ckpt_every = 2 if tiny else 50
  c.optax_name = 'adam'
  c.lr = lr
  c.schedule = 'constant'
  c.optimizers = {phase: dict(lr=lr) for phase in phases}
  return c


def encoder_fine_tuning(c: ml_collections.ConfigDict, *, dataset: str, init: str, src: str,
                        source: str, source_spec: str, init_paths: dict) -> None:
  """Sets `c` up to fine-tune an encoder head on an offline pydoc dataset (train/test
  splits): 200 steps of AdamW (lr 3e-4 after 20 warm-up steps, weight decay 0.01, clipped
  at 1), the encoder started (`init=source`, e.g. 'bert') from the run `source_spec`,
  trained first into WORKDIR/frozen_<source> when `src` is empty (`init_paths`: the
  init_from path pairs), or from scratch (`init='scratch'`)."""
  if init not in (source, 'scratch'):
    raise UserError(f"init={init!r}; valid: {source!r}, 'scratch'")
  if init == source:
    c.frozen[source] = dict(spec=source_spec, workdir=src)
    c.init_from.frozen = source
    c.init_from.update(init_paths)
  c.data.name = dataset
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.total_steps = 200
  c.log_every = 50
  c.eval_every = 100
  c.ckpt_every = 200
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.01)
  c.lr = 3e-4
  c.warmup_steps = 20
  c.grad_clip_norm = 1.0
