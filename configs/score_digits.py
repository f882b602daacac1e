"""A score-based model of the offline 8x8 digits through an SDE (arch/generative/score.py):
denoising score matching over t in [0, 1] with the diffusion U-Net as the score network
(arch/generative/diffusion_unet.py, variant 'digits'), sampled by the predictor-corrector
sampler (reverse-diffusion predictor, one Langevin corrector step per step, snr 0.16).

  python -m train --config configs/score_digits.py --workdir runs/score_digits
  python -m train.sample --config configs/score_digits.py --workdir runs/score_digits

Default: the VE SDE (NCSN's continuous limit) with sigma_max 10 (above the 9.63 largest
distance between two digits in [-1, 1]^64, the paper's rule) and sigma_min 0.01; `sde=vp`:
the VP SDE (beta 0.1 to 20). AdamW 5e-4, batch 64, 2,000 steps, EMA 0.999; samples with 250
predictor-corrector steps (the 'fd' evaluator's too: `config.evals.fd.steps`). Arguments: `sde`,
`tiny` (tests).

Measured on the 2-core CPU (2026-11, 1 device, jit), fresh workdir: the VE default reaches
fd 9.16 (floor 4.77), class coverage 1.0, test loss 0.317 (the denoising score-matching
loss at a fixed per-image t and noise); 14.6 min wall (12.2 min CPU user, 2.2 sys) with one
other training job beside it (1-minute load average 4.2 at the start, 3.6 to 4.7 during
the run), of which the one FD eval (360 samples x 250 steps x 2 network calls) is about a
quarter; the same numbers in 38.2 min under three to five other jobs (load 8-15). The
samples are digits on slightly grey, speckled backgrounds. 1.35 M params (the U-Net).
"""

from arch.generative import diffusion_unet, score
from train import config_lib, evaluators
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, sde='ve', tiny=False)
  if a.sde not in score.SDES:
    raise UserError(f'unknown sde {a.sde!r}; valid: {", ".join(score.SDES)}')
  c = config_lib.base()
  c.task = 'generative.score'
  c.task_kwargs = dict(input_size=(8, 8), channels=1, sde=a.sde, sigma_min=0.01,
                       sigma_max=10.0, beta_min=0.1, beta_max=20.0, eps=1e-5)
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.model_name = 'generative.diffusion_unet'
  c.model = dict(diffusion_unet.VARIANTS['tiny' if a.tiny else 'digits'], num_classes=0,
                 dropout=0.0 if a.tiny else 0.1)
  c.batch_size = 8 if a.tiny else 64
  c.total_steps = 2000
  c.log_every = 100
  c.eval_every = 2000  # the FD's 250 predictor-corrector steps cost about 500 train steps
  c.ckpt_every = 1000
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.0)
  c.lr = 5e-4
  c.schedule = 'constant'
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.ema_decay = 0.999
  c.evals.fd = evaluators.entry('fd', every=-1 if a.tiny else 0,  # (tests switch it on)
                                steps=3 if a.tiny else 250)
  c.sample.num_samples = 64
  c.sample.steps = 3 if a.tiny else 250
  c.sample.snr = 0.16
  c.sample.corrector_steps = 1
  return c
