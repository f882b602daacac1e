"""MASS (Song et al. 2019): masked sequence-to-sequence pre-training on the English text of
Python's help() topics (`pydoc_text`), byte-level. Each 128-byte window hides one
contiguous fragment of half its bytes from the encoder (80% <mask>, 10% random, 10%
kept); the decoder, fed the fragment shifted right and <mask> elsewhere, predicts the
fragment alone (arch/sequence/mass.py). The network is BART's layout (post-LN, learned
positions, tied embeddings: arch/sequence/bart.py).

  python -m train --config configs/mass_pydoc.py --workdir runs/mass_pydoc

Arguments: `variant=tiny` (default: 1+1 layers, width 64, 2 heads; tests use it) or
`small` (2+2 layers, width 128, 4 heads: bart_pydoc's small). MASS's paper model (6+6
layers, width 1024, XLM's BPE vocabulary) has no published checkpoint count to match here.

Measured: see README (the MASS row).
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
  if a.variant not in SIZES:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(SIZES)}')
  c = config_lib.base()
  c.task = 'sequence.mass'
  c.task_kwargs = dict(fragment_ratio=0.5, mask_prob=0.8, random_prob=0.1)
  c.model_name = 'sequence.bart'
  c.model = dict(SIZES[a.variant], vocab_size=260, max_length=128)
  c.data.name = 'pydoc_text'
  c.data.eval_split = 'validation'
  c.data.tokenizer = 'byte'
  c.data.text_features = ('text',)
  c.data.pack = 128
  c.batch_size = 16
  c.total_steps = 600
  c.log_every = 100
  c.eval_every = 300
  c.ckpt_every = 300
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.99, weight_decay=0.01)
  c.lr = 1e-3
  c.warmup_steps = 50
  c.grad_clip_norm = 1.0
  return c
