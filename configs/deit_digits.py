"""DeiT (Touvron et al. 2021): the digits ViT of configs/vit_digits.py with a distillation
token and head, trained by hard distillation from a CNN teacher, the tiny ResNet of
configs/resnet_digits.py (arch/vision/distillation.py).

  python -m train --config configs/deit_digits.py --workdir runs/deit_digits

The teacher is a frozen run (`config.frozen.teacher`): by default WORKDIR/frozen_teacher,
trained there first (about 3 minutes) when it holds no checkpoint; point
`--config.frozen.teacher.workdir` at an existing resnet_digits run to reuse it.

Arguments: `distillation=hard|soft|none` (none: the same student trained on labels
only, the baseline), `tiny` (small nets for tests).

Measured on the 2-core CPU (2026-11, 1 device, jit) while other jobs shared it (load
average about 7), each from a fresh workdir:
  hard: the teacher (400 steps, test accuracy 0.9972) then 1,500 student steps, 16.2 min
        wall in all; student test accuracy 0.9917, agreeing with the teacher on 0.9917
        (0.9722 at step 1,000);
  none: 1,500 steps, about 13 min; test accuracy 0.9917 (0.9889 at step 1,000).
So on digits distillation brings no gain: the teacher is near perfect and the student
already fits the labels. 140,756 parameters (and the frozen teacher's 309,978 values).
"""

from arch.vision import vit
from configs import recipes
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, distillation='hard', tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=32, shift=2)
  # the recipe's label_smoothing is classification's; distillation has none
  if 'label_smoothing' in c.task_kwargs:
    del c.task_kwargs['label_smoothing']
  c.task = 'vision.distillation'
  c.task_kwargs.distillation = a.distillation
  c.task_kwargs.alpha = 0.1
  c.task_kwargs.tau = 3.0
  c.model_name = 'vision.vit'
  model = dict(vit.TINY, depth=1, embed_dim=16, num_heads=2, mlp_dim=32) if a.tiny else vit.TINY
  c.model = dict(model, distilled=True, num_classes=10)
  if a.distillation != 'none':
    c.frozen.teacher = dict(spec='configs/resnet_digits.py' + (':tiny' if a.tiny else ''),
                            workdir='')
  c.total_steps = 1500
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.05)
  c.lr = 1e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  return c
