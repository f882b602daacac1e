"""CycleGAN (arch/generative/cyclegan.py) on the offline 8x8 digits: domain A the digits as
they are, domain B the same classes stroke-thickened (a plus-shaped grey dilation);
unpaired: each batch's first half is A, its second half (other images) thickened is B.

  python -m train --config configs/cyclegan_digits.py --workdir runs/cyclegan_digits
  python -m train.sample --config configs/cyclegan_digits.py --workdir runs/cyclegan_digits

The paper's recipe: LSGAN losses, cycle weight lambda = 10, identity weight 0.5 lambda, an
image pool of 50 fakes per domain, Adam at 2e-4 with beta1 = 0.5 for the generators and
the discriminators (`config.optimizers`), N(0, 0.02) weights; batch 64 here (32 A + 32 B;
the paper's batch is 1), a constant rate (the paper decays it linearly to zero over its
second half). Networks (variant 'digits'): ResNet generators 8x8x16 -> 4x4x32 with 4
residual blocks -> 8x8x16 -> 8x8x1, 16x16 PatchGANs of width 32 (2x2 patch logits); the eval's two
judge CNNs (Adam 1e-3), trained by their own phase on real images of their domain;
84,833 parameters per generator, 34,401 per discriminator, 188,234 per judge. 1,500 steps.
Arguments: `tiny` (tests), `variant=digits|paper|paper128` (the paper's 256x256 and 128x128
networks, for counting: 11,378,179 parameters per generator, 2,764,737 per discriminator).

Measured on the 2-core CPU (2026-12-06, 1 device, jit), fresh workdir, `nice -n 10`, with
the machine heavily shared (1-minute load average 15.2 at the start, 11.8-17 during): the
step-1500 eval came 20.5 min wall after the start (compile and three evals included; the
process got 25% of the CPU: 5.3 min of user CPU time in all). That run was launched with
total_steps 2500 and stopped by SIGTERM after its step-1500 eval; the rate is constant, so
its first 1500 steps are this config's. Test split (360 digits; b = thicken(a)), steps
500 / 1000 / 1500:
  judge B reads G(a) as a's digit    0.950 / 0.967 / 0.956  (floor: judge B on raw a
                                     0.828 / 0.900 / 0.914; ceiling: on real b 0.958 /
                                     0.969 / 0.969)
  judge A reads F(b) as b's digit    0.867 / 0.897 / 0.933  (floor: judge A on raw b
                                     0.522 / 0.728 / 0.689; ceiling: on real a 0.969 /
                                     0.997 / 1.0)
  cycle L1 |F(G(a)) - a|, |G(F(b)) - b| (pixels in [0, 1]) 0.073 / 0.065 / 0.066 and
                                     0.071 / 0.065 / 0.065
  identity L1 |F(a) - a|, |G(b) - b| 0.055, 0.058 at step 1500
  distance to the true translation (never trained on): |G(a) - thicken(a)| 0.074 / 0.069
                                     / 0.067, |F(b) - a| 0.079 / 0.072 / 0.070, against
                                     |a - b| = 0.297 for translating nothing
  ink (mean pixel): a 0.307, b 0.604, G(a) 0.603 / 0.599 / 0.608, F(b) 0.308 / 0.305 /
                                     0.310: G's outputs carry B's ink, F's A's.
The judges' floors move because the judges are still learning (they reach 0.99-1.0 on
real images of their own domain). Samples (docs/samples/cyclegan_digits.png, step 1500,
strips a | G(a) | F(G(a))): G thickens every stroke, F thins it back to a digit close to
a; `--direction ba` shows b | F(b) | G(F(b)).
"""

from arch.generative import cyclegan
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='digits', tiny=False)
  variant = 'tiny' if a.tiny else a.variant
  if variant not in cyclegan.VARIANTS:
    raise UserError(f'unknown variant {variant!r}; valid: {", ".join(cyclegan.VARIANTS)}')
  c = config_lib.base()
  c.task = 'generative.cyclegan'
  c.task_kwargs = dict(cycle_weight=10.0, identity_weight=0.5, pool_size=4 if a.tiny else 50,
                       judge_shift=1)
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.model_name = 'generative.cyclegan'
  c.model = dict(cyclegan.VARIANTS[variant])
  c.batch_size = 8 if a.tiny else 64
  c.total_steps = 1500
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adam'
  c.optax = dict(b1=0.5, b2=0.999)
  c.lr = 2e-4
  c.schedule = 'constant'
  c.optimizers = dict(generators=dict(lr=2e-4), discriminators=dict(lr=2e-4),
                      judges=dict(lr=1e-3, optax=dict(b1=0.9, b2=0.999)))
  if a.tiny:  # tests: 4 steps, checkpoints at 2 and 4, eval at the end
    c.update(total_steps=4, log_every=1, eval_every=4, ckpt_every=2)
  c.sample.num_samples = 36
  c.sample.direction = 'ab'
  return c
