"""DenseNet-BC (Huang et al. 2017) on 8x8 digits resized to 32x32: the tiny variant (four
dense blocks of 2 layers, growth rate 12 and 24 stem channels as the paper's CIFAR
DenseNet-BC, bn_size 4, transitions halving the channels, the paper's CIFAR stem: one
3x3/1 conv, no pooling).

  python -m train --config configs/densenet_digits.py --workdir runs/densenet_digits

Arguments: `variant=tiny|121|161|169|201` (a published depth with the same small-input
stem and 10 classes; only `tiny` was measured here), `tiny` (an even smaller net for tests).

Measured on a 2-core x86-64 CPU (2026-11, 1 device, jit), shared with other jobs (load
average about 7): 250 steps of batch 64 in 186 s wall (about 1.6 steps/s), final test
accuracy 0.9972 (359/360); 58,786 parameters.
"""

from arch.vision import densenet
from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='tiny', tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=32, shift=2)
  c.model_name = 'vision.densenet'
  if a.tiny:
    model = dict(densenet.TINY, block_config=(1, 1), growth_rate=4, num_init_features=8)
  elif a.variant == 'tiny':
    model = dict(densenet.TINY)
  elif a.variant in densenet.VARIANTS:
    model = dict(densenet.VARIANTS[a.variant], small_input=True)
  else:
    raise UserError(f'unknown variant {a.variant!r}; valid: tiny, '
                    f'{", ".join(densenet.VARIANTS)}')
  c.model = dict(model, num_classes=10)

  c.total_steps = 250
  c.log_every = 50
  c.eval_every = 250
  c.ckpt_every = 250
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=5e-4)
  c.lr = 3e-3
  c.warmup_steps = 50
  return c
