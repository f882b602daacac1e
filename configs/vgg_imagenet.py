"""VGG (Simonyan & Zisserman 2014) on ImageNet at 224x224, torchvision's layout.

  python -m train.summary --config configs/vgg_imagenet.py:variant=16_bn
  python -m train --config configs/vgg_imagenet.py:variant=16 --workdir runs/vgg16

Variants (total_params, equal to torchvision's): `11` 132,863,336; `11_bn` 132,868,840;
`13` 133,047,848; `13_bn` 133,053,736; `16` (default) 138,357,544; `16_bn` 138,365,992;
`19` 143,667,240; `19_bn` 143,678,248.

Needs `imagenet2012` prepared as ArrayRecord in `data.data_dir` (it does not ship
offline); not trained here. Recipe: torchvision's reference for AlexNet and VGG (SGD with
momentum 0.9, lr 0.01, global batch 256, 90 epochs), with cosine decay in place of its
step decay. Its weight decay (1e-4; the paper's 5e-4) is missing: `optax.sgd` takes none
and the loop has no weight-decay field yet.
"""

from arch.vision import vgg
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='16')
  if a.variant not in vgg.VARIANTS:
    raise UserError(f'unknown VGG variant {a.variant!r}; valid: {", ".join(vgg.VARIANTS)}')
  c = config_lib.base()
  c.task = 'vision.classification'
  c.task_kwargs = dict(input_size=(224, 224), channels=3, num_classes=1000)
  c.model_name = 'vision.vgg'
  c.model = dict(vgg.VARIANTS[a.variant], num_classes=1000)  # convs per stage (A/B/D/E), norm
  c.data.name = 'imagenet2012'
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'

  c.batch_size = 256
  c.total_steps = 90 * 1_281_167 // 256   # 90 epochs
  c.log_every = 500
  c.eval_every = 5000
  c.ckpt_every = 5000
  c.optax_name = 'sgd'
  c.optax = dict(momentum=0.9)
  c.lr = 0.01
  c.schedule = 'cosine'
  return c
