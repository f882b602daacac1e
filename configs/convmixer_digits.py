"""ConvMixer (Trockman & Kolter 2022) on 8x8 digits resized to 32x32: a 4x4 patch
embedding to 8x8 maps, then 8 identical blocks of width 32 with 5x5 depthwise kernels
(arch/vision/convmixer.py TINY), AdamW, random +-2 px translations.

  python -m train --config configs/convmixer_digits.py --workdir runs/convmixer_digits

Its blocks scan, so a `stage` mesh axis pipelines them (GPipe, arch/layers/pipeline.py):

  python -m train --config configs/convmixer_digits.py --workdir runs/cm_pp \\
      --config.mesh.stage=4 --config.mesh.data=2 --config.model.pipeline_microbatches=1

(M=1 computes the one-device function; M > 1 normalises each block by its microbatch's
BatchNorm statistics, a different function.) `mesh.sequence` splits the maps' rows.

Arguments: `variant=tiny|1536/20|768/32|1024/20` (the paper's sizes with 10 classes on
digits; only `tiny` was measured here), `tiny` (an even smaller net for tests).

Measured on the 2-core CPU (2026-12-07, 1 device, jit), shared with other jobs (load
average 12-17): 200 steps of batch 64 in 5 min 24 s wall (84 s user + 22 s system CPU),
test accuracy 0.9806 (353/360; 0.9528 at step 100); 17,066 parameters.
(A grouped convolution for the depthwise step cost about 10x this: convmixer.DepthwiseConv.)
"""

from arch.vision import convmixer
from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='tiny', tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=32, shift=2)
  c.model_name = 'vision.convmixer'
  if a.tiny:
    model = dict(convmixer.TINY, dim=8, depth=4, kernel_size=3)
  elif a.variant == 'tiny':
    model = dict(convmixer.TINY)
  elif a.variant in convmixer.VARIANTS:
    model = dict(convmixer.VARIANTS[a.variant])
  else:
    raise UserError(f'unknown variant {a.variant!r}; valid: tiny, '
                    f'{", ".join(convmixer.VARIANTS)}')
  c.model = dict(model, num_classes=10, pipeline_microbatches=0)

  c.total_steps = 200
  c.log_every = 50
  c.eval_every = 100
  c.ckpt_every = 200
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=5e-4)
  c.lr = 3e-3
  c.warmup_steps = 50
  return c
