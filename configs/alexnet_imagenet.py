"""AlexNet (Krizhevsky et al. 2012) on ImageNet at 224x224, torchvision's single-tower
layout: 61,100,840 parameters.

  python -m train.summary --config configs/alexnet_imagenet.py    # total_params=61100840
  python -m train --config configs/alexnet_imagenet.py --workdir runs/alexnet_imagenet

Needs `imagenet2012` prepared as ArrayRecord in `data.data_dir` (it does not ship
offline); not trained here. Recipe: torchvision's reference for AlexNet and VGG (SGD with
momentum 0.9, lr 0.01, global batch 256, 90 epochs), with cosine decay in place of its
step decay. Its weight decay (1e-4; the paper's 5e-4) is missing: `optax.sgd` takes none
and the loop has no weight-decay field yet.
"""

from train import config_lib


def get_config(arg=None):
  config_lib.parse_arg(arg)
  c = config_lib.base()
  c.task = 'vision.classification'
  c.task_kwargs = dict(input_size=(224, 224), channels=3, num_classes=1000)
  c.model_name = 'vision.alexnet'
  c.model = dict(num_classes=1000)
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
