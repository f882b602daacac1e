"""GoogLeNet / Inception v1 (Szegedy et al. 2014) on ImageNet at 224x224, torchvision's
layout (BatchNorm after every conv, the "5x5" branch as 3x3): 6,624,904 parameters.

  python -m train.summary --config configs/googlenet_imagenet.py      # total_params=6624904
  python -m train --config configs/googlenet_imagenet.py --workdir runs/googlenet

`aux` adds the two auxiliary classifiers (13,004,888 parameters, as torchvision's
`aux_logits=True`). In training the model sows their logits into the 'aux_logits'
collection and the classification objective adds each one's cross-entropy at weight 0.3,
the paper's (`task_kwargs.aux_weight`), reported as `loss_aux1_logits` and
`loss_aux2_logits` beside `main_loss`; eval reads the main classifier alone.

Needs `imagenet2012` prepared as ArrayRecord in `data.data_dir` (it does not ship
offline); not trained here. Recipe: SGD with momentum 0.9 as in the paper, lr 0.1 at
global batch 256 (the network has BatchNorm), 90 epochs, cosine decay in place of the
paper's 4%-every-8-epochs steps; weight decay 1e-4 (`weight_decay`).
"""

from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, aux=False)
  c = config_lib.base()
  recipes.imagenet(c, size=224, batch_size=256, epochs=90)
  c.weight_decay = 1e-4
  c.model_name = 'vision.googlenet'
  c.model = dict(num_classes=1000, aux_logits=a.aux)

  c.optax_name = 'sgd'
  c.optax = dict(momentum=0.9)
  c.lr = 0.1
  c.schedule = 'cosine'
  c.warmup_steps = 2500
  return c
