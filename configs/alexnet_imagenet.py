"""AlexNet (Krizhevsky et al. 2012) on ImageNet at 224x224, torchvision's single-tower
layout: 61,100,840 parameters.

  python -m train.summary --config configs/alexnet_imagenet.py    # total_params=61100840
  python -m train --config configs/alexnet_imagenet.py --workdir runs/alexnet_imagenet

Needs `imagenet2012` prepared as ArrayRecord in `data.data_dir` (it does not ship
offline); not trained here. Recipe: torchvision's reference for AlexNet and VGG (SGD with
momentum 0.9, lr 0.01, global batch 256, 90 epochs), with cosine decay in place of its
step decay, and torchvision's weight decay 1e-4 (`weight_decay`; the paper used 5e-4).
"""

from configs import recipes
from train import config_lib


def get_config(arg=None):
  config_lib.parse_arg(arg)
  c = config_lib.base()
  recipes.imagenet(c, size=224, batch_size=256, epochs=90)
  c.weight_decay = 1e-4
  c.model_name = 'vision.alexnet'
  c.model = dict(num_classes=1000)

  c.optax_name = 'sgd'
  c.optax = dict(momentum=0.9)
  c.lr = 0.01
  c.schedule = 'cosine'
  return c
