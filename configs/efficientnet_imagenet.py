"""EfficientNet B0-B7 (Tan & Le 2019) on ImageNet-2012, each at its published resolution.

  python -m train --config configs/efficientnet_imagenet.py:variant=b0 --workdir runs/effnet_b0
  python -m train.summary --config configs/efficientnet_imagenet.py:variant=b7

Arguments: `variant=b0|b1|...|b7` (resolution 224, 240, 260, 300, 380, 456, 528, 600).
Parameter counts equal torchvision's efficientnet_b0..b7 (b0 5,288,548; b7 66,347,960).
The recipe follows the paper: RMSProp (decay 0.9, momentum 0.9, eps 1e-3 inside the root,
mean square starting at 1 as in TF1), 0.256 at batch 4096, 350 epochs, 5 warmup epochs,
label smoothing 0.1, EMA 0.9999, stochastic depth 0.2, the variant's dropout. Differences:
a cosine decay instead of the paper's x0.97 every 2.4 epochs, no AutoAugment; weight
decay 1e-5 as in the paper (`weight_decay`). Needs `imagenet2012` prepared as ArrayRecord in data_dir.
Not run here (no ImageNet, no accelerator).
"""

from arch.vision import efficientnet
from configs import recipes
from train import config_lib
from train.errors import UserError

def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='b0')
  if a.variant not in efficientnet.VARIANTS:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(efficientnet.VARIANTS)}')
  size = efficientnet.RESOLUTIONS[a.variant]
  c = config_lib.base()
  epoch = recipes.imagenet(c, size=size, batch_size=4096, epochs=350)
  c.task_kwargs.label_smoothing = 0.1
  c.model_name = 'vision.efficientnet'
  c.model = dict(efficientnet.VARIANTS[a.variant], num_classes=1000, stochastic_depth=0.2)
  c.warmup_steps = 5 * epoch
  c.eval_every = 5 * epoch
  c.weight_decay = 1e-5
  c.optax_name = 'rmsprop'
  c.optax = dict(decay=0.9, momentum=0.9, eps=1e-3, initial_scale=1.0)
  c.lr = 0.256
  c.schedule = 'cosine'
  c.ema_decay = 0.9999
  return c
