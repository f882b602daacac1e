"""DiT (Peebles & Xie 2023) on the offline 8x8 grey digits: a class-conditional diffusion
model (arch/generative/diffusion.py) whose denoiser is the Diffusion Transformer of
arch/generative/dit.py.

  python -m train --config configs/dit_digits.py --workdir runs/dit_digits
  python -m train.sample --config configs/dit_digits.py --workdir runs/dit_digits

The paper's recipe, scaled to the data: DDPM's linear schedule over T = 1000 steps,
eps-prediction with learned variances (Improved DDPM's hybrid loss, L_simple + 0.001 L_vlb,
which DiT trains with), labels dropped to the null class with probability 0.1 for
classifier-free guidance, constant-rate AdamW without weight decay and an EMA of the
weights; sampling with DDPM's ancestral sampler on the learned variances (100 steps) and
guidance 2. The network: width 96, 4 blocks, 4 heads, patch 2 (16 tokens of 2x2 pixels),
724,232 parameters; 3,000 steps of batch 64 (134 epochs), AdamW 1e-3 after 200 warm-up
steps, gradients clipped at 1, EMA 0.999 (eval and samples use the EMA weights).
Arguments: `patch=2|1|4` (16, 64 or 4 tokens), `tiny` (tests), `variant=S/2|...|XL/8`.

Published sizes (`variant=S/2|S/4|S/8|B/2|...|XL/8`, the paper's table 1): the full-size DiT
at the paper's ImageNet 256x256 setting (32x32x4 latents of SD's VAE, 1,000 classes and the
null class, learned variances: 8 output channels), for `python -m train.summary`; the
digits cannot feed it, so `python -m train` stops at once with one line
(`config.summary_only`):
  python -m train.summary --config configs/dit_digits.py:variant=XL/2   # 674,834,720
That is facebookresearch/DiT's 675,129,632 without its frozen position table (an
nn.Parameter with requires_grad=False: 256 x 1152 = 294,912; here a computed constant),
and diffusers' DiTTransformer2DModel's 749,826,464 without the 27 extra copies of the
timestep MLP and label table its blocks keep (arch/generative/dit.py). Every size's count:
tests/test_published_sizes.py.

Measured on the 2-core CPU (2026-11, 1 device, jit) while other jobs shared it (1-minute
load average 9.7 at the start, 10 to 13 during the run), fresh workdir under /tmp: 15.6 min
wall including the three 'fd' evals (360 samples each); final train loss 0.0895 (mse
0.0839); test loss 0.116, bits/dim 5.34 (a one-timestep estimate of the bound); fd 9.09
against the floor 4.77 (360 train vs test images), class coverage 1.0 (fd 28.8 / 19.1 at
steps 1000 / 2000). Samples (64, seed 0): mostly recognisable digits of the class asked
for, with some speckle. The same checkpoint under other sampler settings (fd, load
about 12): guidance 1.0 11.15, 1.5 9.65, 2.0 9.09, 3.0 8.96; 250 DDPM steps at guidance 1.5
8.82; 50 DDIM steps (eta 0) at guidance 1.5 10.35.
Patch 1 (64 tokens): 0.95 steps/s against 3 to 5 for patch 2 at the same load (the loss
at step 200: 0.194 against 0.398), so its 3,000 steps would take about 55 min: patch 2 fits
the 20-minute budget, patch 1 does not.
"""

from arch.generative import dit
from train import config_lib, evaluators
from train.errors import UserError

PUBLISHED = tuple(v for v in dit.VARIANTS if v != 'tiny')  # 'S/2' ... 'XL/8'


def get_config(arg=None):
  a = config_lib.parse_arg(arg, patch=2, tiny=False, variant='')
  if a.variant:
    if a.variant not in PUBLISHED:
      raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(PUBLISHED)}')
    if a.tiny or a.patch != 2:
      raise UserError(f'variant={a.variant} is a published size (its own patch): no tiny '
                      f'or patch')
    return _published(a.variant)
  if a.patch not in (1, 2, 4):
    raise UserError(f'patch={a.patch}: valid: 1, 2, 4 (the 8x8 digits)')
  c = config_lib.base()
  c.task = 'generative.diffusion'
  c.task_kwargs = dict(input_size=(8, 8), channels=1, num_timesteps=1000, schedule='linear',
                       prediction='eps', variance='learned_range', cfg_dropout=0.1)
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.model_name = 'generative.dit'
  c.model = dict(hidden_dim=96, depth=4, num_heads=4, patch_size=a.patch, num_classes=10)
  if a.tiny:
    c.model.update(hidden_dim=16, depth=1, num_heads=2)
  c.batch_size = 8 if a.tiny else 64
  c.total_steps = 3000
  c.log_every = 200
  c.eval_every = 1000
  c.ckpt_every = 1000
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.0)
  c.lr = 1e-3
  c.schedule = 'constant'
  c.warmup_steps = 200
  c.grad_clip_norm = 1.0
  c.ema_decay = 0.999
  c.evals.fd = evaluators.entry('fd', every=-1 if a.tiny else 0)  # (tests switch it on)
  c.sample.num_samples = 16
  c.sample.steps = 8 if a.tiny else 100
  c.sample.sampler = 'ddpm'
  c.sample.guidance = 2.0
  return c


def _published(variant):
  """DiT at the paper's ImageNet 256x256 setting; its training recipe: AdamW 1e-4, no
  weight decay, batch 256, EMA 0.9999."""
  c = config_lib.base()
  c.task = 'generative.diffusion'
  config_lib.published_size(
      c, dict(input_size=(32, 32), channels=4, num_timesteps=1000, schedule='linear',
              prediction='eps', variance='learned_range', cfg_dropout=0.1, clip_x0=False),
      f'DiT-{variant} denoises the 32x32x4 latents of 256x256 ImageNet images (1,000 '
      f'classes), which the digits cannot feed')
  c.model_name = 'generative.dit'
  c.model = dict(dit.VARIANTS[variant], num_classes=1000)
  c.batch_size = 256
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.0)
  c.lr = 1e-4
  c.schedule = 'constant'
  c.ema_decay = 0.9999
  return c
