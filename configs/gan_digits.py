"""DCGAN on the offline 8x8 digits (labels unused): alternating discriminator and
generator updates with one Adam each (arch/generative/gan.py, the loop's Task.phases);
eval: the Fréchet distance of samples to the test digits ('fd', with its floor and class
coverage) and the discriminator's mean output on real and generated images.

  python -m train --config configs/gan_digits.py --workdir runs/gan_digits
  python -m train.sample --config configs/gan_digits.py --workdir runs/gan_digits

The paper's recipe: Adam at 2e-4 with beta1 = 0.5 for both networks, batch 128, N(0, 0.02)
weights. Networks: 2x2x256 -> 4x4x128 -> 8x8x1 (variant 'digits'). Arguments: `tiny`
(tests), `variant=digits|lsun64` (lsun64 is the paper's 64x64 architecture: for counting,
it does not fit 8x8 digits).
"""

from arch.generative import gan
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='digits', tiny=False)
  variant = 'tiny' if a.tiny else a.variant
  if variant not in gan.VARIANTS:
    raise UserError(f'unknown variant {variant!r}; valid: {", ".join(gan.VARIANTS)}')
  c = config_lib.base()
  c.task = 'generative.gan'
  c.task_kwargs = dict(disc_steps=1)
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.model_name = 'generative.gan'
  c.model = dict(gan.VARIANTS[variant])
  c.batch_size = 8 if a.tiny else 64
  c.total_steps = 2500
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adam'
  c.optax = dict(b1=0.5, b2=0.999)
  c.lr = 2e-4
  c.schedule = 'constant'
  c.optimizers = dict(discriminator=dict(lr=2e-4), generator=dict(lr=2e-4))
  c.evaluators = () if a.tiny else ('fd',)  # (tests opt in)
  c.sample.num_samples = 64
  return c
