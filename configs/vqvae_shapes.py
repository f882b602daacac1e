"""VQ-VAE (van den Oord et al. 2017) with an EMA codebook and dead-code restarts (Razavi et
al. 2019) on the offline procedural shapes (train/datasets/shapes.py: 2-4 coloured
ellipses, rectangles and triangles over a smooth background with pixel noise), area-pooled
from 48x48 to 24x24 RGB (arch/generative/vqvae.py). Each image becomes 6x6 = 36 tokens
of a K = 128 codebook: the image tokens a DALL·E-style model reads from a frozen run.

  python -m train --config configs/vqvae_shapes.py --workdir runs/vqvae_shapes
  python -m train.sample --config configs/vqvae_shapes.py --workdir runs/vqvae_shapes

Arguments: `codebook=ema|loss` (the EMA codebook with restarts, default, or the paper's
codebook loss ||sg(z_e) - e||^2 without restarts), `data=shapes|caption_shapes` (the
captioned two-shape scenes of train/datasets/caption_shapes.py at their 32x32: 8x8 = 64
codes an image, 1,000 steps), `codes=N` (the code grid's side: the input size / 4, the
default, two stride-2 stages, or / 2, one stage: `data=caption_shapes,codes=16` gives 16x16 =
256 codes an image, the image tokens of configs/dalle_shapes.py:codes=16), `tiny` (tests).

Default: width 64, 2 stride-2 stages (f = 4), 2 residual blocks of 32, codes D = 32,
K = 128, commitment beta 0.25, EMA decay 0.99, restarts after 100 unused steps;
batch 32, Adam 1e-3 cosine. Eval on the 500 test images: psnr (dB, pixels in [0, 1]),
mse, perplexity and codes_used of the test split's 18,000 code assignments.
`train.sample` writes input | reconstruction strips of the first test images.

Measured on the 2-core CPU (2026-12-06, 1 device, jit, fresh workdir under
/work/runs_vqvae/, config as in this file, eval batch 32): 2,000 steps in 18.8 min wall
(4.7 min CPU user; 1-minute load average 8.5 at the start and 10.7 at the end: other
agents' jobs and this session's tests shared the 2 cores), about 1.8 steps/s;
`train.summary` total_params=277,219. Test split (500 images, 24x24):
  step   psnr (dB)  mse      perplexity  codes_used
  500    20.31      0.01008  108.5       128
  1000   20.99      0.00863  119.3       128
  1500   21.27      0.00808  123.1       128
  2000   21.37      0.00791  123.8       128   (train batch perplexity ~94 of 1,152 codes)
Every code is in use at the end; restarts (train metric `restarted`, logged means per
step over 100-step windows) 0.14, 0.42, 0.15, 0.03 in steps 1-400 (about 74 codes in
all), none after step 400, during which the batch's codes_used rose from 45 to 116.
Reference points on the same images: each 4x4 block replaced by its mean colour (the 6x6
grid of 36 continuous RGB values, nearest-upsampled) 21.03 dB;
the image's mean colour 15.98 dB; the pixel noise (sd ~0.025 after pooling) caps any
reconstruction near 32 dB. So 36 tokens of 7 bits give slightly better than that 6x6
continuous grid. Reconstructions (`train.sample`, input | reconstruction strips of the
first 16 test images, looked at): colours, positions and shapes kept, edges blurred and
the pixel noise gone. The codebook='loss' variant was not measured.

`data=caption_shapes` (2026-12-06, 1 device, jit, fresh workdir /work/runs_dalle/vqvae_caption,
  python -m train --config configs/vqvae_shapes.py:data=caption_shapes --workdir W):
1,000 steps in 27.8 min wall (1-minute load average 13.9 at the start, 13.2 at the end: the
2 cores shared with other agents' jobs; 0.6-1.2 steps/s). Test split (1,000 images, 32x32,
64,000 code assignments):
  step   psnr (dB)  mse      perplexity  codes_used
  500    21.53      0.00720  74.0        127
  1000   22.15      0.00624  82.1        128   (train batch perplexity ~78 of 2,048 codes)
Reference points on the same images: each 4x4 block's mean colour (the 8x8 grid of 64
continuous RGB values) 19.55 dB, the image's mean colour 14.41 dB.

`data=caption_shapes,codes=16` (2026-12-07, 1 device, jit, fresh workdir /work/runs_vq/vq16_ema,
  python -m train --config configs/vqvae_shapes.py:data=caption_shapes,codes=16 --workdir W):
1,000 steps in 13.0 min wall (1-minute load average 3.1 at the start, 19.7 at the end: other
agents' jobs and this session's tests; 4.1 steps/s at first, 1.0-1.4 once the load rose);
`train.summary` total_params=146,019 (one stride-2 stage: the 4x4 conv and the transposed
conv of the second stage are gone) plus the 8,448 codebook values. Test split (1,000
images, 256,000 code assignments):
  step   psnr (dB)  mse      perplexity  codes_used
  500    23.90      0.00415  81.7        127
  1000   24.80      0.00337  88.5        128   (train batch perplexity ~84 of 8,192 codes)
What the tokens keep, read by the frozen attribute reader of configs/dalle_shapes.py
(configs/caption_reader_shapes.py, 1,000 steps) on the reconstructions of the 1,000 test
images (the ceiling of a DALL·E-style model on these tokens; on the real images the reader
scores prompt_all 0.999):
  codes   psnr   perplexity  prompt_all  colour  kind   relation
  8x8     22.15  82.1        0.206       0.999   0.456  0.990
  16x16   24.80  88.5        0.833       1.000   0.914  1.000
so the 16x16 grid keeps the shapes' kind that the 8x8 grid blurs away. Dead-code restarts
(the EMA run): at step 100 the batch used only 24 of the 128 codes (batch perplexity 8.4)
and restarts were firing (0.74 a step over steps 1-100, about 74 codes); after them the
batch's codes_used was 114 at step 200 and 128 at the end, with about 90 restarts in all and
none after step 600. A longer or wider 8x8 run and the
codebook='loss' variant at 16x16 were not measured (the 2 cores were shared by ~10 jobs).
"""

