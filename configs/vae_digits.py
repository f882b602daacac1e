"""Autoencoders on the offline 8x8 digits (labels unused): the VAE (Kingma & Welling 2014)
with beta-VAE's KL weight (Higgins et al. 2017), the deterministic autoencoder, and Stable
Diffusion's KL autoencoder (Rombach et al. 2022) at digits size (arch/generative/vae.py,
arch/generative/autoencoder_kl.py).

  python -m train --config configs/vae_digits.py --workdir runs/vae_digits
  python -m train --config configs/vae_digits.py:beta=4 --workdir runs/vae_digits_b4
  python -m train --config configs/vae_digits.py:model=ae --workdir runs/ae_digits
  python -m train --config configs/vae_digits.py:model=kl --workdir runs/kl_digits
  python -m train.sample --config configs/vae_digits.py --workdir runs/vae_digits

Arguments: `model=vae|ae|kl`; `beta` (the KL weight; default 1 for vae, 1e-3 for kl;
not for ae, which has no KL term); `tiny` (tests); `variant=digits|sd15` (kl only).
  vae  ConvVAE: 8x8 -> 4x4 -> 2x2 convs (32, 64), dense 256, 16 latent dimensions; a
       softmax over the digits' 17 grey levels per pixel (an exact discrete likelihood, so
       -ELBO and the IWAE bound are bounds on -log P(image) in nats; see vae.py).
  ae   the same network without the log-variance head, trained on the reconstruction
       term alone; it has no prior, so it has no samples (train.sample refuses) and no FD.
  kl   AutoencoderKL 'digits' (widths 32/64, 1 ResNet block per level, GroupNorm(8), mid
       attention): 8x8x1 -> 4x4x2 latents, SD's L1 reconstruction (a Laplace likelihood,
       b = 1, on pixels in [-1, 1]) plus beta * KL; no LPIPS or GAN (see
       autoencoder_kl.py). Meant as the frozen first stage of a latent diffusion model:
       `config.frozen.vae = dict(spec='configs/vae_digits.py:model=kl', workdir='')`;
       eval reports `latent_std`, and `vae.latent_scale(variables)` gives 1 / std from
       the run's 'latent_stats'. Its prior samples are not the point (the small KL weight
       leaves the aggregate posterior far from N(0, I)), but FD is reported.

Published size (`model=kl,variant=sd15`): Stable Diffusion 1.5's autoencoder (f = 8, 4
latent channels) at 512x512x3, for `python -m train.summary`; the digits cannot feed it, so
`python -m train` stops at once with one line (`config.summary_only`):
  python -m train.summary --config configs/vae_digits.py:model=kl,variant=sd15  # 83,653,863
equal to diffusers 0.42's AutoencoderKL with SD 1.5's configuration
(tests/test_published_sizes.py).

Measured on the 2-core CPU (2026-11, 1 device, jit) while other jobs shared it heavily
(1-minute load average at the start in brackets; it stayed 10-14 during the kl run),
fresh workdirs under /tmp, 3,000 steps of batch 64, Adam 1e-3 cosine, test split, nats
per image, IWAE with k = 64, fd of 360 prior samples against the floor 4.77:
  vae (beta 1)  -ELBO 89.20, IWAE 85.09 (1.918 bits/dim), KL 15.10, recon 74.10,
                mse 0.0095, fd 6.74, class coverage 1.0; 3.2 min wall [7.0] (1.6 min CPU);
                232,529 params. Steps 1000 / 2000: IWAE 84.58 / 84.52, fd 8.23 / 6.84
                (the likelihood overfits a little after step 2000 while fd improves;
                train -ELBO 71.1 at the end). Samples: recognisable, slightly blurry digits.
  ae            recon 127.4 (74.3 / 107.9 at steps 1000 / 2000; train 19.4: the
                categorical decoder overfits to overconfidence), mse 0.0074, code std
                12.6; 5.1 min wall [13.1] (1.6 min CPU); 228,417 params.
  kl (beta 1e-3) mse 0.0015, recon (L1 Laplace, b = 1) 47.64, KL 180.6, latent mean
                -0.41 / std 1.16 (run's EMA: latent_scale 0.868); fd of N(0, I) prior
                samples 33.6 (noise-like, as expected of a barely regularised latent
                space: the prior is for a diffusion model to learn), class coverage 0.9;
                19.8 min wall [10.4] (6.4 min CPU); 653,695 params. Reconstructions are
                near-exact.
  kl, data=caption_shapes (the first stage of configs/t2i_shapes.py; 32x32x3 -> 8x8x4,
                widths 16/32/64, batch 32, 954,567 params), 2026-12-07 evening, fresh
                workdir /work/tmp/t2i/kl: the full 600 steps in 31 min wall (1-minute load
                average 13-15 from other agents' jobs; 0.34-0.56 steps/s); test mse 0.0101
                / 0.0073, recon (L1 Laplace) 2474.6 / 2404.2 nats per image, KL 1144 / 1111,
                latent std 2.35 / 2.00 at steps 300 / 600. What the reader reads back from
                its reconstructions of the held-out scenes (t2i_shapes.py's recon_*):
                colour 0.942 / 0.992, relation 0.966 / 0.982, but kind 0.352 / 0.383
                (chance 0.33: the shapes' outlines are lost), all five 0.114 / 0.144.
                (An earlier run stopped at step 164 reached colour 0.486.)
For comparison on the same split (other configs): RealNVP 2.014 and the Gated PixelCNN
1.759 bits/dim; the VAE's 1.918 is an upper bound (IWAE), theirs exact.
"""

