"""CaiT-XXS24 / S24 (Touvron et al. 2021, "Going deeper with image transformers") on
ImageNet-1k at 224x224, timm's layout (cait_xxs24_224, cait_s24_224).

  python -m train.summary --config configs/cait_imagenet.py:variant=XXS24
  python -m train --config configs/cait_imagenet.py:variant=S24 --workdir runs/cait_s24

Arguments: `variant=XXS24|S24` (default XXS24). `train.summary` prints timm's parameter
counts exactly: 11,956,264 / 46,916,200. The recipe is the paper's (DeiT's, longer):
AdamW at 1e-3 for batch 1024, weight decay 0.05, 400 epochs with 5 warmup epochs and a
cosine decay, label smoothing 0.1, LayerScale 1e-5, stochastic depth 0.05 (XXS24) / 0.1
(S24); without the paper's RandAugment, Mixup/CutMix, repeated augmentation and
distillation, which the loop does not do. Not trained here: it needs `imagenet2012`
prepared in `data.data_dir`, and no measurement was made.
"""

from arch.vision import cait
from configs import recipes
from train import config_lib
from train.errors import UserError

STOCHASTIC_DEPTH = {'XXS24': 0.05, 'S24': 0.1}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='XXS24')
  if a.variant not in cait.VARIANTS:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(cait.VARIANTS)}')
  c = config_lib.base()
  epoch = recipes.transformer_imagenet(c, epochs=400, batch_size=1024, lr=5e-4 * 1024 / 512,
                                          warmup_epochs=5)
  c.model_name = 'vision.cait'
  c.model = dict(cait.VARIANTS[a.variant], num_classes=1000,
                 stochastic_depth=STOCHASTIC_DEPTH[a.variant])
  c.eval_every = 5 * epoch
  return c
