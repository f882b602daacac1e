"""DeiT (Touvron et al. 2021): distilled ViT-Ti/S/B on ImageNet-1k at 224x224, hard
distillation from a frozen CNN teacher (the paper's RegNetY-16GF; here any run of this
codebase, by default configs/resnet_imagenet.py:variant=50, trained first in
WORKDIR/frozen_teacher when that holds no checkpoint).

  python -m train.summary --config configs/deit_imagenet.py:variant=B
  python -m train --config configs/deit_imagenet.py:variant=B --workdir runs/deit_b \\
      --config.frozen.teacher.workdir=runs/resnet50

Arguments: `variant=Ti|S|B` (default B), `distillation=hard|soft|none`. `train.summary`
prints timm's counts for deit_{tiny,small,base}_distilled_patch16_224: 5,910,800 /
22,436,432 / 87,338,192. Recipe as configs/vit_imagenet.py (the paper's, without its
RandAugment/Mixup/CutMix/repeated augmentation). Not trained here: it needs
`imagenet2012` prepared in `data.data_dir`, and no measurement was made.
"""

from arch.vision import vit
from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='B', distillation='hard')
  if a.variant not in vit.DEIT_VARIANTS:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(vit.DEIT_VARIANTS)}')
  c = config_lib.base()
  recipes.transformer_imagenet(c, epochs=300, batch_size=1024, lr=5e-4 * 1024 / 512,
                                  warmup_epochs=5, label_smoothing=0.0)
  c.task = 'vision.distillation'
  c.task_kwargs.update(distillation=a.distillation, alpha=0.1, tau=3.0)
  # the recipe's label_smoothing is classification's; distillation has none
  if 'label_smoothing' in c.task_kwargs:
    del c.task_kwargs['label_smoothing']
  c.model_name = 'vision.vit'
  c.model = dict(vit.DEIT_VARIANTS[a.variant], num_classes=1000)
  if a.distillation != 'none':
    c.frozen.teacher = dict(spec='configs/resnet_imagenet.py:variant=50', workdir='')
  c.grad_clip_norm = 1.0
  return c
