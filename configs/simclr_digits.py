"""SimCLR (Chen et al. 2020) on the offline digits, labels unused: the tiny CIFAR-style
ResNet (arch/vision/resnet.py TINY) on 16x16 inputs, two views per image (random resized
crop, brightness/contrast jitter, noise; no flips: digits have a handedness), projection
head 128 -> 128 -> 64, NT-Xent at temperature 0.2, batch 128 (254 negatives per view).
Eval: a linear probe and weighted 20-NN on the frozen backbone features (train -> test).

  python -m train --config configs/simclr_digits.py --workdir runs/simclr_digits

Arguments: `variant=resnet50` (the paper's ResNet-50 with its 2048-2048-128 head, at
224x224 on ImageNet: `train.summary` prints 27,966,656 = torchvision's resnet50 trunk
23,508,032 + head 4,458,624), `tiny` (tests).

Measured on the 2-core CPU (2026-11, 1 device, jit) while other jobs shared it (load
average about 8): 1,000 steps in 19.9 min wall, test linear-probe accuracy 0.9861, k-NN
0.9833 (0.9917 / 0.9833 at step 500); 332,016 parameters.
Baselines on the same split: the randomly initialised backbone probes at 0.9694 (linear) /
0.9528 (k-NN); raw 16x16 pixels at 0.9611 / 0.9861. Digits are easy for a probe; the gain
over the untrained network is the measure here.
"""

from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='tiny', tiny=False)
  c = config_lib.base()
  recipes.selfsup_digits(c, 'multimodal.simclr')
  c.task_kwargs.update(temperature=0.2, proj_hidden=128, proj_dim=64)
  recipes.selfsup_variant(c, a.variant, a.tiny)
  c.total_steps = 1000
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=1e-4)
  c.lr = 2e-3
  c.warmup_steps = 50
  return c
