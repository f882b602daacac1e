"""MoCo v2 (He et al. 2020; Chen et al. 2020) on the offline digits, labels unused: the tiny
CIFAR-style ResNet on 16x16 inputs as the query encoder, a momentum key encoder (m 0.99),
a queue of 1024 keys, InfoNCE at temperature 0.2, MLP head 128 -> 128 -> 64, batch 128,
the views of configs/simclr_digits.py. Eval: linear probe and weighted 20-NN on the
frozen query backbone (train -> test).

  python -m train --config configs/moco_digits.py --workdir runs/moco_digits

Arguments: `variant=resnet50` (MoCo v2's ResNet-50 with the 2048-2048-128 head and the
65536-key queue; `train.summary` prints the trained params 27,966,656), `tiny` (tests).

Measured on the 2-core CPU (2026-11, 1 device, jit) while other jobs shared it (load
average about 8): 1,000 steps in 10.9 min wall, test linear-probe accuracy 0.9861, k-NN
0.9861 (0.9861 / 0.9778 at step 500); 332,016 trained parameters.
Baselines on the same split: the randomly initialised backbone probes at 0.9694 (linear) /
0.9528 (k-NN); raw 16x16 pixels at 0.9611 / 0.9861. Digits are easy for a probe; the gain
over the untrained network is the measure here.
"""

from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='tiny', tiny=False)
  c = config_lib.base()
  recipes.selfsup_digits(c, 'multimodal.moco')
  c.task_kwargs.update(temperature=0.2, momentum=0.99, queue_size=1024, proj_hidden=128,
                       proj_dim=64)
  recipes.selfsup_variant(c, a.variant, a.tiny)
  if a.variant == 'resnet50':
    c.task_kwargs.update(momentum=0.999, queue_size=65536)
  c.total_steps = 1000
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=1e-4)
  c.lr = 2e-3
  c.warmup_steps = 50
  return c
