"""Normalizing flows on the offline 8x8 digits: RealNVP (Dinh et al. 2017) or Glow (Kingma &
Dhariwal 2018) from arch/generative/flow.py, trained by exact maximum likelihood of the
dequantized pixels (logit preprocessing, alpha 0.05, for both: Glow's own `affine` x - 1/2
measured 6.15 against 5.34 bits/dim after 500 steps); eval: bits/dim on the test split.

  python -m train --config configs/flow_digits.py --workdir runs/flow_digits
  python -m train --config configs/flow_digits.py:model=glow --workdir runs/flow_digits_glow
  python -m train --config configs/flow_digits.py:bins=256 --workdir runs/flow_digits_256
  python -m train.sample --config configs/flow_digits.py --workdir runs/flow_digits

Arguments: `model=realnvp|glow`; `bins=17|256`: the digits are 17-level data (scikit-
learn's counts 0..16, which the builder stores as round(j * 255 / 16)), and the default
`bins=17` dequantizes at that native depth, as Glow reports 5-bit CelebA at 5 bits: a
model supported on those 17 values, whose bits/dim is still exactly -log2 P(8-bit image) / D
(see arch/generative/flow.py). `bins=256` dequantizes the stored 8-bit values, which makes
a continuous flow spread mass over 239 values that never occur (the D log 256 convention
of natively 8-bit data); `tiny` (tests). Eval also reports the 'fd' evaluator's Fréchet
distance of 360 samples (train/evaluators.py).

Measured on the 2-core CPU (2026-11, 1 device, jit) while other jobs shared it (load
average 4.4 to 8.7), 1,000 steps of batch 64 each, fresh workdirs under /tmp, test bits/dim
(steps 250 / 500 / 750 / 1000):
  realnvp          4.918 (5.245 / 4.973 / 4.943 / 4.918)   1.6 min wall   207,237 params
  glow             5.315 (5.533 / 5.312 / 5.313 / 5.315)   1.8 min wall   154,416 params
  realnvp,bins=17  2.014 (2.155 / 2.061 / 2.022 / 2.014)   1.6 min wall
  glow,bins=17     2.127 (2.217 / 2.147 / 2.136 / 2.127)   1.9 min wall
(Glow also holds 4,336 actnorm statistics and 736 fixed 1x1-conv values, not trained.)
The default (realnvp, bins=17) again with the 'fd' evaluator, fresh workdir, load about 5:
2.1 min wall including training the LeNet FD classifier on first use; bits/dim 2.014;
fd 8.60 against the floor 4.77 (360 train vs test images), class coverage 1.0
(fd 10.78 / 9.37 / 8.23 at steps 250 / 500 / 750). Samples: recognisable digits.
With 256 bins, longer training or wider nets overfit the 1,437 training images: Glow with
K=8 steps of width 64 reached train 4.2 / test 6.56 after 3,000 steps; RealNVP with
2-block, width-64 ResNets 5.67 on test at step 1,000. For reference, independent per-pixel
categoricals over the 17 values (fitted on train) give 2.42 on test.
"""

from arch.generative import flow
from train import config_lib, evaluators
from train.errors import UserError

MODELS = {
    # 2 scales: 3 checkerboard + 3 channel couplings on 8x8x1 -> 4x4x4, half factored
    # out, then 4 checkerboard couplings on 4x4x2; ResNets of 1 block, width 32.
    'realnvp': ('generative.flow', dict(num_scales=2, hidden=32, num_blocks=1)),
    # 2 levels of 8 steps (4x4x4, split, 2x2x8), coupling nets of width 64.
    'glow': ('generative.flow:Glow', dict(num_levels=2, steps_per_level=8, hidden=64)),
}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model='realnvp', bins=17, tiny=False)
  if a.model not in MODELS:
    raise UserError(f'unknown model {a.model!r}; valid: {", ".join(MODELS)}')
  if a.bins not in (256, 17):
    raise UserError(f'bins={a.bins}: valid: 17 (the digits\' values), 256 (8-bit pixels)')
  model_name, model = MODELS[a.model]
  if a.tiny:
    model = flow.TINY_REALNVP if a.model == 'realnvp' else flow.TINY_GLOW
  c = config_lib.base()
  c.task = 'generative.flow'
  c.task_kwargs = dict(input_size=(8, 8), channels=1, transform='logit', alpha=0.05,
                       num_bins=a.bins)
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.model_name = model_name
  c.model = dict(model)
  c.batch_size = 8 if a.tiny else 64
  c.total_steps = 1000
  c.log_every = 100
  c.eval_every = 250
  c.ckpt_every = 500
  c.optax_name = 'adam'
  c.lr = 1e-3
  c.schedule = 'cosine'
  c.warmup_steps = 100
  c.grad_clip_norm = 100.0
  c.evals.fd = evaluators.entry('fd', every=-1 if a.tiny else 0)  # (tests switch it on)
  c.sample.num_samples = 16
  return c
