"""RWKV-4 (linear-attention recurrent network) language model on the English text of
Python's help() topics (`pydoc_text`), byte-level by default.

  python -m train --config configs/rwkv_pydoc.py --workdir runs/rwkv_pydoc
  python -m train.sample --config configs/rwkv_pydoc.py --workdir runs/rwkv_pydoc \\
      --prompt 'The import statement' --num_samples 4 --temperature 0.8 --top_k 40
  python -m train.summary --config configs/rwkv_pydoc.py:variant=169m

Arguments: `variant=cpu` (default), `tiny` (tests), or the published size `169m`
(Hugging Face's RwkvForCausalLM RWKV/rwkv-4-169m-pile: vocabulary 50277, untied head;
`train.summary` prints its parameter count, 169,342,464). The published size trains with a
byte-level BPE tokenizer fitted to the train split (`tokenizer=bpe` selects it for any
variant; its vocabulary is the model's, or 8192 for the small variants) on windows of 1024
tokens (the Pile models' context); it is here to be counted and sharded, not trained on
this CPU. `--config.model.wkv=chunked` selects the WKV that is parallel within chunks of
`model.chunk_size` positions (arch/sequence/rwkv.py; not timed here).

`cpu` is configs/gpt_pydoc.py's default with RWKV's architecture: the same data (32 x 128
bytes a step), steps, optimizer, schedule and dropout 0.1; 4 layers of width 256 (attention
width 256, channel-mix width 896 rather than RWKV's 4 x 256): 3.29 M parameters against
GPT's 3.26 M, for a fair side-by-side. Not yet measured on this machine (issue 16's table
does).
"""

from train import config_lib

PUBLISHED = ('169m',)
SMALL = ('cpu', 'tiny')


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu', tokenizer='')
  c = config_lib.base()
  c.task = 'sequence.lm'
  c.model_name = 'sequence.rwkv'
  c.data.name = 'pydoc_text'
  c.data.eval_split = 'validation'
  c.data.text_features = ('text',)
  tokenizer = a.tokenizer or ('bpe' if a.variant in PUBLISHED else 'byte')
  c.data.tokenizer = tokenizer

  if a.variant in PUBLISHED:
    from arch.sequence import rwkv
    c.model = dict(rwkv.VARIANTS[a.variant], vocab_size=50277)
    c.data.vocab_size = 50277
    c.data.pack = 1025
    c.batch_size = 8
  elif a.variant in SMALL:
    vocab_size = 8192 if tokenizer == 'bpe' else 260
    c.data.vocab_size = vocab_size if tokenizer == 'bpe' else 0
    if a.variant == 'cpu':
      c.model = dict(vocab_size=vocab_size, num_layers=4, embed_dim=256, ffn_dim=896,
                     dropout_rate=0.1)
      c.data.pack = 129
      c.batch_size = 32
    else:
      c.model = dict(vocab_size=vocab_size, num_layers=2, embed_dim=32)
      c.data.pack = 33
      c.batch_size = 8
  else:
    raise ValueError(f'unknown variant {a.variant!r}; valid: {", ".join(SMALL + PUBLISHED)}')
  c.model.wkv = 'sequential'  # or 'chunked'

  c.total_steps = 600
  c.log_every = 50
  c.eval_every = 200
  c.ckpt_every = 200
  c.optax_name = 'adamw'
  c.optax = dict(b2=0.99, weight_decay=0.1)
  c.lr = 2e-3
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.sample.max_new_tokens = 96  # as gpt_pydoc (RWKV itself has no length limit)
  c.sample.temperature = 0.8
  c.sample.top_k = 40
  return c
