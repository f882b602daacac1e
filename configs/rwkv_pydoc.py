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
`model.chunk_size` positions (arch/sequence/rwkv.py; on this CPU its training step of
the cpu variant is 1.65 s against the time scan's 1.05 s, `train.bench`, 2026-12-06).

`cpu` is configs/gpt_pydoc.py's default with RWKV's architecture: the same data (32 x 128
bytes a step), steps, optimizer, schedule and dropout 0.1; 4 layers of width 256 (attention
width 256, channel-mix width 896 rather than RWKV's 4 x 256): 3.29 M parameters against
GPT's 3.26 M, for a fair side-by-side. Measured 2026-12-06 on the 2-core CPU (1 device,
jit, no other training job): validation 1.297 / 1.198 / 1.194 nats/byte at steps 200 / 400
/ 600 (token accuracy 0.682), 10.5 min wall; gpt_pydoc's default on the same data and
schedule: 1.948 / 1.491 / 1.381 (10.3 min), llama_pydoc's 1.509 / 1.308 / 1.256 (10.9 min).
"""

from configs import recipes
from train import config_lib

PUBLISHED = ('169m',)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu', tokenizer='')
  published = {}
  if a.variant in PUBLISHED:
    from arch.sequence import rwkv
    published = {a.variant: (rwkv.VARIANTS[a.variant], 50277, 1025)}
  c = recipes.pydoc_lm(
      'sequence.rwkv', a.variant, a.tokenizer, published=published or dict.fromkeys(PUBLISHED),
      cpu=dict(num_layers=4, embed_dim=256, ffn_dim=896, dropout_rate=0.1),
      tiny=dict(num_layers=2, embed_dim=32))
  c.model.wkv = 'sequential'  # or 'chunked'
  return c
