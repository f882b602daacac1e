"""T5 v1.0 (Raffel et al. 2020) on the offline procedural translation task (dates and
numbers between renderings, byte-level; train/datasets/translation.py), trained from
scratch.

  python -m train --config configs/t5_translate.py --workdir runs/t5_translate
  python -m train.sample --config configs/t5_translate.py --workdir runs/t5_translate \\
      --prompt 'the 21st of September 1904'
  python -m train.summary --config configs/t5_translate.py:variant=base

Arguments: `variant=tiny` (default: 2+2 layers, width 64, trained below), or Hugging
Face's `small|base` (t5-small, t5-base: vocabulary 32128; `train.summary` equals
T5ForConditionalGeneration's parameter count, 60,506,624 and 222,903,552). No label
smoothing; tiny trains without dropout (the published sizes keep HF's 0.1); Adam, warmup,
cosine decay.

Measured (tiny, 1000 steps of batch 128, ~2.6 epochs; CPU, 2 cores shared with other
jobs, load ~5-6): eval on the test split exact_match 0.9585, token_accuracy 0.9973,
loss 0.0087; 11.6 min wall-clock including compilation and the final greedy-decoding
eval. (The same at 1200 steps and lr 3e-3: exact_match 0.959 in 17.8 min under heavier
load; with dropout 0.1 a step took ~1.5x as long.)
"""

from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='tiny')
  c = config_lib.base()
  recipes.translation(c)
  c.task_kwargs = dict(label_smoothing=0.0)
  c.model_name = 'sequence.t5'

  from arch.sequence import t5
  if a.variant in t5.VARIANTS:
    c.model = dict(t5.VARIANTS[a.variant], vocab_size=32128, dropout_rate=0.1)
    c.batch_size = 64
  elif a.variant == 'tiny':
    c.model = dict(t5.TINY, dropout_rate=0.0)  # on CPU dropout costs ~1/3 of the step
    c.batch_size = 128
  else:
    raise UserError(f'unknown variant {a.variant!r}; valid: tiny, {", ".join(t5.VARIANTS)}')

  c.total_steps = 1000
  c.log_every = 100
  c.eval_every = 1000
  c.ckpt_every = 600
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.98, weight_decay=0.0)
  c.lr = 4e-3
  c.warmup_steps = 200
  c.grad_clip_norm = 1.0
  return c
