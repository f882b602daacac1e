"""The Transformer (Vaswani et al. 2017) on the offline procedural translation task
(dates and numbers between renderings, byte-level; train/datasets/translation.py).

  python -m train --config configs/transformer_translate.py --workdir runs/transformer_translate
  python -m train.sample --config configs/transformer_translate.py \\
      --workdir runs/transformer_translate --prompt 'the 21st of September 1904'
  python -m train.summary --config configs/transformer_translate.py:variant=base

Arguments: `variant=tiny` (default: 2+2 layers, width 64, trained below), or the paper's
`base|big` (table 3: shared 37000-token vocabulary, tied embeddings; `train.summary`
gives 63,082,496 and 214,245,376 parameters; the paper's table 3 lists 65M and 213M).
Label smoothing 0.1 and dropout 0.1 as in the paper; Adam (the paper's betas), warmup,
cosine decay.

Measured (tiny, 1200 steps of batch 128, ~3 epochs; CPU, 2 cores shared with other jobs,
load ~5): eval on the test split exact_match 0.962, token_accuracy 0.9978, loss 0.068;
13 min wall-clock including compilation and the final greedy-decoding eval. (At step 1000
of a 2000-step schedule: exact_match 0.9475.)
"""

from configs import recipes
from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='tiny')
  c = config_lib.base()
  recipes.translation(c)
  c.task_kwargs = dict(label_smoothing=0.1)
  c.model_name = 'sequence.transformer'

  from arch.sequence import transformer
  if a.variant in transformer.VARIANTS:
    c.model = dict(transformer.VARIANTS[a.variant], vocab_size=37_000, dropout_rate=0.1)
    c.batch_size = 64
  elif a.variant == 'tiny':
    c.model = dict(transformer.TINY, dropout_rate=0.1)
    c.batch_size = 128
  else:
    raise UserError(f'unknown variant {a.variant!r}; valid: tiny, '
                    f'{", ".join(transformer.VARIANTS)}')

  c.total_steps = 1200
  c.log_every = 100
  c.eval_every = 1200
  c.ckpt_every = 600
  c.optax_name = 'adamw'
  c.optax = dict(b1=0.9, b2=0.98, weight_decay=0.0)  # the paper's betas
  c.lr = 3e-3
  c.warmup_steps = 200
  c.grad_clip_norm = 1.0
  return c
