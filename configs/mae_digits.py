"""Masked autoencoder (He et al. 2022) on the offline digits, labels unused: 16x16 inputs in
2x2 patches (64), 75% of them masked per image; a ViT encoder (width 64, 4 layers, 4
heads) and a 2-layer, 32-wide decoder predicting the masked patches' normalised pixels.
Eval: linear probe and weighted 20-NN on the unmasked encoder's mean patch token
(train -> test).

  python -m train --config configs/mae_digits.py --workdir runs/mae_digits

Arguments: `variant=B/16|L/16|H/14` (the paper's encoders with the 8 x 512 decoder at
224x224 on ImageNet; `train.summary` for B/16 prints Hugging Face ViTMAEForPreTraining's
trainable count 111,655,680 — see arch/multimodal/mae.py for the frozen position tables),
`tiny` (tests).

Measured on the 2-core CPU (2026-11, 1 device, jit) while other jobs shared it (load
average about 8): 1,500 steps of batch 128 in 13.2 min wall, test linear-probe accuracy
0.975, k-NN 0.975 (0.9639 / 0.95 at step 500); 153,796 parameters. The untrained encoder
gives 0.9611 / 0.7528, raw 16x16 pixels 0.9611 / 0.9861.
"""

from arch.multimodal import mae
from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='tiny', tiny=False)
  c = config_lib.base()
  recipes.selfsup_digits(c, 'multimodal.mae')
  c.task_kwargs.augment = {}
  c.task_kwargs.norm_pix_loss = True
  c.model_name = 'multimodal.mae'
  if a.tiny:
    c.model = dict(mae.TINY, depth=1, embed_dim=16, mlp_dim=32, decoder_depth=1,
                   decoder_dim=16, decoder_mlp_dim=32, pool='mean')
    c.batch_size = 8
  elif a.variant == 'tiny':
    c.model = dict(mae.TINY, pool='mean')
  elif a.variant in mae.VARIANTS:
    recipes.imagenet(c, size=224, batch_size=4096, epochs=800)
    c.task = 'multimodal.mae'
    c.task_kwargs = dict(input_size=(224, 224), channels=3, host_size=224,
                         norm_pix_loss=True, augment=dict(crop_scale=(0.2, 1.0), flip=True,
                                                          jitter=0.0, noise=0.0))
    c.model = dict(mae.VARIANTS[a.variant], image_size=224, channels=3)
  else:
    raise UserError(f'unknown variant {a.variant!r}; valid: tiny, {", ".join(mae.VARIANTS)}')
  c.total_steps = 1500
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.95, weight_decay=0.05)
  c.lr = 1.5e-3
  c.warmup_steps = 100
  return c
