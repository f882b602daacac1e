"""Vision Transformer (Dosovitskiy et al. 2021) on the offline 8x8 digits, resized to 32x32
and cut into 4x4 patches (64 tokens): the TINY ViT of arch/vision/vit.py (width 64, 4
layers, 4 heads, MLP 128, class token), AdamW with weight decay 0.05, random +-2 px
translations.

  python -m train --config configs/vit_digits.py --workdir runs/vit_digits

Arguments: `pool=cls|mean`, `tiny` (an even smaller net for tests).

Measured on the 2-core CPU (2026-11, 1 device, jit) while other jobs shared it (load
average about 8): 1,500 steps of batch 64 in 19 min wall (6.3 min of CPU time), test
accuracy 0.9917 (357/360; 0.9806 at step 1,000); 139,978 parameters.
"""

from arch.vision import vit
from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, pool='cls', tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=32, shift=2)
  c.model_name = 'vision.vit'
  model = dict(vit.TINY, depth=1, embed_dim=16, num_heads=2, mlp_dim=32) if a.tiny else vit.TINY
  c.model = dict(model, pool=a.pool, num_classes=10)
  c.total_steps = 1500
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.05)
  c.lr = 1e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  return c
