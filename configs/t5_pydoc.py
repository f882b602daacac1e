"""T5 v1.0 (Raffel et al. 2020) pre-trained by denoising the English text of Python's help()
topics (`pydoc_text`), byte-level: the network of configs/t5_translate.py (relative position
bias, RMS norms, pre-norm blocks, tied head) under configs/bart_pydoc.py's objective (text
infilling: Poisson(3) spans over 30% of each 128-byte window, one <mask> per span, the
decoder rebuilds the window; arch/sequence/denoise.py). T5's own objective (sentinel ids,
the target holds only the dropped spans) is one of the variants its paper compares with this
one; the infilling task is the one this codebase has. The source run of
configs/t5_classify_pydoc.py (its encoder half).

  python -m train --config configs/t5_pydoc.py --workdir runs/t5_pydoc

Arguments: `variant=small` (default: 2+2 layers, width 128, 4 heads of 32, MLP 512, the
size of bart_pydoc's small) or `tiny` (tests: 1+1 layers, width 32).

Measured on the 2-core CPU (2026-12-07, 1 device, jit, shared: load 12-19), small, 1,000
steps of batch 8: 21 min wall; validation token accuracy 0.394 (loss 2.227 nats/byte),
kept bytes 0.395 and infilled 0.392 alike: like bart_pydoc before step ~1,000, a byte
language model that does not copy its source yet.
"""

from train import config_lib
from train.errors import UserError

SIZES = {
    'small': dict(num_encoder_layers=2, num_decoder_layers=2, num_heads=4, embed_dim=128,
                  head_dim=32, mlp_dim=512),
    'tiny': dict(num_encoder_layers=1, num_decoder_layers=1, num_heads=2, embed_dim=32,
                 head_dim=16, mlp_dim=64),
}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='small')
  if a.variant not in SIZES:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(SIZES)}')
  c = config_lib.base()
  c.task = 'sequence.denoise'
  c.task_kwargs = dict(mask_ratio=0.3, poisson_lambda=3.0, permute_sentences=False,
                       sentence_end_ids=(), src_length=0)  # 0: data.pack
  c.model_name = 'sequence.t5'
  c.model = dict(SIZES[a.variant], vocab_size=260, dropout_rate=0.0)
  c.data.name = 'pydoc_text'
  c.data.eval_split = 'validation'
  c.data.tokenizer = 'byte'
  c.data.text_features = ('text',)
  c.data.pack = 128
  c.batch_size = 8
  c.sample.max_new_tokens = 0  # the window length
  c.sample.temperature = 0.0
  c.total_steps = 1000
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.99, weight_decay=0.01)
  c.lr = 1e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  return c
