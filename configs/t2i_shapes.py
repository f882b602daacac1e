"""Text-to-image latent diffusion (Rombach et al. 2022; arch/generative/t2i.py) on the
captioned two-shape scenes (train/datasets/caption_shapes.py, 32x32, 'a red circle above a
blue square'): a cross-attention U-Net over the 8x8x4 latents of a frozen KL autoencoder,
conditioned on the token states of a frozen CLIP text tower, with classifier-free guidance
(Ho & Salimans 2022; captions dropped to the null caption with probability 0.1).

  # the frozen runs (each its own config's time; without the workdir flags the loop trains
  # them first in WORKDIR/frozen_vae, WORKDIR/frozen_clip, WORKDIR/frozen_reader):
  python -m train --config configs/vae_digits.py:model=kl,data=caption_shapes \\
      --workdir runs/kl_shapes
  python -m train --config configs/clip_digits.py:data=caption_shapes --workdir runs/clip_shapes
  python -m train --config configs/caption_reader_shapes.py --workdir runs/caption_reader
  python -m train --config configs/t2i_shapes.py --workdir runs/t2i_shapes \\
      --config.frozen.vae.workdir=runs/kl_shapes --config.frozen.clip.workdir=runs/clip_shapes \\
      --config.frozen.reader.workdir=runs/caption_reader \\
      --config.evals.fd.workdir=runs/caption_reader
  python -m train.sample --config configs/t2i_shapes.py --workdir runs/t2i_shapes \\
      --prompt 'a red circle above a blue square' --num_samples 4 [--guidance 3 --steps 50]

(--num_samples images of each --prompt; a word outside the captions' vocabulary is one
error line; without --prompt the sampler cycles the 186 held-out captions, as the fd eval
does.) Arguments: `reader` (default True: the frozen attribute reader scores
prompt-following at every eval), `tiny` (tests: tiny frozen runs and U-Net).

Default: the diffusion U-Net (arch/generative/diffusion_unet.py) at widths 48/96 over 8x8
and 4x4, one ResBlock a level, a spatial transformer (self-attention, cross-attention to
the 8 caption states of width 64, GEGLU) after each, 4 heads; DDPM's linear schedule over
T = 1000, v-prediction (Salimans & Ho 2022), the simple loss; latents are posterior draws
times 1 / their std; AdamW 1e-3 constant after 100 warm-up steps, batch 32, grad clip 1,
EMA 0.995 (eval and samples use it), 800 steps; samples by DDIM (eta 0), 50 steps,
guidance 3; the eval (test[:500]: sampling is its cost) draws 20 DDIM steps at guidance 3
(`task_kwargs.eval_guidance`) and unconditionally (the null caption, guidance 0); fd of
500 samples (20 steps) in the reader's features at the last eval.

Measured on the 2-core CPU (2026-12-07 evening, 1 device, jit) shared with two other
helpers' jobs (1-minute load averages in brackets: wall times are upper bounds; CPU
times are the process's own), runs under /work/tmp/t2i/:
  clip    configs/clip_digits.py:data=caption_shapes, 500 steps, 4.9 min wall [3-14]: test
          retrieval 0.524 / text retrieval 0.603 (as its docstring);
  reader  configs/caption_reader_shapes.py --config.total_steps=500: test all_correct 0.996;
  vae     configs/vae_digits.py:model=kl,data=caption_shapes, its full 600 steps, 31 min
          wall [13-15] (0.34-0.56 steps/s); test mse 0.0101 / 0.0073 at steps 300 / 600.
          One t2i run below reads its step 600, the other its STEP-300 checkpoint (copied
          aside when saved, so that run could start 12 minutes earlier, under load);
  t2i     over the KL run's step 600 (the recipe as written), started when the load had
          fallen: 8.8 min wall including the eval, 7.2 min of CPU (user + sys) [5-6],
          1.9-3.2 steps/s; train loss 0.792 / 0.453 / 0.351 at steps 50 / 200 / 800; eval
          at step 800 (`--config.evals.fd.every=-1`: no fd, for time):
                           prompt_all  colour  kind   relation
            guidance 3     0.040       0.537   0.338  0.506
            unconditional  0.000       0.160   0.351  0.232
            shuffled       0.000       0.183   0.315  0.242
            ceiling        0.144       0.992   0.383  0.982   (step-600 KL's reconstructions)
          The better first stage raises the ceiling (colour 0.942 -> 0.992) but not the
          samples: within 800 steps the denoiser, not the first stage, limits colour and
          relation; the kind stays lost in both first stages (ceiling 0.35-0.38).
  t2i     over the step-300 KL (this config: v-prediction, lr 1e-3, 800 steps; 2,380,516
          trained parameters), with fd:
          python -m train --config configs/t2i_shapes.py --workdir W \
              --config.frozen.vae.workdir=KL300 --config.frozen.clip.workdir=CLIP \
              --config.frozen.reader.workdir=READER --config.evals.fd.workdir=READER
          36.4 min wall to step 800 (18:27:47-19:04:10 UTC; about 13 of them compiling
          before step 50 [13-15]; 0.34-1.24 steps/s), 7 min 45 s of CPU time to then;
          train loss (v MSE) 0.725 / 0.380 / 0.331 / 0.318 at steps 50 / 250 / 500 / 800.
          The eval at step 800 (6.6 min wall; 500 held-out test scenes, 20 DDIM steps):
                           prompt_all  colour  kind   relation
            guidance 3     0.044       0.523   0.346  0.504
            unconditional  0.002       0.165   0.355  0.228   (the same net, null caption)
            shuffled       0.000       0.173   0.343  0.262   (guided samples, rolled captions)
            ceiling        0.114       0.942   0.352  0.966   (reader on the step-300 KL's
                                                               reconstructions of the real scenes)
          fd 424.1 (500 samples cycling the held-out captions, guidance 3) against
          fd_floor 36.5, class_coverage 0.44. Step budget (the same eval of the run's
          checkpoints, /work/tmp/t2i/evalstep.py, load 5): guided prompt_all / colour /
          relation 0.016 / 0.490 / 0.304 at step 400, 0.034 / 0.523 / 0.468 at 600,
          0.044 / 0.523 / 0.504 at 800 (unconditional colour 0.157-0.165 throughout):
          colour follows the caption by step 400, the relation keeps improving to 800.
        The model follows held-out prompts in colour (0.52 against 0.17) and relation
        (0.50 against 0.23-0.26), well above the unconditional model and the shuffled
        floor; kind stays at chance because the first stage loses it (ceiling kind 0.35:
        at step 300 the KL autoencoder's reconstructions do not keep circle / square /
        triangle apart), which also caps prompt_all (ceiling 0.114). Samples
        (docs/samples/t2i_shapes.png: the first 8 held-out captions x 4, guidance 3, 50
        DDIM steps, 6 a row in prompt order; train.sample took 29.5 s wall), looked at:
        two round blobs on the dark background, the first red as every one of these
        captions says, the second mostly in the named colour, placed as the relation
        says (above / below / left of); no recognisable circle, square or triangle.
        Diagnosis (2026-12-07, /work/tmp/t2i/diag.py: eval loss on 500 test scenes with
        the true, rolled and null captions): at step 200 the EMA net's v-loss was 0.5787
        true against 0.5861 rolled and 0.5850 null, lower with the true caption in every
        quarter of t: the cross-attention is used. The CLIP tower's token states (rms
        0.98 an element) differ by 0.6-1.6 rms where a colour or kind word changes but by
        only 0.03-0.3 where 'above' becomes 'below' (a contrastive batch rarely holds two
        captions that differ only in the relation), so the relation must come mostly
        from word order. The earlier run (eps-prediction, lr 5e-4, 600 steps, over a KL run stopped
        at step 164) stayed at chance everywhere (prompt_all 0.000 / colour 0.158 /
        relation 0.270 against unconditional 0.002 / 0.158 / 0.274) with fd 794.8; its
        first stage's ceiling was colour 0.486, relation 0.856.
        Left: a first stage that keeps the kind (a longer or wider KL run; DALL-E's 8x8
        VQ-VAE has the same problem, kind ceiling 0.46), a text tower that tells 'above'
        from 'below', more steps for the relation.
"""

