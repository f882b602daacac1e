"""C3D (Tran et al. 2015) classifying moving_digits clips (8 frames of 16x16), next to a
per-frame 2D CNN whose logits are averaged over the frames (arch/vision/c3d.py).

  python -m train --config configs/c3d_moving_digits.py --workdir runs/c3d
  python -m train --config configs/c3d_moving_digits.py:model=frames --workdir runs/frames
  python -m train --config configs/c3d_moving_digits.py:target=motion --workdir runs/c3d_motion
  python -m train.summary --config configs/c3d_moving_digits.py:variant=ucf101

Arguments: `model=c3d|frames`; `target=label|motion` (the clip's digit, 10 classes, or
the direction the digit moves between the first two frames, 9 classes, which a single
frame shows only next to a wall, where the digit bounces away); `variant=sports1m|ucf101`
(the paper's network on 16x112x112x3 clips, 79,991,015 / 78,409,573 parameters; for
train.summary); `tiny` (tests).

The CPU model: three stages of 3x3x3 convolutions (16, 32, 64 wide; pools 1x2x2, 2x2x2,
2x2x2), fc 128 with dropout 0.5; the frame baseline has the same widths as 3x3 convs
with 2x2 pools. Batch 32, 600 steps, Adam 1e-3 with cosine decay, test split (360 clips
of digits never seen in training).

Measured on the 2-core CPU (2026-12-06, 1 device, jit, fresh workdirs, shared with other
jobs: wall times are upper bounds, the CPU times steadier), test accuracy:
  target   model   steps  accuracy  wall (1-min load)      CPU user
  motion   c3d     600    0.978     13.0 min (8.4-11.0)    141 s
  motion   frames  600    0.300      3.3 min (6.3-10.2)     41 s
  label    c3d     600    0.756      4.6 min (4.2-6.3)     133 s
  label    c3d     1500   0.939      6.6 min (3.1-6.0)
  label    frames  600    0.953      0.6 min (3.7-6.0)      36 s
The most frequent motion class is 0.142 of the test clips (8 of 9 directions occur 30-51
times, 'no move' 8). The digit's identity is a question of appearance: every frame shows
it, and the per-frame network learns it faster and better (0.953 in 600 steps against
C3D's 0.939 in 1,500). The direction of motion is not in any one frame: C3D reads it at
0.978 where the frame average reaches 0.300, from where the digit sits (next to a wall it
must bounce away).
"""

from arch.vision import c3d
from train import config_lib
from train.errors import UserError

SMALL = dict(stages=((16,), (32,), (64,)), pools=((1, 2, 2), (2, 2, 2), (2, 2, 2)),
             last_pool_padding=(0, 0, 0), fc=(128,))
TINY = dict(stages=((4,), (8,)), pools=((1, 2, 2), (2, 2, 2)), last_pool_padding=(0, 0, 0),
            fc=(16,))


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model='c3d', target='label', variant='', tiny=False)
  if a.model not in ('c3d', 'frames'):
    raise UserError(f'model={a.model!r}; valid: c3d, frames')
  if a.target not in ('label', 'motion'):
    raise UserError(f'target={a.target!r}; valid: label, motion')
  c = config_lib.base()
  classes = 9 if a.target == 'motion' else 10
  c.task = 'vision.classification'
  c.task_kwargs = dict(input_size=(16, 16), channels=1, num_classes=classes, frames=8,
                       target=a.target)
  c.data.name = 'moving_digits'
  c.data.eval_split = 'test'
  c.model_name = 'vision.c3d' if a.model == 'c3d' else 'vision.c3d:FrameAverage'
  model = dict(TINY if a.tiny else SMALL)
  if a.model == 'frames':
    model = {k: v for k, v in model.items() if k in ('stages', 'fc')}
  if a.variant:
    if a.variant not in c3d.VARIANTS:
      raise UserError(f'variant={a.variant!r}; valid: {", ".join(c3d.VARIANTS)}')
    model = dict(c3d.VARIANTS[a.variant])
    c.task_kwargs.update(input_size=(112, 112), channels=3, frames=16,
                         num_classes=model['num_classes'])
  c.model = dict(model, num_classes=c.task_kwargs.num_classes)
  c.batch_size = 32
  c.total_steps = 600
  c.log_every = 100
  c.eval_every = 300
  c.ckpt_every = 300
  c.optax_name = 'adam'
  c.lr = 1e-3
  c.warmup_steps = 50
  return c
