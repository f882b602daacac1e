"""ALIGN (Jia et al. 2021) on the offline digits: CLIP's objective and captions
(configs/clip_digits.py) with ALIGN's towers, small: an EfficientNet (B0's table at
width 0.25, depth 0.5, no head conv; its 80-wide pooled output is the image embedding) on
16x16 inputs, a BERT text encoder over bytes (arch/sequence/bert.py TINY: 2 post-norm
layers, width 64) read at its first token, a text projection with a bias, the temperature
starting at 1. Eval: zero-shot accuracy from held-out prompts, linear probe, k-NN.

  python -m train --config configs/align_digits.py --workdir runs/align_digits

Arguments: `variant=B7-base` (HF's AlignConfig(): EfficientNet-B7 trunk + BERT-base,
embeddings 640, 289x289 RGB; `train.summary` prints HF's 172,117,841; not trained
here),
`tiny` (tests).

Measured on a 2-core x86-64 CPU shared with other jobs (2026-11, 1 device, jit, load
average about 10): 600 steps of batch 128 in 313 s wall (about 2.5 steps/s), final test
zero-shot accuracy 0.9278 (334/360; 0.7222 at step 300), linear probe 0.9278, k-NN
0.9306; 301,735 parameters (EfficientNet 172,438, BERT 124,096, text projection 5,200,
logit scale 1; the run also carried BERT's 4,678-parameter pre-training heads, unused,
since dropped); the temperature went from 1 to 1/2.33.
"""

from arch.multimodal import clip
from arch.sequence import bert
from configs import recipes
from train import config_lib, evaluators
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='digits', tiny=False)
  c = config_lib.base()
  recipes.digits(c, size=16)
  c.task = 'multimodal.clip'
  c.task_kwargs = dict(input_size=(16, 16), channels=1, augment={}, embed_dim=80,
                       image_projection=False, text_model_name='sequence.bert',
                       text_model=dict(bert.TINY, max_length=48, pretraining_heads=False), text_pool='first',
                       text_projection_bias=True, logit_scale_init=0.0, text_length=48,
                       class_names=clip.DIGIT_NAMES,
                       train_templates=clip.DIGIT_TRAIN_TEMPLATES,
                       eval_templates=clip.DIGIT_EVAL_TEMPLATES)
  c.model_name = 'vision.efficientnet'
  c.model = dict(width_mult=0.25, depth_mult=0.5, stochastic_depth=0.1, head_ratio=0)
  c.evals.linear_probe = evaluators.entry('linear_probe')
  c.evals.knn = evaluators.entry('knn')
  c.batch_size = 128

  if a.tiny:
    c.model.update(depth_mult=0.25)
    c.task_kwargs.text_model.update(num_layers=1, embed_dim=16, num_heads=2)
    c.batch_size = 8
  elif a.variant in clip.ALIGN_VARIANTS:
    v = clip.ALIGN_VARIANTS[a.variant]
    c.model = dict(v['vision'])
    c.task_kwargs.update(input_size=(289, 289), channels=3, embed_dim=v['embed_dim'],
                         text_model=v['text'], text_length=64)
  elif a.variant != 'digits':
    raise UserError(f"unknown variant {a.variant!r}; valid: digits, "
                    f"{', '.join(clip.ALIGN_VARIANTS)}")

  c.total_steps = 600
  c.log_every = 100
  c.eval_every = 300
  c.ckpt_every = 600
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.1)
  c.lr = 2e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  return c
