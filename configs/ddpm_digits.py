"""DDPM on the offline 8x8 grey digits (arch/generative/diffusion.py) with the diffusion
U-Net (arch/generative/diffusion_unet.py, variant 'digits').

  python -m train --config configs/ddpm_digits.py --workdir runs/ddpm_digits
  python -m train.sample --config configs/ddpm_digits.py --workdir runs/ddpm_digits

Default: unconditional, DDPM's linear schedule over T = 1000 steps, eps-prediction, the
simple loss; the U-Net of 2 levels (32, 64 channels; 8x8 and 4x4), 2 ResBlocks a level,
self-attention at 4x4 and in the middle, dropout 0.1 (1.35 M parameters); AdamW 5e-4
after 100 warm-up steps, constant, batch 64, 1,000 steps, EMA 0.995 of the weights (eval
and sampling use it); samples by DDIM (eta 0) in 50 steps (`config.sample.steps`, the
'fd' evaluator's `config.evals.fd.steps`). Arguments: `schedule=linear|cosine`,
`prediction=eps|v|x0`, `conditional` (class labels, dropped to the null class with
probability 0.1 in training; samples cycle through the classes, guidance
`config.sample.guidance`), `sampler=ddim|ddpm`, `model=unet` (the only network here; DiT
has configs/dit_digits.py), `tiny` (tests), `variant=digits|sd15|sdxl`.

Published sizes (`variant=sd15|sdxl`): the full-size U-Net of Stable Diffusion 1.5 or SDXL
base 1.0 at its latent shape (64x64x4 / 128x128x4, text states of width 768 / 2048), for
`python -m train.summary`; the digits cannot feed them, so `python -m train` stops with one
line (`config.summary_only`), before any weight is allocated:
  python -m train.summary --config configs/ddpm_digits.py:variant=sd15   # 859,520,964
  python -m train.summary --config configs/ddpm_digits.py:variant=sdxl   # 2,567,463,684
Both equal diffusers 0.42's UNet2DConditionModel with the models' configurations
(tests/test_published_sizes.py). train.summary (eval_shape, nothing allocated) of SDXL took
29.5 s wall (7.4 s CPU) and 0.30 GB peak resident memory, of SD 1.5 18.7 s (4.7 s CPU) and
0.28 GB (2026-12-06, 1-minute load average 17 on the 2 cores). `python -m train` on
variant=sdxl stops with that line before building anything.

Measured on the 2-core CPU (2026-11, 1 device, jit), fresh workdirs, shared with other
jobs (1-minute load average in brackets, start -> end):
  run 1: this config with total_steps=2000, ema_decay=0.999, eval every 1000 steps:
         38.6 min wall [11.5 -> 18.7; about 6 jobs per core, so ~1 step/s instead of ~2-3];
         train loss 0.093 (step 1000) / 0.087 (step 1600); eval (EMA weights)
         step 1000: loss 0.219, fd 24.83, class_coverage 0.8;
         step 2000: loss 0.109, bits_per_dim 6.93, fd 9.14 vs fd_floor 4.77, class_coverage 1.0.
         The same checkpoints' raw (non-EMA) weights, DDIM 50 steps: fd 7.42 (step 1000) and
         7.38 (step 2000), coverage 1.0: the EMA at 0.999, started at the init, still weighs
         the init weights 37% at step 1000 and 14% at step 2000. Hence this config's 1,000
         steps at EMA 0.995.
  run 2 (this config as it stands): 26.0 min wall [15.7 -> 11.2, the same crowding];
         re-run with one other training job beside it: 6.5 min wall (5.5 min CPU user,
         1.1 sys) [3.7 -> 3.8 to 4.3], the same numbers; train loss 0.093 at step 1000; eval
         step 500: loss 0.122, fd 11.05, coverage 1.0; step 1000: loss 0.099,
         bits_per_dim 6.23 (one-timestep estimate of the bound over 256 levels), fd 7.09 vs
         fd_floor 4.77, class_coverage 1.0.
Samples (`python -m train.sample ... --num_samples 64 --seed 0`): run 1, digit shapes
with speckled grey backgrounds; run 2, readable digits (2 to 9, several of each) on
near-black backgrounds, a few blurred strokes; no mode collapse.
"""

