"""RNNsearch, the encoder-decoder with additive (Bahdanau) attention (Bahdanau, Cho &
Bengio 2014), on the offline procedural translation task (dates and numbers between
renderings, byte-level; train/datasets/translation.py).

  python -m train --config configs/seq2seq_translate.py --workdir runs/seq2seq_translate
  python -m train.sample --config configs/seq2seq_translate.py \\
      --workdir runs/seq2seq_translate --prompt 'the 21st of September 1904' --beam_size 4

Arguments: `variant=cpu` (default: bidirectional GRU encoder and GRU decoder of 128
units, 64-dim embeddings, 128-dim alignment, 64 maxout units, over the 260 byte ids),
`tiny` (tests), or the paper's `rnnsearch50` (620-dim embeddings, 1000 units, 30k-word
vocabularies: 80,443,000 parameters in `train.summary`).

Measured: see the README table (eval `exact_match` on the 2,000 test pairs).
"""

from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu')
  c = config_lib.base()
  config_lib.translation(c)
  c.model_name = 'sequence.rnnsearch'
  if a.variant == 'cpu':
    c.model = dict(variant='tiny', src_vocab_size=260, tgt_vocab_size=260, embed_dim=64,
                   hidden_dim=128, align_dim=128, maxout_dim=64)
  elif a.variant == 'tiny':
    c.model = dict(variant='tiny', src_vocab_size=260, tgt_vocab_size=260)
  elif a.variant == 'rnnsearch50':
    c.model = dict(variant='rnnsearch50')
  else:
    raise UserError(f'unknown variant {a.variant!r}; valid: cpu, tiny, rnnsearch50')
  c.batch_size = 64
  c.total_steps = 3000
  c.log_every = 100
  c.eval_every = 1000
  c.ckpt_every = 1000
  c.optax_name = 'adam'
  c.lr = 3e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  return c
