"""Latent video diffusion on the moving digits (8-frame 16x16 clips of one bouncing 8x8
digit): the video DiT of arch/generative/video_dit.py over the latents of the causal 3-D
VAE of configs/video_vae_digits.py (frozen; trained first in WORKDIR/frozen_vae when that
holds no run), conditioned on the digit with classifier-free guidance.

  python -m train --config configs/video_dit_digits.py --workdir runs/video_dit_digits
  python -m train.sample --config configs/video_dit_digits.py --workdir runs/video_dit_digits

(`--config.frozen.vae.workdir=DIR` reuses a VAE run trained elsewhere.) The recipe is
configs/dit_digits.py's: DDPM's linear schedule over T = 1000, eps-prediction with learned
variances (L_simple + 0.001 L_vlb), labels dropped with probability 0.1, AdamW 1e-3
constant after warm-up, clipping at 1, EMA 0.999; sampling: 100 ancestral DDPM steps at
guidance 2. Latents 4x4x4x8 (standardised per channel with the VAE run's statistics), folded
to 16x4x8 for the objective; 1x2x2 tubelets -> 16 tokens; width 96, 4 blocks, 4 heads,
joint spacetime attention.

The eval reports, besides the diffusion loss and bits/dim (of the latents), the digit
metric of video_dit.py: one sample per test clip for its label, each frame's 8x8 crop of
most ink classified by the digits LeNet (configs/lenet_digits.py, the 'fd' evaluator's
cached run in DATA_DIR/fd_classifiers/lenet_digits_py, trained there first if missing):
digit_accuracy, digit_consistency, clip_accuracy, and real_* on the test clips.
(The 'fd' evaluator compares images, not clips, so it is not used.)
Arguments: `space=pixels` (default: no VAE, diffusion on 4x4x4 pixel tubelets, 32 tokens
of 64 numbers) or `space=latent` (the VAE route above), `attention=joint|factorized`,
`tiny` (tests). Pixels are the default because the VAE route does not fit the CPU budget:
the digits VAE alone takes 20 min at this load and reconstructs at only PSNR 19 dB, and
each DiT step would also run its encoder (2x4x4 pixel tubelets, 64 tokens: 0.78 s/step at
batch 64 against 0.28 s for 4x4x4, load about 8).

Measured (`space=pixels`, 2026-11, 1 device, jit, fresh workdir, load 7.8 at the start and
5 to 10 during the run, with the VAE run and the tests of this family beside it): 2,500
steps of batch 64 in 26.6 min wall (8.6 min CPU; 1.2 to 3.4 steps/s), over the 20-minute
budget at this load. Final train loss 0.0577 (mse 0.0548); test loss 0.121, bits/dim 6.01.
The samples are NOT digits yet: grey speckle scattered over the frames (16 samples, seed 0,
looked at), and the digit metric says so: digit_accuracy 0.091 and clip_accuracy 0.097
(chance 0.1), digit_consistency 0.34, against real_digit_accuracy 0.989 and
real_digit_consistency 1.0 on the test clips (the metric's ceiling). 4x4x4 tubelets with 32
tokens and 2,500 steps are too coarse or too short for this data; the `space=latent` route
was not trained end to end on the digits (only its tiny config, in the tests).
"""

import os

from train import config_lib
from train import data as data_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, attention='joint', space='pixels', tiny=False)
  if a.attention not in ('joint', 'factorized'):
    raise UserError(f'attention={a.attention}: valid: joint, factorized')
  if a.space not in ('pixels', 'latent'):
    raise UserError(f'space={a.space}: valid: pixels, latent')
  c = config_lib.base()
  c.task = 'generative.video_dit'
  c.task_kwargs = dict(frames=8, input_size=(16, 16), channels=1, num_timesteps=1000,
                       schedule='linear', prediction='eps', variance='learned_range',
                       cfg_dropout=0.1)
  c.data.name = 'moving_digits'
  c.data.eval_split = 'test'
  c.model_name = 'generative.video_dit'
  c.model = dict(hidden_dim=96, depth=4, num_heads=4, patch_size=2, temporal_patch=1,
                 attention=a.attention, num_classes=10)
  if a.space == 'pixels':
    c.model.update(patch_size=4, temporal_patch=4)
  else:
    c.frozen.vae = dict(spec='configs/video_vae_digits.py' + (':tiny' if a.tiny else ''),
                        workdir='')
  if a.tiny:
    c.model.update(hidden_dim=16, depth=2, num_heads=2)
  else:
    c.frozen.classifier = dict(spec='configs/lenet_digits.py', workdir=os.path.join(
        data_lib.default_data_dir(), 'fd_classifiers', 'lenet_digits_py'))
  c.batch_size = 4 if a.tiny else 64
  c.total_steps = 2500
  c.log_every = 100
  c.eval_every = 2500
  c.ckpt_every = 500
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.0)
  c.lr = 1e-3
  c.schedule = 'constant'
  c.warmup_steps = 200
  c.grad_clip_norm = 1.0
  c.ema_decay = 0.999
  c.evaluators = ()  # 'fd' embeds images; the digit metric above is the clips' measure
  c.sample.num_samples = 16
  c.sample.steps = 8 if a.tiny else 100
  c.sample.sampler = 'ddpm'
  c.sample.guidance = 2.0
  return c
