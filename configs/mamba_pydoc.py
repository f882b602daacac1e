"""Mamba (selective state-space model) language model on the English text of Python's
help() topics (`pydoc_text`), byte-level by default.

  python -m train --config configs/mamba_pydoc.py --workdir runs/mamba_pydoc
  python -m train.sample --config configs/mamba_pydoc.py --workdir runs/mamba_pydoc \\
      --prompt 'The import statement' --num_samples 4 --temperature 0.8 --top_k 40
  python -m train.summary --config configs/mamba_pydoc.py:variant=130m

Arguments: `variant=cpu` (default), `tiny` (tests), or the published size `130m`
(Hugging Face's MambaForCausalLM state-spaces/mamba-130m-hf: vocabulary 50280, tied head;
`train.summary` prints its parameter count, 129,135,360). The published size trains with a
byte-level BPE tokenizer fitted to the train split (`tokenizer=bpe` selects it for any
variant; its vocabulary is the model's, or 8192 for the small variants) on windows of 2048
tokens (the paper's); it is here to be counted and sharded, not trained on this CPU.
`--config.model.scan=parallel` selects the associative scan (the accelerator path;
arch/sequence/mamba.py gives the CPU timings that made 'sequential' the default).

`cpu` is configs/gpt_pydoc.py's default with Mamba's architecture: the same data (32 x 128
bytes a step), steps, optimizer, schedule and dropout 0.1; 7 layers of width 256 (inner
width 512, state 16, convolution 4, step-size rank 16): 3.13 M parameters against GPT's
3.26 M (8 layers, the paper's two Mamba layers per Transformer layer, would be 3.57 M), for
a fair side-by-side. Not yet measured on this machine (issue 16's table does).
"""

from train import config_lib

PUBLISHED = ('130m',)
SMALL = ('cpu', 'tiny')


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu', tokenizer='')
  c = config_lib.base()
  c.task = 'sequence.lm'
  c.model_name = 'sequence.mamba'
  c.data.name = 'pydoc_text'
  c.data.eval_split = 'validation'
  c.data.text_features = ('text',)
  tokenizer = a.tokenizer or ('bpe' if a.variant in PUBLISHED else 'byte')
  c.data.tokenizer = tokenizer

  if a.variant in PUBLISHED:
    from arch.sequence import mamba
    c.model = dict(mamba.VARIANTS[a.variant], vocab_size=50280)
    c.data.vocab_size = 50280
    c.data.pack = 2049
    c.batch_size = 8
  elif a.variant in SMALL:
    vocab_size = 8192 if tokenizer == 'bpe' else 260
    c.data.vocab_size = vocab_size if tokenizer == 'bpe' else 0
    if a.variant == 'cpu':
      c.model = dict(vocab_size=vocab_size, num_layers=7, embed_dim=256, state_dim=16,
                     conv_width=4, expand=2, dropout_rate=0.1)
      c.data.pack = 129
      c.batch_size = 32
    else:
      c.model = dict(vocab_size=vocab_size, num_layers=2, embed_dim=32, state_dim=4,
                     conv_width=4, expand=2)
      c.data.pack = 33
      c.batch_size = 8
  else:
    raise ValueError(f'unknown variant {a.variant!r}; valid: {", ".join(SMALL + PUBLISHED)}')
  c.model.scan = 'sequential'  # the faster on CPU; 'parallel' for accelerators

  c.total_steps = 600
  c.log_every = 50
  c.eval_every = 200
  c.ckpt_every = 200
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.99, weight_decay=0.1)
  c.lr = 2e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.sample.max_new_tokens = 96  # as gpt_pydoc (Mamba itself has no length limit)
  c.sample.temperature = 0.8
  c.sample.top_k = 40
  return c
