"""Swin Transformer (Liu et al. 2021) on the offline 8x8 digits, resized to 16x16: 2x2
patches (an 8x8 map), 4x4 windows shifted by 2 in every second block, two stages of two
blocks (widths 32 and 64, 2 and 4 heads; the second stage's 4x4 map is one window, so it is
never shifted), stochastic depth 0.1, AdamW with weight decay 0.05, random +-1 px
translations; 135,414 parameters.

  python -m train --config configs/swin_digits.py --workdir runs/swin_digits

Arguments: `size` (the input the network sees, default 16: the 8x8 digits hold no more
detail), `tiny` (one stage of two blocks, width 8, for tests).

Measured on a 2-core x86-64 CPU shared with other jobs (2026-11, 1 device, jit, load
average about 8): 2000 steps of batch 64 in 308 s wall (about 7-9 steps/s), final test
accuracy 0.9889 (356/360; 0.9639 at step 1000). At size=32 (a 16x16 map, 2 steps/s under
load 10) 1000 steps of lr 1e-3 reached 0.9111 in 592 s.
"""

from arch.vision import swin
from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, size=16, tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=a.size, shift=a.size // 16)
  c.model_name = 'vision.swin'
  # tiny: one stage, a plain and a shifted block (each block adds ~10 s of XLA-CPU compile)
  model = dict(swin.TINY, embed_dim=8, depths=(2,), num_heads=(1,)) if a.tiny else swin.TINY
  c.model = dict(model, num_classes=10)
  c.total_steps = 2000
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 1000
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.05)
  c.lr = 2e-3
  c.warmup_steps = 100
  # No gradient clipping: blank patches embed to the conv bias alone (zero at init), and the
  # patch LayerNorm of that near-constant vector gives its bias gradients of norm ~1e5 that
  # would clip every other gradient to nothing; AdamW's per-parameter scaling is unharmed.
  return c
