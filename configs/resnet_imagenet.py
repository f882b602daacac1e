"""ResNet-18/34/50/101/152 (He et al. 2015) on ImageNet-1k at 224x224, torchvision's layout
(v1.5: Bottleneck strides on its 3x3 conv).

  python -m train.summary --config configs/resnet_imagenet.py:variant=50
  python -m train --config configs/resnet_imagenet.py:variant=50 --workdir runs/resnet50

Arguments: `variant=18|34|50|101|152` (default 50). `train.summary` prints torchvision's
parameter counts exactly: 11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 /
60,192,808. Hyper-parameters follow torchvision's classic recipe (batch 256, SGD momentum
0.9, lr 0.1, 90 epochs) with a cosine schedule in place of its step decay; weight decay
1e-4 (`weight_decay`). Not trained here: it needs
`imagenet2012` prepared in `data.data_dir`, and no measurement was made.
"""

from arch.vision import resnet
from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='50')
  if a.variant not in resnet.VARIANTS:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(resnet.VARIANTS)}')
  c = config_lib.base()
  recipes.imagenet(c, size=224, batch_size=256, epochs=90)
  c.weight_decay = 1e-4
  c.model_name = 'vision.resnet'
  c.model = dict(resnet.VARIANTS[a.variant], num_classes=1000)

  c.optax_name = 'sgd'
  c.optax = dict(momentum=0.9, nesterov=False)
  c.lr = 0.1                     # for batch 256 (scale linearly with the batch)
  c.schedule = 'cosine'
  return c
