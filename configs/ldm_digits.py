"""Latent diffusion (Rombach et al. 2022) on the offline 8x8 grey digits
(arch/generative/ldm.py): diffusion over the 4x4x2 latents of a frozen KL autoencoder
(configs/vae_digits.py:model=kl), samples decoded by its decoder.

  # the first stage (its own config's time, about 20 min on the loaded 2-core CPU):
  python -m train --config configs/vae_digits.py:model=kl --workdir runs/kl_digits
  python -m train --config configs/ldm_digits.py --workdir runs/ldm_digits \\
      --config.frozen.vae.workdir=runs/kl_digits
  python -m train.sample --config configs/ldm_digits.py --workdir runs/ldm_digits

Without `--config.frozen.vae.workdir` the loop trains the KL run first in
WORKDIR/frozen_vae (its time comes on top), then the latent diffusion model.

Default: the LDM paper's denoiser, the diffusion U-Net (arch/generative/diffusion_unet.py,
variant 'digits': widths 32/64 over 4x4 and 2x2, attention at 2x2 and in the middle),
class-conditional (labels dropped to the null class with probability 0.1, sampling with
classifier-free guidance `config.sample.guidance`); DDPM's linear schedule over T = 1000
steps, eps-prediction, the simple loss; latents are posterior draws times 1 / their std
(the KL run's `latent_stats`); AdamW 5e-4 constant after 100 warm-up steps, batch 64,
EMA 0.999 (eval and samples use it); samples by DDIM (eta 0) in 50 steps (`config.evals.fd.steps`
too). Arguments: `model=unet|dit` (DiT: width 96, 4 blocks, 4 heads, patch 1 = 16 latent
tokens, learned variances as DiT trains, DDPM's sampler), `conditional` (default True;
the DiT is always conditional), `posterior=sample|mean`, `tiny` (tests: a tiny KL run).

Measured on the 2-core CPU (2026-11, 1 device, jit) while other jobs shared it heavily
(1-minute load average at the start in brackets), fresh workdirs under /tmp:
  KL run        `configs/vae_digits.py:model=kl` (3,000 steps): 20.4 min wall [10.0; 15-17
                during]; its numbers are the ones in that config's docstring (mse 0.0015,
                latent std 1.16, latent_scale 0.868). Its reconstructions of 360 train
                images have fd 4.79 against the floor 4.77: the first stage costs almost
                nothing in fd. Posterior std: rms 0.011, 1% of the latents' std.
  LDM (unet)    3,000 steps from a fresh workdir, frozen.vae.workdir at that KL run:
                17.0 min wall [6.8; 7-11 during] including the three fd evals, 11.9 min
                of CPU (a first run, with this config's tests sharing the cores at load
                9-17, took 33.5 min, 8 of them compiling, with bit-identical numbers);
                final train loss 0.144, test loss 0.148; fd 5.54 against the floor 4.77
                (360 samples, DDIM 50 steps, guidance 2), class coverage 1.0; fd 30.8 /
                21.0 at steps 1000 / 2000 (the EMA's lag at a constant rate). Samples (64,
                seed 0): recognisable digits of the class asked for, a few blurry or
                ambiguous ones. The same checkpoint at other guidance (fd, load about 7):
                1.0 8.09, 2.0 5.54, 3.0 5.69. 1,352,386 trained parameters (the U-Net)
                and the frozen run's 653,700 values. For comparison, pixel-space DiT
                (configs/dit_digits.py): fd 9.09.
"""

from arch.generative import diffusion_unet
from train import config_lib, evaluators
from train.errors import UserError

MODELS = {'unet': 'generative.diffusion_unet', 'dit': 'generative.dit'}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model='unet', conditional=True, posterior='sample',
                           tiny=False)
  if a.model not in MODELS:
    raise UserError(f'unknown model {a.model!r}; valid: {", ".join(MODELS)}')
  if a.posterior not in ('sample', 'mean'):
    raise UserError(f"unknown posterior {a.posterior!r}; valid: 'sample', 'mean'")
  conditional = a.conditional or a.model == 'dit'
  c = config_lib.base()
  c.task = 'generative.ldm'
  c.frozen.vae = dict(spec='configs/vae_digits.py:model=kl' + (',tiny' if a.tiny else ''),
                      workdir='')
  c.task_kwargs = dict(num_timesteps=1000, schedule='linear', prediction='eps',
                       variance='learned_range' if a.model == 'dit' else 'fixed_small',
                       cfg_dropout=0.1 if conditional else 0.0, latent_scale=0.0,
                       posterior=a.posterior)
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.model_name = MODELS[a.model]
  if a.model == 'unet':
    c.model = dict(diffusion_unet.VARIANTS['tiny' if a.tiny else 'digits'],
                   out_channels=2, num_classes=10 if conditional else 0,
                   dropout=0.0 if a.tiny else 0.1)
    if a.tiny:  # one level (attention in the middle only): half the compile of two
      c.model.update(block_channels=(8,), attention=(False,))
  else:
    c.model = dict(hidden_dim=96, depth=4, num_heads=4, patch_size=1, num_classes=10)
    if a.tiny:
      c.model.update(hidden_dim=16, depth=1, num_heads=2)
  c.batch_size = 8 if a.tiny else 64
  c.total_steps = 3000
  c.log_every = 100
  c.eval_every = 1000
  c.ckpt_every = 1000
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.0)
  c.lr = 5e-4
  c.schedule = 'constant'
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.ema_decay = 0.999
  c.evals.fd = evaluators.entry('fd', every=-1 if a.tiny else 0)  # (tests switch it on)
  c.sample.num_samples = 16
  c.sample.sampler = 'ddpm' if a.model == 'dit' else 'ddim'
  c.sample.steps = 4 if a.tiny else (100 if a.model == 'dit' else 50)
  c.sample.eta = 0.0
  c.sample.guidance = 2.0 if conditional else 1.0
  c.evals.fd.steps = c.sample.steps
  return c