from train import config_lib
from train.errors import UserError

# data set -> the input size the images are area-pooled to (f = 4: codes of size / 4)
DATA = {'shapes': (24, 24), 'caption_shapes': (32, 32)}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, codebook='ema', data='shapes', codes=0, tiny=False)
  if a.codebook not in ('ema', 'loss'):
    raise UserError(f'unknown codebook {a.codebook!r}; valid: ema, loss')
  if a.data not in DATA:
    raise UserError(f'unknown data {a.data!r}; valid: {", ".join(DATA)}')
  size = DATA[a.data]
  # the code grid's side -> stride-2 stages: size / 4 (the default) or size / 2
  grids = {size[0] // 4: 2, size[0] // 2: 1}
  codes = a.codes or size[0] // 4
  if codes not in grids:
    raise UserError(f'codes={codes} is no code grid of {a.data}; valid: '
                    f'{", ".join(map(str, grids))}')
  c = config_lib.base()
  c.task = 'generative.vqvae'
  c.task_kwargs = dict(input_size=(8, 8) if a.tiny else size, channels=3, beta=0.25,
                       decay=0.99, eps=1e-5,
                       restart_after=(2 if a.tiny else 100) if a.codebook == 'ema' else 0)
  c.data.name = a.data
  c.data.eval_split = 'test'
  c.model_name = 'generative.vqvae'
  c.model = dict(width=64, stages=grids[codes], res_blocks=2, res_width=32, code_dim=32,
                 num_codes=128, codebook=a.codebook)
  if a.tiny:
    c.model.update(width=8, stages=1, res_blocks=1, res_width=4, code_dim=4, num_codes=8)
  c.batch_size = 8 if a.tiny else 32
  c.eval_batch_size = 8 if a.tiny else 100
  c.total_steps = 4 if a.tiny else (1000 if a.data == 'caption_shapes' else 2000)
  c.log_every = 1 if a.tiny else 100
  c.eval_every = c.total_steps if a.tiny else 500
  c.ckpt_every = 2 if a.tiny else 1000
  c.optax_name = 'adam'
  c.lr = 1e-3
  c.schedule = 'cosine'
  c.warmup_steps = 0 if a.tiny else 100
  c.grad_clip_norm = 10.0
  c.sample.num_samples = 16
  return c
