"""DenseNet-121/161/169/201 (Huang et al. 2017) on ImageNet-1k at 224x224, torchvision's
layout (DenseNet-BC: bottleneck layers, transitions halving the channels).

  python -m train.summary --config configs/densenet_imagenet.py:variant=121
  python -m train --config configs/densenet_imagenet.py:variant=121 --workdir runs/densenet121

Arguments: `variant=121|161|169|201` (default 121). `train.summary` prints torchvision's
parameter counts exactly: 7,978,856 / 28,681,000 / 14,149,480 / 20,013,928.
Hyper-parameters follow the paper's ImageNet recipe (batch 256, SGD with Nesterov
momentum 0.9, lr 0.1, 90 epochs) with a cosine schedule in place of its step decay; weight
decay 1e-4 (`weight_decay`). Not trained here: it needs
`imagenet2012` prepared in `data.data_dir`, and no measurement was made.
"""

from arch.vision import densenet
from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='121')
  if a.variant not in densenet.VARIANTS:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(densenet.VARIANTS)}')
  c = config_lib.base()
  recipes.imagenet(c, size=224, batch_size=256, epochs=90)
  c.weight_decay = 1e-4
  c.model_name = 'vision.densenet'
  c.model = dict(densenet.VARIANTS[a.variant], num_classes=1000)

  c.optax_name = 'sgd'
  c.optax = dict(momentum=0.9, nesterov=True)
  c.lr = 0.1                     # for batch 256 (scale linearly with the batch)
  c.schedule = 'cosine'
  return c
