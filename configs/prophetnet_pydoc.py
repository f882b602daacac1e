"""ProphetNet (Qi et al. 2020): future n-gram prediction with n-stream self-attention, on
the English text of Python's help() topics (`pydoc_text`), byte-level, under MASS's span
masking as the paper pre-trains it: each 128-byte window hides one contiguous fragment of
half its bytes from the encoder (80% <mask>, 10% random, 10% kept); the decoder reads the
fragment shifted right (<mask> elsewhere) and its n = 2 predicting streams predict each
fragment byte from the bytes before it (stream 1) and from those before the previous one
(stream 2); the loss weighs the two streams equally (arch/sequence/prophetnet.py).

  python -m train --config configs/prophetnet_pydoc.py --workdir runs/prophetnet_pydoc
  python -m train.summary --config configs/prophetnet_pydoc.py:variant=large

Arguments: `variant=tiny` (default: 1+1 layers, width 64, 2 heads: MASS's tiny; tests use
it), `small` (2+2 layers, width 128, 4 heads: MASS's and bart_pydoc's small) or `large`:
Hugging Face's microsoft/prophetnet-large-uncased (vocabulary 30522, 512 position rows,
12+12 layers, width 1024, 16 heads; `train.summary` equals ProphetNetForConditionalGeneration's
parameter count, 391,321,600).

Measured: see README (the ProphetNet row). 2,000 steps by default: it leaves the unigram
plateau late (near step 750-1,000 at tiny; at 600 steps tiny and small still predicted the
most frequent byte everywhere, accuracy 0.213); 2,000 steps give validation accuracy 0.366.
"""

from train import config_lib
from train.errors import UserError

SIZES = {
    'tiny': dict(num_encoder_layers=1, num_decoder_layers=1, num_heads=2, embed_dim=64,
                 mlp_dim=256),
    'small': dict(num_encoder_layers=2, num_decoder_layers=2, num_heads=4, embed_dim=128,
                  mlp_dim=512),
}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='tiny')
  c = config_lib.base()
  c.task = 'sequence.prophetnet'
  c.task_kwargs = dict(fragment_ratio=0.5, mask_prob=0.8, random_prob=0.1, gamma=1.0)
  c.model_name = 'sequence.prophetnet'
  if a.variant == 'large':
    from arch.sequence import prophetnet
    c.model = dict(prophetnet.LARGE, dropout_rate=0.1, attention_dropout_rate=0.1,
                   activation_dropout_rate=0.1)
  elif a.variant in SIZES:
    # 130 position rows: the 128-byte window, row 0 (padding) and the streams' one ahead.
    c.model = dict(SIZES[a.variant], vocab_size=260, max_positions=130, ngram=2)
  else:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(SIZES)}, large')
  c.data.name = 'pydoc_text'
  c.data.eval_split = 'validation'
  c.data.tokenizer = 'byte'
  c.data.text_features = ('text',)
  c.data.pack = 128
  c.batch_size = 16
  c.total_steps = 2000
  c.log_every = 100
  c.eval_every = 500
  c.ckpt_every = 500
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.99, weight_decay=0.01)
  c.lr = 1e-3
  c.warmup_steps = 50
  c.grad_clip_norm = 1.0
  return c