from arch.generative import autoencoder_kl
from arch.generative import vae
from train import config_lib, evaluators
from train.errors import UserError

MODELS = ('vae', 'ae', 'kl')
DEFAULT_BETA = {'vae': 1.0, 'kl': 1e-3}


def captioned_shapes(c, a):
  """`model=kl,data=caption_shapes`: the 32x32 RGB scenes -> 8x8x4 latents (f = 4: three
  levels, widths 16/32/64), pixels of 256 levels; no fd (its classifier reads digits)."""
  c.data.name = 'caption_shapes'
  c.task_kwargs.update(input_size=(32, 32), channels=3, levels=256, eval_samples=4)
  c.model = dict(block_out_channels=(8, 8, 8) if a.tiny else (16, 32, 64),
                 layers_per_block=1, latent_channels=4, out_channels=3,
                 groups=4 if a.tiny else 8)
  c.batch_size = 8 if a.tiny else 32
  c.eval_batch_size = 8 if a.tiny else 100
  if not a.tiny:
    c.total_steps = 600
    c.eval_every = c.ckpt_every = 300
  c.evals.fd.every = -1


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model='vae', beta=None, tiny=False, variant='digits',
                           data='digits')
  if a.data not in ('digits', 'caption_shapes'):
    raise UserError(f'unknown data {a.data!r}; valid: digits, caption_shapes (model=kl)')
  if a.data == 'caption_shapes' and (a.model != 'kl' or a.variant != 'digits'):
    raise UserError('data=caption_shapes is for model=kl (the first stage of '
                    'configs/t2i_shapes.py)')
  if a.model not in MODELS:
    raise UserError(f'unknown model {a.model!r}; valid: {", ".join(MODELS)}')
  if a.variant not in ('digits', 'sd15'):
    raise UserError(f'unknown variant {a.variant!r}; valid: digits, sd15 (model=kl)')
  if a.variant == 'sd15' and (a.model != 'kl' or a.tiny):
    raise UserError('variant=sd15 is the published size of model=kl (summary only): '
                    'configs/vae_digits.py:model=kl,variant=sd15, no tiny')
  if a.model == 'ae' and a.beta is not None:
    raise UserError('beta weighs the KL term; model=ae has none')
  beta = DEFAULT_BETA.get(a.model, 0.0) if a.beta is None else float(a.beta)
  c = config_lib.base()
  c.task = 'generative.vae'
  c.task_kwargs = dict(input_size=(8, 8), channels=1, beta=beta, levels=17,
                       likelihood='laplace' if a.model == 'kl' else 'categorical',
                       scale=1.0, eval_samples=4 if a.tiny else 64,
                       stats_momentum=0.99)
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  if a.model == 'kl':
    c.model_name = 'generative.autoencoder_kl'
    c.model = dict(autoencoder_kl.VARIANTS['tiny' if a.tiny else 'digits'])
  else:
    c.model_name = 'generative.vae'
    c.model = dict(latent_dim=16, features=(32, 64), hidden=256)
    if a.tiny:
      c.model = dict(vae.TINY)
    c.model.stochastic = a.model == 'vae'
  c.batch_size = 8 if a.tiny else 64
  c.total_steps = 3000
  c.log_every = 100
  c.eval_every = 1000
  c.ckpt_every = 1000
  c.optax_name = 'adam'
  c.lr = 1e-3
  c.schedule = 'cosine'
  c.warmup_steps = 100
  c.grad_clip_norm = 100.0
  # (tests switch it on with --config.evals.fd.every=0)
  c.evals.fd = evaluators.entry('fd', every=-1 if a.tiny or a.model == 'ae' else 0)
  c.sample.num_samples = 16
  if a.data == 'caption_shapes':
    captioned_shapes(c, a)
  if a.variant == 'sd15':
    c.model = dict(autoencoder_kl.VARIANTS['sd15'])
    config_lib.published_size(c, dict(c.task_kwargs, input_size=(512, 512), channels=3),
                              "SD 1.5's autoencoder of 512x512 RGB images")
  return c
