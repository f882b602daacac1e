"""DCGAN on the offline 8x8 digits (labels unused): alternating discriminator and
generator updates with one Adam each (arch/generative/gan.py, the loop's Task.phases);
eval: the Fréchet distance of samples to the test digits ('fd', with its floor and class
coverage) and the discriminator's mean output on real and generated images.

  python -m train --config configs/gan_digits.py --workdir runs/gan_digits
  python -m train.sample --config configs/gan_digits.py --workdir runs/gan_digits

The paper's recipe: Adam at 2e-4 with beta1 = 0.5 for both networks (`config.optimizers`
sets each), N(0, 0.02) weights; batch 64 here (the paper's 128 doubles the time for no gain
on 1,437 images), 2,500 steps. Networks (variant 'digits'): 2x2x128 -> 4x4x64 -> 8x8x1
generator, 1 -> 64 -> 128 -> logit discriminator, 5x5 kernels; 257,985 + 207,233 params.
Arguments: `tiny` (tests), `variant=digits|lsun64` (the paper's 64x64 networks, 18,855,043
+ 17,232,897 params: for counting, they do not fit 8x8 digits).

Measured on the 2-core CPU (2026-11, 1 device, jit), fresh workdir: 6.8 min wall (7.5 min
of CPU, user) with one other training job beside it (1-minute load average 3.6 at the
start, 3.9 to 4.3 during the run); an earlier run under four other jobs (load 10-14) took
26.3 min wall and gave the same numbers (the run is deterministic). Test FD / class coverage at steps 500 / 1000 / 1500 / 2000 / 2500:
11.01 / 8.24 / 7.84 / 7.90 / 6.56 (floor 4.77), coverage 1.0 throughout; the
discriminator's mean P(real) on test digits 0.44 and on samples 0.23 at the end. The
samples are clearly digits of every class, a little noisier than the data.
"""

from arch.generative import gan
from train import config_lib, evaluators
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
  c.evals.fd = evaluators.entry('fd', every=-1 if a.tiny else 0)  # (tests switch it on)
  c.sample.num_samples = 64
  return c
