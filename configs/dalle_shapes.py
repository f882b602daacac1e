"""A DALL·E-style model (Ramesh et al. 2021; arch/generative/dalle.py) on the captioned
two-shape scenes (train/datasets/caption_shapes.py, 32x32, 'a red circle above a blue
square'): a causal Transformer over the caption's 8 word ids then the 8x8 = 64 codes of a
frozen VQ-VAE (configs/vqvae_shapes.py:data=caption_shapes, K = 128), loss 1/8 text + 7/8
image cross-entropy. Eval on the test split, whose compositions train never shows.

  # the VQ-VAE first (its own config's time):
  python -m train --config configs/vqvae_shapes.py:data=caption_shapes --workdir runs/vq_caption
  python -m train --config configs/dalle_shapes.py --workdir runs/dalle_shapes \\
      --config.frozen.vqvae.workdir=runs/vq_caption
  python -m train.sample --config configs/dalle_shapes.py --workdir runs/dalle_shapes \\
      --prompt 'a red circle above a blue square' --num_samples 8 [--temperature T --top_k K]

(--num_samples images of each --prompt; a word outside the captions' vocabulary is one
error line). Without `--config.frozen.vqvae.workdir` the loop trains the VQ-VAE in
WORKDIR/frozen_vqvae first (and the reader in WORKDIR/frozen_reader). Without --prompt the
sampler draws one image for each of the test split's first captions. Arguments: `reader`
(default True: a frozen attribute reader, arch/vision/attributes.py, scores
prompt-following at every eval; `reader=False` skips it), `tiny` (tests: a tiny VQ-VAE
run, a one-layer Transformer).

Default: width 128, 4 layers, 4 heads, learned text positions and image row + column
positions, no dropout; AdamW 1e-3 (weight decay 0.01), cosine after 100 warm-up steps,
batch 32, 1,000 steps, grad clip 1; eval samples at temperature 1 (no top-k).

Measured on the 2-core CPU (2026-12-06, 1 device, jit), fresh workdir /work/runs_dalle/dalle,
the VQ-VAE run of configs/vqvae_shapes.py:data=caption_shapes (psnr 22.15 dB, perplexity
82.1, 128/128 codes; its docstring) and a reader run of configs/caption_reader_shapes.py
stopped at 1,000 steps (test all_correct 0.999) passed as frozen workdirs:
  python -m train --config configs/dalle_shapes.py --workdir W \
      --config.frozen.vqvae.workdir=VQ --config.frozen.reader.workdir=READER
1,000 steps in 24.4 min wall including both evals (1-minute load average 12.6 at the start,
11.6 at the end, 13-16 during: other agents' jobs and this session's tests; 0.74-1.18
steps/s); `train.summary` total_params=834,432 (4 layers of width 128). Test split (1,000
scenes whose compositions train never shows; samples at temperature 1, one per caption):
  step  image_nll  text_nll  prompt_all  colour  kind   relation
  500   1.933      1.032     0.032       0.527   0.345  0.447
  1000  1.772      1.029     0.063       0.816   0.331  0.778
  ceiling: the frozen VQ-VAE's reconstructions of the real test images
                             0.206       0.999   0.456  0.990
  floor: the same samples scored against another scene's caption
                             0.000       0.177   0.322  0.258
(image_nll in nats per image token, ln 128 = 4.85 for uniform codes; train image_nll
1.74 at step 1000, so little overfitting.) Colours and the relation follow held-out
prompts well above the floor; the kind does not (0.33, at the floor), and the ceiling
shows why: at 8x8 codes the VQ-VAE blurs circles, squares and triangles of radius 4.5-6.5
pixels so that the reader names the kind of its reconstructions right 46% of the time
(chance 33%), which caps prompt_all at 0.21. A finer image tokenizer (16x16 codes) is what
the kind needs. Samples (docs/samples/dalle_shapes.png, the first 8 distinct test
captions x 4 samples, looked at): the named colours in the named arrangement, blurry
shapes, sometimes one object missing or merged.
"""

from train import config_lib
from train.datasets import caption_shapes

READER_SPEC = 'configs/caption_reader_shapes.py'


def get_config(arg=None):
  a = config_lib.parse_arg(arg, reader=True, tiny=False)
  c = config_lib.base()
  c.task = 'generative.dalle'
  c.model_name = 'generative.dalle'
  c.frozen.vqvae = dict(spec='configs/vqvae_shapes.py:data=caption_shapes'
                        + (',tiny' if a.tiny else ''), workdir='')
  if a.reader:
    c.frozen.reader = dict(spec=READER_SPEC + (':tiny' if a.tiny else ''), workdir='')
  c.task_kwargs = dict(words=caption_shapes.VOCAB, text_length=caption_shapes.MAX_TOKENS,
                       text_weight=1.0 / 8.0, eval_temperature=1.0, eval_top_k=0)
  c.data.name = 'caption_shapes'
  c.data.eval_split = 'test'
  c.model = dict(num_layers=4, num_heads=4, embed_dim=128, dropout_rate=0.0)
  if a.tiny:
    c.model.update(num_layers=1, num_heads=2, embed_dim=16)
  c.batch_size = 8 if a.tiny else 32
  c.eval_batch_size = 8 if a.tiny else 200
  c.total_steps = 4 if a.tiny else 1000
  c.log_every = 1 if a.tiny else 100
  c.eval_every = c.total_steps if a.tiny else 500
  c.ckpt_every = 2 if a.tiny else 500
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.01)
  c.lr = 1e-3
  c.schedule = 'cosine'
  c.warmup_steps = 0 if a.tiny else 100
  c.grad_clip_norm = 1.0
  c.sample.num_samples = 8
  c.sample.temperature = 1.0
  c.sample.top_k = 0
  return c
