"""AlexNet (Krizhevsky et al. 2012), small-input variant, on 8x8 digits resized to 32x32.

  python -m train --config configs/alexnet_digits.py --workdir runs/alexnet_digits

The network is torchvision's AlexNet layout at a quarter of the conv widths (16, 48, 96,
64, 64) and an eighth of the Dense widths (512, 512), with `small_input=True`: conv1 is
3x3 stride 1 pad 1 instead of 11x11 stride 4, so a 32x32 image keeps 3x3 after the three
max pools (then the adaptive pool to 6x6, dropout 0.5 and the classifier as published).
`tiny` for tests.

Measured on a 2-core x86-64 CPU (2026-11, 1 device, jit), shared with other jobs (load
average about 9): 500 steps of batch 64 in 155 s wall (about 4 steps/s), final test
accuracy 0.9944 (358/360).
"""

from arch.vision import alexnet
from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=32, shift=2)
  c.model_name = 'vision.alexnet'
  c.model = dict(alexnet.TINY if a.tiny else alexnet.SMALL, num_classes=10)

  c.total_steps = 500
  c.log_every = 100
  c.eval_every = 250
  c.ckpt_every = 250
  c.optax_name = 'adam'
  c.lr = 1e-3
  c.warmup_steps = 50
  return c
