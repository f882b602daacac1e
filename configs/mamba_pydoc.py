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
a fair side-by-side. Measured 2026-12-07 on the 2-core CPU (1 device, jit), shared with
other jobs (load average 15 falling to 3): validation 1.302 / 1.221 nats/byte at steps 200
/ 400 (token accuracy 0.654 / 0.683), 56 / 74 min wall under that load; gpt_pydoc's default
on the same data and schedule: 1.948 / 1.491 / 1.381 at steps 200 / 400 / 600 (10.3 min
idle), rwkv_pydoc's 1.297 / 1.198 / 1.194. Its step is slower than GPT's: in one script,
8.0 s against GPT's 4.6 s at load 9 (the scan's hand-written gradient, arch/sequence/
mamba.py, took it from 12.1 s), so an idle 600-step run would take about 1.7 x GPT's 10.3
min (not measured idle).
"""

from configs import recipes
from train import config_lib

PUBLISHED = ('130m',)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu', tokenizer='')
  published = {}
  if a.variant in PUBLISHED:
    from arch.sequence import mamba
    published = {a.variant: (mamba.VARIANTS[a.variant], 50280, 2049)}
  c = recipes.pydoc_lm(
      'sequence.mamba', a.variant, a.tokenizer, published=published or dict.fromkeys(PUBLISHED),
      cpu=dict(num_layers=7, embed_dim=256, state_dim=16, conv_width=4, expand=2,
               dropout_rate=0.1),
      tiny=dict(num_layers=2, embed_dim=32, state_dim=4, conv_width=4, expand=2))
  c.model.scan = 'sequential'  # the faster on CPU; 'parallel' for accelerators
  return c