from configs.rectified_flow_shapes import held_out_captions
from arch.generative import diffusion_unet
from train import config_lib, evaluators
from train.datasets import caption_shapes

READER_SPEC = 'configs/caption_reader_shapes.py'


def get_config(arg=None):
  a = config_lib.parse_arg(arg, reader=True, tiny=False)
  c = config_lib.base()
  c.task = 'generative.t2i'
  c.model_name = 'generative.diffusion_unet'
  c.frozen.vae = dict(spec='configs/vae_digits.py:model=kl,data=caption_shapes'
                      + (',tiny' if a.tiny else ''), workdir='')
  c.frozen.clip = dict(spec='configs/clip_digits.py:data=caption_shapes'
                       + (',tiny' if a.tiny else ''), workdir='')
  if a.reader:
    c.frozen.reader = dict(spec=READER_SPEC + (':tiny' if a.tiny else ''), workdir='')
  # v-prediction: its loss weighs x0's error by 1 + SNR where eps's weighs it by SNR, so
  # the high-noise steps that decide colours and layout are not near-free (eps: 0 weight)
  c.task_kwargs = dict(num_timesteps=1000, schedule='linear', prediction='v',
                       variance='fixed_small', cfg_dropout=0.1, latent_scale=0.0,
                       posterior='sample', words=caption_shapes.VOCAB,
                       text_length=caption_shapes.MAX_TOKENS, prompts=held_out_captions(),
                       eval_guidance=3.0, eval_steps=2 if a.tiny else 20,
                       eval_unconditional=True)
  c.data.name = 'caption_shapes'
  c.data.eval_split = 'test' if a.tiny else 'test[:500]'  # (sampling is the eval's cost)
  if a.tiny:
    c.model = dict(diffusion_unet.VARIANTS['tiny'], block_channels=(8,), attention=(True,),
                   context_dim=16)
  else:
    c.model = dict(out_channels=4, block_channels=(48, 96), attention=(True, True),
                   layers_per_block=1, num_heads=4, context_dim=64, groups=8, dropout=0.0)
  c.batch_size = 8 if a.tiny else 32
  c.eval_batch_size = 8 if a.tiny else 250
  c.total_steps = 4 if a.tiny else 800
  c.log_every = 1 if a.tiny else 50
  c.eval_every = c.total_steps
  c.ckpt_every = 2 if a.tiny else 200
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.0)
  c.lr = 1e-3
  c.schedule = 'constant'
  c.warmup_steps = 0 if a.tiny else 100
  c.grad_clip_norm = 1.0
  c.ema_decay = 0.995  # window ~200 steps; 0.999 would still weigh the init 0.22 at 1,500
  # FD in the reader's features at the last eval (`--config.evals.fd.workdir` at a reader
  # run; '' trains one in DATA_DIR/fd_classifiers first)
  c.evals.fd = evaluators.entry('fd', classifier=READER_SPEC, every=-1 if a.tiny else 0,
                                steps=20, num_samples=500)
  c.sample.num_samples = 4
  c.sample.sampler = 'ddim'
  c.sample.steps = 2 if a.tiny else 50
  c.sample.eta = 0.0
  c.sample.guidance = 3.0
  return c
