"""T2T-ViT (Yuan et al. 2021) on 8x8 digits resized to 64x64: the paper's three soft splits
(7x7/4, 3x3/2, 3x3/2: 256, then 64, then 16 tokens) with Performer re-structurization
layers of width 16, then a ViT of width 64, depth 2, 4 heads, MLP 128.

  python -m train --config configs/t2t_digits.py --workdir runs/t2t_digits

Arguments: `tokens_type=performer|transformer`, `tiny` (an even smaller net, for tests).

Measured on a 2-core x86-64 CPU shared with other jobs (2026-11, 1 device, jit, load
average about 6): 600 steps of batch 64 in 139 s wall (about 6 steps/s), final test
accuracy 0.9889 (356/360) with the Performer layers; 88,124 parameters (and 256 fixed
random features). `tokens_type=transformer` was not measured.
"""

from arch.vision import t2t
from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tokens_type='performer', tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=64, shift=4)
  c.model_name = 'vision.t2t'
  model = dict(t2t.TINY, tokens_type=a.tokens_type)
  if a.tiny:
    model.update(embed_dim=16, depth=1, num_heads=2, mlp_dim=32, token_dim=8)
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
