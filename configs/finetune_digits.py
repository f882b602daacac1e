"""Fine-tuning from a run (`config.init_from`): the tiny ResNet classifier (the network of
configs/resnet_digits.py at 16x16) trained on only `labels` labelled digits (the first ones
of the train split), its backbone either MoCo v2's (configs/moco_digits.py, which saw the
train images without labels) or random; test accuracy on the 360 test digits.

  python -m train --config configs/moco_digits.py --workdir runs/moco_digits
  python -m train --config configs/finetune_digits.py --workdir runs/ft_moco \\
      --config.init_from.workdir=runs/moco_digits
  python -m train --config configs/finetune_digits.py --workdir runs/ft_scratch

`init_from.source` is 'backbone' (MoCo's query encoder; its projection head and the
momentum encoder stay behind) and the classifier's head keeps its initialisation.
Arguments: `labels` (default 50; 0 = the whole train split), `tiny` (tests).
"""

from arch.vision import resnet
from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, labels=50, tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=16, shift=1)
  c.data.train_split = f'train[:{a.labels}]' if a.labels else 'train'
  c.model_name = 'vision.resnet'
  model = dict(resnet.TINY, stage_sizes=(1, 1), widths=(4, 8), stem_features=4) if a.tiny \
      else dict(resnet.TINY)
  c.model = dict(model, num_classes=10)
  c.init_from.source = 'backbone'
  c.batch_size = 8 if a.tiny else 50
  c.total_steps = 300
  c.log_every = 50
  c.eval_every = 100
  c.ckpt_every = 300
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=5e-4)
  c.lr = 1e-3
  c.warmup_steps = 30
  return c
