"""The causal 3-D VAE of arch/generative/video_vae.py on the moving digits (8-frame 16x16
clips of one bouncing 8x8 digit): the latent space of the video DiT
(configs/video_dit_digits.py), which trains this run first when it has none.

  python -m train --config configs/video_vae_digits.py --workdir runs/video_vae_digits

8x16x16x1 clips -> 4x4x4x8 latents (time / 2, space / 4: 4x fewer numbers). Widths 8/16/32,
one residual block per level, GroupNorm(4) per frame (strictly causal), plain GroupNorm in
the decoder (no spatial norm); 469,177 parameters. L2 reconstruction + 1e-3 KL; Adam 2e-3
after 100 warm-up steps, cosine decay, clipping at 1, batch 16, 3,000 steps (8.4 epochs).
Arguments: `tiny` (tests), `variant=digits|cogvideox`.

Published size (`variant=cogvideox`): CogVideoX's VAE (diffusers' AutoencoderKLCogVideoX
default configuration, with its whole-clip GroupNorm: causal_norm=False, the same
parameters) at CogVideoX's 49 frames of 480x720x3, for `python -m train.summary`; the moving
digits cannot feed it, so `python -m train` stops at once with one line
(`config.summary_only`):
  python -m train.summary --config configs/video_vae_digits.py:variant=cogvideox  # 215,583,907
equal to diffusers 0.42's count (tests/test_published_sizes.py).

Measured on the 2-core CPU (2026-11, 1 device, jit), fresh workdir, alone on the machine
(1-minute load average 1.5 to 3): 10.2 min wall, 4.8 to 5.8 steps/s. Test split (360
clips, posterior mean): mse 0.0069 per pixel in [0, 1] (PSNR 21.9 dB), L1 125 per clip in
[-1, 1] units, KL 1,598 nats per clip, latent std 0.72. The digits LeNet on the
reconstructions' digit crops (the video DiT's metric): digit_accuracy 0.779,
digit_consistency 0.810, clip_accuracy 0.903 (0.989 on the clips themselves): the
ceiling of latent video diffusion over this VAE. The same config at 1,000 steps: PSNR 19.2
dB, digit_accuracy 0.525 (20.5 min at load 7 to 10). 3-D convs run as 2-D convs over
stacked time taps (2.6x faster than XLA:CPU's conv3d here).
"""

from arch.generative import video_vae
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False, variant='digits')
  if a.variant not in ('digits', 'cogvideox'):
    raise UserError(f'unknown variant {a.variant!r}; valid: digits, cogvideox')
  if a.variant == 'cogvideox' and a.tiny:
    raise UserError('variant=cogvideox is a published size (summary only): no tiny')
  c = config_lib.base()
  c.task = 'generative.video_vae'
  c.task_kwargs = dict(frames=8, input_size=(16, 16), channels=1, beta=1e-3, reconstruction='l2',
                       stats_momentum=0.99)
  c.data.name = 'moving_digits'
  c.data.eval_split = 'test'
  c.model_name = 'generative.video_vae'
  c.model = dict(video_vae.VARIANTS['tiny' if a.tiny else 'digits'])
  c.batch_size = 4 if a.tiny else 16
  c.total_steps = 2 if a.tiny else 3000
  c.log_every = 1 if a.tiny else 100
  c.eval_every = 2 if a.tiny else 3000
  c.ckpt_every = 2 if a.tiny else 1000
  c.optax_name = 'adam'
  c.lr = 2e-3
  c.schedule = 'cosine'
  c.warmup_steps = 0 if a.tiny else 100
  c.grad_clip_norm = 1.0
  if a.variant == 'cogvideox':
    c.model = dict(video_vae.VARIANTS['cogvideox'], causal_norm=False)
    config_lib.published_size(
        c, dict(c.task_kwargs, frames=49, input_size=(480, 720), channels=3,
                reconstruction='l1'), "CogVideoX's autoencoder of 49-frame 480x720 videos")
  return c
