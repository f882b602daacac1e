"""Flamingo-style visual question answering on the offline digits
(arch/multimodal/flamingo.py): a frozen CLIP image tower (configs/clip_digits.py) and a
frozen byte-level GPT language model pretrained on English prose (configs/gpt_pydoc.py),
bridged by a trained Perceiver resampler and tanh-gated cross-attention blocks. Each
image is asked 'Q: What digit is this? A:', '... even or odd?', '... larger than four?'
and '... plus one?'; eval `accuracy` is the exact-match rate of the greedy answers over
all four questions of every test image (and `accuracy_<kind>` per question).

  python -m train --config configs/flamingo_digits.py --workdir runs/flamingo_digits
  python -m train.sample --config configs/flamingo_digits.py --workdir runs/flamingo_digits \\
      --prompt 'Q: What digit is this? A:' --num_samples 8 --temperature 0

The frozen runs live in WORKDIR/frozen_vision and WORKDIR/frozen_lm and are trained there
first when they hold no checkpoint; point at existing ones with
`--config.frozen.vision.workdir=runs/clip_digits --config.frozen.lm.workdir=runs/gpt_pydoc`.

Arguments: `tiny` (tests: tiny frozen runs).

Measured on the 2-core CPU (2026-11, 1 device, jit) shared with other jobs (load average
about 6), from a fresh workdir with the frozen runs pointed at the documented
clip_digits run (zero-shot 0.9833) and gpt_pydoc run (validation 1.381 nats/byte): 600
steps of batch 32 in 14.7 min wall; test `accuracy` 0.9771 over the four questions
(digit 0.9694, larger-than-four 0.9806, parity 0.9889, plus-one 0.9694; 0.9458 at step
200, 0.9660 at step 400). At initialisation (gates 0, i.e. the frozen LM alone) it is
0.0 with 23-26 nats per answer: the LM has never seen this format. 1,807,816 trained
parameters (resampler 99k, four gated blocks 1.71M); frozen: LM 3,258,880, CLIP 330,369.
The sampler's greedy answers for the first test images are right ('Q: What digit is this?
A: one', '... four', '... zero', '... eight'); rephrased questions it never saw ('Q: Which
digit is shown? A:') mostly get the right digit too.
"""

from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base()
  c.task = 'multimodal.flamingo'
  c.model_name = 'multimodal.flamingo'
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  suffix = ':tiny' if a.tiny else ''
  c.frozen.vision = dict(spec=f'configs/clip_digits.py{suffix}', workdir='')
  c.frozen.lm = dict(spec=f'configs/gpt_pydoc.py{":variant=tiny" if a.tiny else ""}',
                     workdir='')
  if a.tiny:
    c.model = dict(cross_every=1, cross_heads=2, cross_head_dim=8, cross_mlp_ratio=2,
                   resampler=dict(num_latents=4, depth=1, num_heads=2, head_dim=8))
    c.task_kwargs = dict(text_length=48)
    c.batch_size = 8
  else:
    # The LM is 4 layers of width 256; the image tower gives 16 tokens of width 64.
    c.model = dict(cross_every=1, cross_heads=4, cross_head_dim=64, cross_mlp_ratio=2,
                   resampler=dict(num_latents=8, depth=2, num_heads=4, head_dim=16,
                                  mlp_ratio=4))
    c.task_kwargs = dict(text_length=48)
    c.batch_size = 32
  c.total_steps = 600
  c.log_every = 50
  c.eval_every = 200
  c.ckpt_every = 200
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.01)
  c.lr = 1e-3
  c.warmup_steps = 50
  c.grad_clip_norm = 1.0
  c.sample.prompt = 'Q: What digit is this? A:'
  c.sample.max_new_tokens = 8
  c.sample.temperature = 0.0
  c.sample.tokenizer = 'byte'  # the frozen LM's (the data are images)
  return c
