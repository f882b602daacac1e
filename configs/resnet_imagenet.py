"""ResNet-18/34/50/101/152 (He et al. 2015) on ImageNet-1k at 224x224, torchvision's layout
(v1.5: Bottleneck strides on its 3x3 conv).

  python -m train.summary --config configs/resnet_imagenet.py:variant=50
  python -m train --config configs/resnet_imagenet.py:variant=50 --workdir runs/resnet50

Arguments: `variant=18|34|50|101|152` (default 50). `train.summary` prints torchvision's
parameter counts exactly: 11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 /
60,192,808. Hyper-parameters follow torchvision's classic recipe (batch 256, SGD momentum
0.9, lr 0.1, 90 epochs) with a cosine schedule in place of its step decay; its weight
decay 1e-4 is not applied (`optax.sgd` takes none). Not trained here: it needs
`imagenet2012` prepared in `data.data_dir`, and no measurement was made.
"""

from arch.vision import resnet
from train import config_lib
from train.errors import UserError

IMAGENET_TRAIN_EXAMPLES = 1_281_167


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='50')
  if a.variant not in resnet.VARIANTS:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(resnet.VARIANTS)}')
  c = config_lib.base()
  c.task = 'vision.classification'
  c.task_kwargs = dict(input_size=(224, 224), channels=3, num_classes=1000)
  c.model_name = 'vision.resnet'
  c.model = dict(resnet.VARIANTS[a.variant], num_classes=1000)
  c.data.name = 'imagenet2012'
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'

  c.batch_size = 256
  steps_per_epoch = IMAGENET_TRAIN_EXAMPLES // c.batch_size
  c.total_steps = 90 * steps_per_epoch
  c.log_every = 100
  c.eval_every = steps_per_epoch
  c.ckpt_every = steps_per_epoch
  c.optax_name = 'sgd'
  c.optax = dict(momentum=0.9, nesterov=False)
  c.lr = 0.1                     # for batch 256 (scale linearly with the batch)
  c.schedule = 'cosine'
  return c