from arch.generative import diffusion, diffusion_unet
from train import config_lib, evaluators
from train.errors import UserError

MODELS = {'unet': 'generative.diffusion_unet'}
# variant -> the latent (H, W, C) the published U-Net denoises
PUBLISHED = {'sd15': (64, 64, 4), 'sdxl': (128, 128, 4)}


def diffusion_digits(c, *, schedule='linear', prediction='eps', variance='fixed_small',
                     conditional=False, sampler='ddim', steps=50, tiny=False):
  """The digits part shared by diffusion configs: data, task and its kwargs, sampler
  defaults, evaluators. The caller sets the network and the optimisation."""
  for name, value, valid in (('schedule', schedule, diffusion.SCHEDULES),
                             ('prediction', prediction, diffusion.PREDICTIONS),
                             ('sampler', sampler, diffusion.SAMPLERS)):
    if value not in valid:
      raise UserError(f'unknown {name} {value!r}; valid: {", ".join(valid)}')
  c.task = 'generative.diffusion'
  c.task_kwargs = dict(input_size=(8, 8), channels=1, num_timesteps=1000, schedule=schedule,
                       prediction=prediction, variance=variance,
                       cfg_dropout=0.1 if conditional else 0.0, clip_x0=True)
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.evals.fd = evaluators.entry('fd', every=-1 if tiny else 0,  # (tests switch it on)
                    steps=4 if tiny else steps)
  c.sample.num_samples = 16
  c.sample.steps = 4 if tiny else steps
  c.sample.sampler = sampler
  c.sample.eta = 0.0
  c.sample.guidance = 1.0


def get_config(arg=None):
  a = config_lib.parse_arg(arg, schedule='linear', prediction='eps', conditional=False,
                           sampler='ddim', model='unet', tiny=False, variant='digits')
  if a.model not in MODELS:
    raise UserError(f'unknown model {a.model!r}; valid: {", ".join(MODELS)} (DiT: '
                    f'configs/dit_digits.py)')
  if a.variant not in ('digits', *PUBLISHED):
    raise UserError(f'unknown variant {a.variant!r}; valid: digits, {", ".join(PUBLISHED)}')
  if a.variant in PUBLISHED:
    if a.tiny or a.conditional:
      raise UserError(f'variant={a.variant} is a published size (text-conditioned, '
                      f'summary only): no tiny or conditional')
    return _published(a)
  c = config_lib.base()
  diffusion_digits(c, schedule=a.schedule, prediction=a.prediction,
                   conditional=a.conditional, sampler=a.sampler, tiny=a.tiny)
  c.model_name = MODELS[a.model]
  c.model = dict(diffusion_unet.VARIANTS['tiny' if a.tiny else 'digits'],
                 num_classes=10 if a.conditional else 0, dropout=0.0 if a.tiny else 0.1)
  c.batch_size = 8 if a.tiny else 64
  c.total_steps = 1000
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.0)
  c.lr = 5e-4
  c.schedule = 'constant'
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.ema_decay = 0.995  # a horizon of ~200 steps: 0.999 still weighs the init 37% at step 1000
  return c


def _published(a):
  """SD 1.5's or SDXL's U-Net as a latent denoiser (eps-prediction; SD's own schedule is
  'scaled_linear', which this codebase does not have: the schedule sets no parameter)."""
  c = config_lib.base()
  c.task = 'generative.diffusion'
  *size, channels = PUBLISHED[a.variant]
  config_lib.published_size(
      c, dict(input_size=tuple(size), channels=channels, num_timesteps=1000,
              schedule=a.schedule, prediction=a.prediction, clip_x0=False),
      f'the {a.variant} U-Net denoises {"x".join(map(str, PUBLISHED[a.variant]))} latents '
      f'under text states, which the digits cannot feed')
  c.model_name = MODELS[a.model]
  c.model = dict(diffusion_unet.VARIANTS[a.variant])
  c.batch_size = 1
  c.optax_name = 'adamw'
  c.lr = 1e-4
  return c
