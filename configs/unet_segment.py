"""U-Net (Ronneberger et al. 2015) segmenting procedural shapes (train/datasets/shapes.py:
48x48 RGB, 4 classes: background, ellipse, rectangle, triangle).

  python -m train --config configs/unet_segment.py --workdir runs/unet_segment

Arguments: `variant=small` (default: features 16, depth 3, SAME padding so 48x48 maps keep
their size, BatchNorm) or `variant=paper` (the published network: features 64, depth 4,
unpadded convs, 572x572 tiles -> 388x388, 2 classes, 31,030,658 parameters; for
`train.summary` or real data); `tiny` for tests.

Measured on a 2-core x86-64 CPU (2026-11, 1 device), `variant=small`: 2,000 steps of
batch 32, eval on the 500 test images: miou 0.902 (IoU background 0.991, ellipse 0.881,
rectangle 0.902, triangle 0.835), pixel accuracy 0.984; miou 0.898 at step 1,000. It took
32 min wall at about 1 step/s, but the two cores were shared with four other training
jobs for the whole run (load average 8-10), so alone it runs several times faster.
"""

from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='small', tiny=False)
  c = config_lib.base()
  c.task = 'vision.segmentation'
  c.model_name = 'vision.unet'
  if a.variant == 'paper':
    c.task_kwargs = dict(input_size=(572, 572), channels=1, num_classes=2)
    c.model = dict(features=64, depth=4, padding='VALID', num_classes=2, dropout=0.5)
  elif a.variant == 'small':
    c.task_kwargs = dict(input_size=(48, 48), channels=3, num_classes=4)
    c.model = dict(features=4 if a.tiny else 16, depth=2 if a.tiny else 3, padding='SAME',
                   norm=True, num_classes=4)
  else:
    raise ValueError(f"variant must be 'small' or 'paper', got {a.variant!r}")
  c.data.name = 'shapes'
  c.data.eval_split = 'test'

  c.total_steps = 2000
  c.batch_size = 32
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adam'
  c.lr = 3e-3
  c.schedule = 'cosine'
  c.warmup_steps = 50
  return c
