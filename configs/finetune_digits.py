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

Measured on the 2-core CPU (2026-12-06, 1 device, jit, while other jobs shared it: load
4-7), fresh workdirs; the MoCo run is configs/moco_digits.py's default (1,000 steps,
11.7 min wall at nice 19 under that load; its probes 0.9861 / 0.9861 as documented there).
Test accuracy after 300 steps of batch 50 (about 35 s each; both arms plateau by step 100):

  lr      from MoCo   from scratch
  1e-3    0.8167      0.7917        (this config's default)
  3e-4    0.8250      0.7778        (--config.lr=3e-4)

Pretraining without labels is worth 2.5 to 4.7 points (9 to 17 of the 360 test digits)
with 50 labels. Full fine-tuning of every layer on 50 examples overfits (train accuracy 1.0
by step 100); the MoCo backbone's linear probe, fitted on all 1,437 labelled train digits,
reaches 0.9861.
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
