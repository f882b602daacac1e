"""BART (Lewis et al. 2020) denoising on the English text of Python's help() topics
(`pydoc_text`), byte-level: text infilling (Poisson(3) spans over 30% of each 128-byte
window, one <mask> per span); the decoder rebuilds the window.

  python -m train --config configs/bart_pydoc.py --workdir runs/bart_pydoc
  python -m train.summary --config configs/bart_pydoc.py:variant=base

Arguments: `variant=small` (default: 2+2 layers, width 128, 4 heads, trained below), `tiny`
(tests), or the published sizes `base|large` (Hugging Face's facebook/bart-base and
facebook/bart-large: vocabulary 50265, 1024 positions; `train.summary` equals
BartForConditionalGeneration's parameter count, 139,420,416 and 406,291,456).

Measured on a 2-core x86-64 CPU shared with other jobs (2026-11, 1 device, jit, load
average about 6.5): 1,800 steps of batch 8 in 9 min 56 s wall; validation `loss` 1.750
nats per byte (perplexity 5.76), `token_accuracy` 0.520, `masked_token_accuracy` 0.522.
At this budget the decoder is a good byte-level LM that barely reads the source (masked
and kept tokens are predicted equally well): copying through cross-attention over 128
learned positions has not emerged yet; it needs longer training (a 32-byte copy task
learns it in ~150 steps, a 128-byte one not within 300).
"""

from train import config_lib
from train.errors import UserError

SMALL = dict(num_encoder_layers=2, num_decoder_layers=2, num_heads=4, embed_dim=128,
             mlp_dim=512, max_length=128)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='small')
  c = config_lib.base()
  c.task = 'sequence.denoise'
  c.task_kwargs = dict(mask_ratio=0.3, poisson_lambda=3.0, permute_sentences=False,
                       sentence_end_ids=(), src_length=0)  # 0: data.pack
  c.model_name = 'sequence.bart'
  c.data.name = 'pydoc_text'
  c.data.eval_split = 'validation'
  c.data.tokenizer = 'byte'
  c.data.text_features = ('text',)
  c.data.pack = 128

  if a.variant in ('base', 'large'):
    from arch.sequence import bart
    c.model = dict(bart.VARIANTS[a.variant], vocab_size=50265, max_length=1024,
                   dropout_rate=0.1)
    c.batch_size = 8
  elif a.variant == 'small':
    c.model = dict(SMALL, vocab_size=260)
    c.batch_size = 8  # on 2 CPU cores, more small steps beat fewer large ones
  elif a.variant == 'tiny':
    c.model = dict(vocab_size=260, num_encoder_layers=1, num_decoder_layers=1, num_heads=2,
                   embed_dim=32, mlp_dim=64, max_length=128)
    c.batch_size = 8
  else:
    raise UserError(f'unknown variant {a.variant!r}; valid: small, tiny, base, large')

  c.total_steps = 1800
  c.log_every = 100
  c.eval_every = 600
  c.ckpt_every = 600
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.99, weight_decay=0.01)
  c.lr = 1e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  return c
