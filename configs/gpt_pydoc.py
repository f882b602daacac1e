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
the model's, or 8192 for the small variants). The GPT-3 sizes of Brown et al. 2020's table
2.1, `gpt3-small|gpt3-medium|gpt3-large|gpt3-xl|gpt3-2.7b|gpt3-6.7b|gpt3-13b|gpt3-175b`, are
the same layout at 2048 positions (arch/sequence/gpt.py `GPT3`: dense attention in every
layer, not the paper's alternating locally banded layers); `train.summary` prints
125,226,240 / 355,871,744 / 760,300,032 / 1,315,723,264 / 2,651,553,280 / 6,658,404,352 /
12,853,386,240 / 174,604,259,328 against the paper's 125M / 350M / 760M / 1.3B / 2.7B /
6.7B / 13.0B / 175.0B (each within 2% of the stated figure; medium is the farthest, +1.7%).

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

PUBLISHED = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', 'gpt3-small', 'gpt3-medium',
             'gpt3-large', 'gpt3-xl', 'gpt3-2.7b', 'gpt3-6.7b', 'gpt3-13b', 'gpt3-175b')


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu', tokenizer='')
  published = {}
  if a.variant in PUBLISHED:
    from arch.sequence import gpt
    model = dict(dict(max_length=1024), **gpt.VARIANTS[a.variant])  # GPT-3's are 2048
    published = {a.variant: (model, 50257, model['max_length'] + 1)}
  return recipes.pydoc_lm(
      'sequence.gpt', a.variant, a.tokenizer, published=published or dict.fromkeys(PUBLISHED),
      cpu=dict(num_layers=4, num_heads=4, embed_dim=256, max_length=128, dropout_rate=0.1),
      tiny=dict(num_layers=2, num_heads=2, embed_dim=32, max_length=64))
