"""ResNet (He et al. 2015) on 8x8 digits resized to 32x32: the tiny variant (BasicBlock,
one block per stage, widths 16/32/64/128, the CIFAR-style 3x3/1 stem without max pool,
zero-initialised last BN of each block).

  python -m train --config configs/resnet_digits.py --workdir runs/resnet_digits

Arguments: `variant=tiny|18|34|50|101|152` (a published depth with the same small-input
stem and 10 classes; only `tiny` was measured here), `tiny` (an even smaller net for tests).

Measured on a 2-core x86-64 CPU (2026-11, 1 device, jit), shared with other jobs (load
average about 8): 400 steps of batch 64 in 195 s wall (about 2.5 steps/s), final test
accuracy 0.9972 (359/360); 308,538 parameters.
"""

from arch.vision import resnet
from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='tiny', tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=32, shift=2)
  c.model_name = 'vision.resnet'
  if a.tiny:
    model = dict(resnet.TINY, stage_sizes=(1, 1), widths=(4, 8), stem_features=4)
  elif a.variant == 'tiny':
    model = dict(resnet.TINY)
  elif a.variant in resnet.VARIANTS:
    model = dict(resnet.VARIANTS[a.variant], small_input=True)
  else:
    raise UserError(f'unknown variant {a.variant!r}; valid: tiny, '
                               f'{", ".join(resnet.VARIANTS)}')
  c.model = dict(model, num_classes=10, zero_init_residual=True)

  c.total_steps = 400
  c.log_every = 100
  c.eval_every = 200
  c.ckpt_every = 400
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=5e-4)
  c.lr = 3e-3
  c.warmup_steps = 50
  return c
