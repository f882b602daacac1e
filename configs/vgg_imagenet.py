"""VGG (Simonyan & Zisserman 2014) on ImageNet at 224x224, torchvision's layout.

  python -m train.summary --config configs/vgg_imagenet.py:variant=16_bn
  python -m train --config configs/vgg_imagenet.py:variant=16 --workdir runs/vgg16

Variants (total_params, equal to torchvision's): `11` 132,863,336; `11_bn` 132,868,840;
`13` 133,047,848; `13_bn` 133,053,736; `16` (default) 138,357,544; `16_bn` 138,365,992;
`19` 143,667,240; `19_bn` 143,678,248.

Needs `imagenet2012` prepared as ArrayRecord in `data.data_dir` (it does not ship
offline); not trained here. Recipe: torchvision's reference for AlexNet and VGG (SGD with
momentum 0.9, lr 0.01, global batch 256, 90 epochs), with cosine decay in place of its
step decay, and torchvision's weight decay 1e-4 (`weight_decay`; the paper used 5e-4).
"""

from arch.vision import vgg
from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='16')
  if a.variant not in vgg.VARIANTS:
    raise UserError(f'unknown VGG variant {a.variant!r}; valid: {", ".join(vgg.VARIANTS)}')
  c = config_lib.base()
  recipes.imagenet(c, size=224, batch_size=256, epochs=90)
  c.weight_decay = 1e-4
  c.model_name = 'vision.vgg'
  c.model = dict(vgg.VARIANTS[a.variant], num_classes=1000)  # convs per stage (A/B/D/E), norm

  c.optax_name = 'sgd'
  c.optax = dict(momentum=0.9)
  c.lr = 0.01
  c.schedule = 'cosine'
  return c
