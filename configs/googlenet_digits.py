"""GoogLeNet / Inception v1 (Szegedy et al. 2014; torchvision's layout) at a quarter of
every width, on 8x8 digits resized to 48x48.

  python -m train --config configs/googlenet_digits.py --workdir runs/googlenet_digits

All nine inception blocks, the stem and the ceil-mode max pools as published (the maps
are 24, 12, 6, 3, 2 pixels wide after conv1 and the four pools at 48x48); stem 16, 16,
48 channels, block widths a quarter of torchvision's (at least 4), no auxiliary heads.
`tiny` for tests.

Measured on a 2-core x86-64 CPU (2026-11, 1 device, jit), shared with other jobs (load
average about 9): 300 steps of batch 64 in 266 s wall (about 2.75 steps/s; the rest is
start-up, compilation and evaluation), final test accuracy 0.9833 (354/360). At 32x32 input
(the maps 16, 8, 4, 2, 1 wide), 500 steps reached only 0.9694 in 228 s.
"""

from arch.vision import googlenet
from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=48, shift=3)
  c.model_name = 'vision.googlenet'
  c.model = dict(googlenet.TINY if a.tiny else googlenet.SMALL, num_classes=10)

  c.total_steps = 300
  c.log_every = 100
  c.eval_every = 300
  c.ckpt_every = 300
  c.optax_name = 'adam'
  c.lr = 2e-3
  c.warmup_steps = 50
  return c
