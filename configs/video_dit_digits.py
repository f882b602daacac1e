"""Latent video diffusion on the moving digits (8-frame 16x16 clips of one bouncing 8x8
digit): the video DiT of arch/generative/video_dit.py over spacetime tubelets of the latents
of the causal 3-D VAE of configs/video_vae_digits.py (default, `space=latent`; frozen,
trained first in WORKDIR/frozen_vae when that holds no run) or of the pixels
(`space=pixels`), conditioned on the digit with classifier-free guidance.

  python -m train --config configs/video_vae_digits.py --workdir runs/video_vae_digits
  python -m train --config configs/video_dit_digits.py --workdir runs/video_dit_digits \\
      --config.frozen.vae.workdir=runs/video_vae_digits
  python -m train.sample --config configs/video_dit_digits.py --workdir runs/video_dit_digits

(Without `--config.frozen.vae.workdir` the loop trains the VAE first in
WORKDIR/frozen_vae.) Recipe: a cosine schedule over T = 1000 with v-prediction (Salimans & Ho) and learned variances (L_simple +
0.001 L_vlb), labels dropped with probability 0.1, AdamW 1e-3 constant after 200 warm-up
steps, clipping at 1, EMA 0.995; sampling: 100 ancestral DDPM steps at guidance 2. Latents
(4x4x4x8, standardised per channel with the VAE run's statistics): 1x2x2 tubelets -> 16
tokens of 32 numbers, 8,000 steps; pixels: 1x4x4 tubelets -> 128 tokens of 16 numbers (8
frames x 4 x 4), 1,500 steps; width 96, 4 blocks, 4 heads, joint spacetime attention.

The eval reports, besides the diffusion loss and bits/dim, the digit metric of
video_dit.py: one sample per test clip for its label, each frame's 8x8 crop of most ink
classified by the digits LeNet (configs/lenet_digits.py, the 'fd' evaluator's cached run
in DATA_DIR/fd_classifiers/lenet_digits_py, trained there first if missing):
digit_accuracy, digit_consistency, clip_accuracy, and real_* on the test clips (the
metric's ceiling: 0.989 / 1.0 / 0.989). (The 'fd' evaluator compares images, not clips.)
Arguments: `space=pixels|latent`, `attention=joint|factorized`, `tiny` (tests).

Measured (2026-11, 2-core CPU, 1 device, jit, fresh workdirs, batch 64).
Latents, over the 3,000-step VAE run of configs/video_vae_digits.py (10.2 min; its
reconstructions score digit_accuracy 0.779, clip_accuracy 0.903: this route's ceiling),
each run beside one other training job (load 3 to 4):
  this config, 8,000 steps: 18.4 min wall (24.0 min CPU user, 3.6 sys), alone but for
    this family's tests for about half of it (load 1.8 to 3); test loss 0.420;
    digit_accuracy 0.647, digit_consistency 0.681, clip_accuracy 0.822 (chance 0.1; real
    clips 0.989; the VAE's reconstructions 0.903). At 6,000 steps (resumed from the
    4,000-step run): 0.597 / 0.648 / 0.761. Samples (10, seed 0, looked at; the README's
    grid): clear digits moving smoothly, the class asked for in most clips; in some the
    digit turns into another over the clip (a 2 into an 8, a 9 into a 3), between the
    VAE's latent frames (each decodes to two video frames).
  4,000 steps (beside one other training job, load 3 to 4): 13.3 min wall; test loss
    0.449; 0.525 / 0.602 / 0.658.
  1,500 steps: digit_accuracy 0.238, clip_accuracy 0.294 (4.1 min, alone);
  1x1x1 tubelets (64 tokens), 1,500 steps: 0.428 / 0.533 (14.3 min).
Pixels (each run sharing the cores with one other training job and at times this
family's tests: load 4 to 5), the digit metric at chance (0.1) in every run:
  eps-prediction, linear schedule, 4x4x4 tubelets (32 tokens), EMA 0.999, 2,500 steps:
    train loss 0.058; samples are grey speckle over the whole frame; digit_accuracy
    0.091. Probing the checkpoint: its x0 estimate at t = 800 is worse than the data mean
    (eps errors are amplified by sqrt((1 - abar) / abar) there).
  v-prediction, cosine, EMA 0.995, 4x4x4, 1,500 steps (9.6 min): samples now hold one
    digit-sized blob that moves coherently through the clip, but its strokes are speckled
    and not readable; digit_accuracy 0.110.
  the same, 2x4x4 tubelets (64 tokens), 3,000 steps (33.6 min): loss 0.159, digit_accuracy
    0.117, clip_accuracy 0.133.
  `space=pixels` (1x4x4, 128 tokens), 1,500 steps: 36.1 min wall (26.8 min CPU user, 5.7
    sys; the eval's 360 clips x 100 steps x 2 guided calls take about a quarter): train
    loss 0.136 (lower than 2x4x4 at twice the steps), test loss 0.135, digit_accuracy
    0.128, digit_consistency 0.370, clip_accuracy 0.128.
So in pixels finer tubelets and v-prediction help the loss, but at this scale the DiT
does not draw readable digits (a patch-based model must learn each digit at every offset
from its 4x4 grid; the VAE's convolutions absorb that), and the run is over the 20-minute
budget: latents are the default.
"""

import os

from train import config_lib
from train import data as data_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, attention='joint', space='latent', tiny=False)
  if a.attention not in ('joint', 'factorized'):
    raise UserError(f'attention={a.attention}: valid: joint, factorized')
  if a.space not in ('pixels', 'latent'):
    raise UserError(f'space={a.space}: valid: pixels, latent')
  c = config_lib.base()
  c.task = 'generative.video_dit'
  c.task_kwargs = dict(frames=8, input_size=(16, 16), channels=1, num_timesteps=1000,
                       schedule='cosine', prediction='v', variance='learned_range',
                       cfg_dropout=0.1)
  c.data.name = 'moving_digits'
  c.data.eval_split = 'test'
  c.model_name = 'generative.video_dit'
  c.model = dict(hidden_dim=96, depth=4, num_heads=4, patch_size=2, temporal_patch=1,
                 attention=a.attention, num_classes=10)
  if a.space == 'pixels':
    c.model.update(patch_size=4, temporal_patch=1)
  else:
    c.frozen.vae = dict(spec='configs/video_vae_digits.py' + (':tiny' if a.tiny else ''),
                        workdir='')
  if a.tiny:
    c.model.update(hidden_dim=16, depth=2, num_heads=2)
  else:
    c.frozen.classifier = dict(spec='configs/lenet_digits.py', workdir=os.path.join(
        data_lib.default_data_dir(), 'fd_classifiers', 'lenet_digits_py'))
  c.batch_size = 4 if a.tiny else 64
  c.total_steps = 1500 if a.space == 'pixels' else 8000
  c.log_every = 100
  c.eval_every = c.total_steps
  c.ckpt_every = 500
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.0)
  c.lr = 1e-3
  c.schedule = 'constant'
  c.warmup_steps = 200
  c.grad_clip_norm = 1.0
  c.ema_decay = 0.995
  c.sample.num_samples = 16
  c.sample.steps = 8 if a.tiny else 100
  c.sample.sampler = 'ddpm'
  c.sample.guidance = 2.0
  return c
