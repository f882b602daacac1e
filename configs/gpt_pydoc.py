"""GPT (decoder-only causal Transformer) language model on the English text of Python's
help() topics (`pydoc_text`), byte-level by default.

  python -m train --config configs/gpt_pydoc.py --workdir runs/gpt_pydoc
  python -m train.sample --config configs/gpt_pydoc.py --workdir runs/gpt_pydoc \\
      --prompt 'The import statement' --num_samples 4 --temperature 0.8 --top_k 40

Arguments: `variant=cpu` (default: 4 layers, width 256, 128-byte context, trained below),
`tiny` (tests), or the published sizes `gpt2|gpt2-medium|gpt2-large|gpt2-xl` (Hugging
Face's GPT2LMHeadModel: vocabulary 50257, 1024 positions, tied head; `train.summary`
equals its parameter count). The published sizes train with a byte-level BPE tokenizer
fitted to the train split (`tokenizer=bpe` selects it for any variant; its vocabulary is
the model's, or 8192 for the small variants).

Measured on a 2-core x86-64 CPU (2026-11, 1 device, jit, nothing else running): 600
steps of 32 x 128 bytes (4 layers, width 256, dropout 0.1; 3.2 M parameters) in 10 min
16 s wall, about 1.0 step/s (4,200 tokens/s, MFU 0.45 of the measured CPU matmul peak).
Validation `loss` (nats per byte): 1.948 at step 200, 1.491 at step 400 (reached 6 min
54 s after launch), 1.381 at step 600 (accuracy 0.621, perplexity 3.98). Samples at
temperature 0.8, top-k 40 (seed 0) from the prompt 'The import statement':
'The import statement when that is method instance the tattement and type, import
patterns, it but to the used not re' -- English words, pydoc vocabulary, no syntax yet.
"""

from configs import recipes
from train import config_lib

PUBLISHED = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu', tokenizer='')
  published = {}
  if a.variant in PUBLISHED:
    from arch.sequence import gpt
    published = {a.variant: (dict(gpt.VARIANTS[a.variant], max_length=1024), 50257, 1025)}
  return recipes.pydoc_lm(
      'sequence.gpt', a.variant, a.tokenizer, published=published or dict.fromkeys(PUBLISHED),
      cpu=dict(num_layers=4, num_heads=4, embed_dim=256, max_length=128, dropout_rate=0.1),
      tiny=dict(num_layers=2, num_heads=2, embed_dim=32, max_length=64))
