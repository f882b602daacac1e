"""CaiT (Touvron et al. 2021) on 8x8 digits resized to 32x32: patches of 4 (64 tokens),
width 64, four talking-heads self-attention blocks and two class-attention blocks (4
heads, MLP 128), LayerScale 0.1 (the paper's value for shallow nets).

  python -m train --config configs/cait_digits.py --workdir runs/cait_digits

Arguments: `tiny` (an even smaller net, for tests).

Measured on a 2-core x86-64 CPU shared with other jobs (2026-11, 1 device, jit, load
average about 7): 600 steps of batch 64 in 328 s wall (about 2 steps/s), final test
accuracy 0.9889 (356/360); 207,786 parameters.
"""

from arch.vision import cait
from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=32, shift=2)
  c.model_name = 'vision.cait'
  model = dict(cait.TINY)
  if a.tiny:
    model.update(embed_dim=16, depth=1, num_heads=2, mlp_dim=32, class_depth=1)
  c.model = dict(model, num_classes=10)

  c.total_steps = 600
  c.log_every = 100
  c.eval_every = 300
  c.ckpt_every = 600
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.05)
  c.lr = 2e-3
  c.warmup_steps = 50
  return c
