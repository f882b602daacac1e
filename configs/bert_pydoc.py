"""BERT (Devlin et al. 2019) pre-trained with masked-LM + next-sentence prediction on the
pydoc text (byte-level tokens, windows of 128 consecutive tokens).

  python -m train --config configs/bert_pydoc.py --workdir runs/bert_pydoc
  python -m train.summary --config configs/bert_pydoc.py:variant=base

Arguments: `variant=tiny|base|large` (default tiny: the CPU model below). `base` and
`large` are bert-base-uncased / bert-large-uncased (vocabulary 30522, 512 positions);
`train.summary` prints Hugging Face BertForPreTraining's counts, 110,106,428 and
336,226,108.

The tiny model: 4 post-LN layers of width 128 (4 heads, MLP 512) over the 260 byte ids,
877,062 parameters; batch 32 windows, 800 steps (about 8 passes over the 3,147 train
windows), AdamW lr 2e-3, 100 warmup steps, cosine decay.
Measured on a 2-core x86-64 CPU (2026-11, 1 device, jit), shared with other jobs (load
average 6-8; the run got 62% of one core, 565 CPU-seconds): 15 min wall, about 1 step/s.
Validation (496 windows): masked-token accuracy 0.364 (mlm_loss 2.56; always guessing
the most frequent byte, a space, scores 0.209), NSP accuracy 0.53. The validation
documents are easier than the train ones: the same checkpoint scores 0.272 on the train
split (where the most frequent byte scores 0.180). NSP at chance: 64-byte
segments give it little to go on in 800 steps. lr 1e-3 gave 0.360.
"""

from arch.sequence import bert
from train import config_lib
from train.errors import UserError

# The CPU model: 4 post-LN layers of width 128 over the 260 byte-level ids.
SMALL = dict(bert.TINY, num_layers=4, num_heads=4, embed_dim=128)
# The published sizes with the masked-LM and next-sentence heads.
PRETRAINING = [k for k, v in bert.VARIANTS.items() if v.get('pretraining_heads', True)]


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='tiny')
  c = config_lib.base()
  if a.variant == 'tiny':
    model = dict(SMALL)
  elif a.variant in PRETRAINING:
    model = dict(bert.VARIANTS[a.variant])
  else:  # the encoder-only sizes (no MLM head) are configs/tinybert_pydoc.py's
    raise UserError(f'unknown variant {a.variant!r}; valid: tiny, {", ".join(PRETRAINING)}')
  c.model_name = 'sequence.bert'
  c.model = model
  c.task = 'sequence.mlm'
  c.task_kwargs = dict(mask_rate=0.15, nsp=True)

  c.data.name = 'pydoc_text'
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.data.tokenizer = 'byte'
  c.data.text_features = ('text',)
  c.data.pack = 128

  c.batch_size = 32
  c.total_steps = 800
  c.log_every = 100
  c.eval_every = 400
  c.ckpt_every = 400
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.01, b2=0.98)
  c.lr = 2e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  return c
