"""LLaMA-style decoder (RMSNorm, SwiGLU, rotary positions, grouped-query attention, untied
head) language model on the English text of Python's help() topics (`pydoc_text`),
byte-level by default.

  python -m train --config configs/llama_pydoc.py --workdir runs/llama_pydoc
  python -m train.sample --config configs/llama_pydoc.py --workdir runs/llama_pydoc \\
      --prompt 'The import statement' --num_samples 4 --temperature 0.8 --top_k 40
  python -m train.summary --config configs/llama_pydoc.py:variant=llama2-7b

Arguments: `variant=cpu` (default), `tiny` (tests), or the published sizes
`llama2-7b|tinyllama-1.1b` (Hugging Face's LlamaForCausalLM: vocabulary 32000, untied head;
`train.summary` prints its parameter count, 6,738,415,616 and 1,100,048,384). The published
sizes train with a byte-level BPE tokenizer fitted to the train split (`tokenizer=bpe`
selects it for any variant; its vocabulary is the model's, or 8192 for the small variants);
they are here to be counted and sharded, not trained on this CPU.

`cpu` is configs/gpt_pydoc.py's default with LLaMA's architecture: the same data (32 x 128
bytes a step), steps, optimizer, schedule and dropout 0.1; 4 layers, width 256, 4 heads and
2 key/value heads, SwiGLU width 768 (swiglu_width(256)): 3.28 M parameters against GPT's
3.26 M, for a fair side-by-side. Measured 2026-12-06 on the 2-core CPU (1 device, jit, no
other training job): validation 1.509 / 1.308 / 1.256 nats/byte at steps 200 / 400 / 600
(token accuracy 0.662), 10.9 min wall; gpt_pydoc's default, the same data and schedule:
1.948 / 1.491 / 1.381 (its README row: 10.3 min unloaded).
"""

from configs import recipes
from train import config_lib

PUBLISHED = ('llama2-7b', 'tinyllama-1.1b')


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu', tokenizer='')
  published = {}
  if a.variant in PUBLISHED:
    from arch.sequence import llama
    model = llama.VARIANTS[a.variant]
    published = {a.variant: (model, 32000, model['max_length'] + 1)}
  return recipes.pydoc_lm(
      'sequence.llama', a.variant, a.tokenizer, published=published or dict.fromkeys(PUBLISHED),
      cpu=dict(num_layers=4, num_heads=4, num_kv_heads=2, embed_dim=256, mlp_dim=768,
               max_length=128, dropout_rate=0.1),
      tiny=dict(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, mlp_dim=64,
                max_length=64))
