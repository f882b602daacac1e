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

from train import config_lib

PUBLISHED = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu', tokenizer='')
  c = config_lib.base()
  c.task = 'sequence.lm'
  c.model_name = 'sequence.gpt'
  c.data.name = 'pydoc_text'
  c.data.eval_split = 'validation'
  c.data.text_features = ('text',)
  tokenizer = a.tokenizer or ('bpe' if a.variant in PUBLISHED else 'byte')
  c.data.tokenizer = tokenizer

  if a.variant in PUBLISHED:
    from arch.sequence import gpt
    c.model = dict(gpt.VARIANTS[a.variant], vocab_size=50257, max_length=1024)
    c.data.vocab_size = 50257
    c.data.pack = 1025
    c.batch_size = 8
  elif a.variant in ('cpu', 'tiny'):
    vocab_size = 8192 if tokenizer == 'bpe' else 260
    c.data.vocab_size = vocab_size if tokenizer == 'bpe' else 0
    if a.variant == 'cpu':
      c.model = dict(vocab_size=vocab_size, num_layers=4, num_heads=4, embed_dim=256,
                     max_length=128, dropout_rate=0.1)
      c.data.pack = 129
      c.batch_size = 32
    else:
      c.model = dict(vocab_size=vocab_size, num_layers=2, num_heads=2, embed_dim=32,
                     max_length=64)
      c.data.pack = 33
      c.batch_size = 8
  else:
    raise ValueError(f'unknown variant {a.variant!r}; valid: cpu, tiny, {", ".join(PUBLISHED)}')

  c.total_steps = 600
  c.log_every = 50
  c.eval_every = 200
  c.ckpt_every = 200
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.99, weight_decay=0.1)
  c.lr = 2e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.sample.max_new_tokens = 96  # prompt + new tokens must fit max_length (128 for cpu)
  c.sample.temperature = 0.8
  c.sample.top_k = 40
  return c
