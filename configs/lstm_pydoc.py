"""A recurrent byte-level language model (LSTM by default; Elman RNN or GRU by argument)
on the English text of Python's help() topics (`pydoc_text`).

  python -m train --config configs/lstm_pydoc.py --workdir runs/lstm_pydoc
  python -m train.sample --config configs/lstm_pydoc.py --workdir runs/lstm_pydoc \\
      --prompt 'The import statement' --temperature 0.8

Arguments: `cell=lstm|gru|rnn`, `tiny` (tests). The published sizes of this family are
Zaremba et al. 2014's word-level PTB models (`arch/sequence/rnn.py` VARIANTS, e.g.
`variant=zaremba_medium`; trained here on BPE tokens).

Measured on the 2-core CPU (2026-11, 1 device, jit) while other jobs shared it (load
average about 8; 33 min of CPU time): 2,000 steps of batch 32 x 128 bytes in 72 min wall,
validation loss 1.270 nats per byte (next-byte accuracy 0.662; 1.447 at step 500);
1,479,428 parameters. Sample at temperature 0.8 after 'The import statement': "The import
statement with an intend the same for the suite, and on the "__del__()" casenable and may
be a class that name body used as an instance of the not found it will argument". (An
earlier session saw this train step stall; that did not recur.)
"""

from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, cell='lstm', tiny=False, variant='')
  c = config_lib.base()
  c.task = 'sequence.lm'
  c.model_name = 'sequence.rnn'
  c.data.name = 'pydoc_text'
  c.data.eval_split = 'validation'
  c.data.tokenizer = 'byte'
  c.data.text_features = ('text',)
  if a.variant:
    from arch.sequence import rnn
    if a.variant not in rnn.VARIANTS:
      raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(rnn.VARIANTS)}')
    c.model = dict(rnn.VARIANTS[a.variant])
    c.data.tokenizer = 'bpe'
    c.data.vocab_size = c.model['vocab_size']
    c.data.pack = 36  # Zaremba et al. unroll 35 steps
    c.batch_size = 20
  elif a.tiny:
    c.model = dict(cell=a.cell, vocab_size=260, embed_dim=16, hidden_dim=32, num_layers=1)
    c.data.pack = 33
    c.batch_size = 8
  else:
    c.model = dict(cell=a.cell, vocab_size=260, embed_dim=128, hidden_dim=512, num_layers=1,
                   dropout_rate=0.1)
    c.data.pack = 129
    c.batch_size = 32
  c.total_steps = 2000
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adam'
  c.lr = 3e-3
  c.warmup_steps = 50
  c.grad_clip_norm = 1.0
  c.sample.max_new_tokens = 200
  c.sample.temperature = 0.8
  return c
