"""Vision Transformer (Dosovitskiy et al. 2021) on ImageNet-1k at 224x224.

  python -m train.summary --config configs/vit_imagenet.py:variant=B/16
  python -m train --config configs/vit_imagenet.py:variant=B/16 --workdir runs/vit_b16

Arguments: `variant=Ti/16|Ti/32|S/16|S/32|B/16|B/32|L/16|L/32|H/14` (default B/16).
`train.summary` prints torchvision's counts for vit_b_16 86,567,656, vit_b_32 88,224,232,
vit_l_16 304,326,632, vit_l_32 306,535,400, vit_h_14 632,045,800, and timm's for
vit_tiny_patch16_224 5,717,416 and vit_small_patch16_224 22,050,664. Recipe: DeiT's
from-scratch ImageNet training (AdamW, lr 5e-4 x batch/512, weight decay 0.05, 300 epochs,
5 warm-up epochs, cosine, label smoothing 0.1, stochastic depth 0.1) without its
RandAugment/Mixup/CutMix/repeated augmentation. Not trained here: it needs
`imagenet2012` prepared in `data.data_dir`, and no measurement was made.
"""

from arch.vision import vit
from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='B/16')
  if a.variant not in vit.VARIANTS:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(vit.VARIANTS)}')
  c = config_lib.base()
  recipes.transformer_imagenet(c, epochs=300, batch_size=1024, lr=5e-4 * 1024 / 512,
                                  warmup_epochs=5)
  c.model_name = 'vision.vit'
  c.model = dict(vit.VARIANTS[a.variant], num_classes=1000, stochastic_depth=0.1)
  c.grad_clip_norm = 1.0
  return c
