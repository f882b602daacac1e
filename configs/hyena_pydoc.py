"""Hyena (implicit long convolutions with data-controlled gating) language model on the
English text of Python's help() topics (`pydoc_text`), byte-level by default.

  python -m train --config configs/hyena_pydoc.py --workdir runs/hyena_pydoc
  python -m train.sample --config configs/hyena_pydoc.py --workdir runs/hyena_pydoc \\
      --prompt 'The import statement' --num_samples 4 --temperature 0.8 --top_k 40
  python -m train.summary --config configs/hyena_pydoc.py:variant=153m

Arguments: `variant=cpu` (default), `tiny` (tests), or the published size `153m` (the
paper's Hyena-153M, the reference code's configs/experiment/pile/hyena.yaml: vocabulary
50257 padded to 50264, tied head, the reference code's recurrence with one long filter;
`train.summary` prints its parameter count, 153,700,416, derived from the reference code's
module tree, see arch/sequence/hyena.py). The published size trains with a byte-level BPE
tokenizer fitted to the train split (`tokenizer=bpe` selects it for any variant; its
vocabulary is the model's, or 8192 for the small variants) on windows of 2048 tokens (the
Pile runs'); it is here to be counted and sharded, not trained on this CPU.
`--config.model.conv=direct` runs the long convolutions as the explicit causal sum instead
of the FFT; `--config.model.recurrence=official` selects the reference code's operator.

`cpu` is configs/gpt_pydoc.py's default with Hyena's architecture: the same data (32 x 128
bytes a step), steps, optimizer, schedule and dropout 0.1; 4 layers of width 256, order 2
(the paper's recurrence: two long filters a layer), filter FFN width 64 on 33 positional
features, MLP width 960 (rather than 4 x 256, to keep the count comparable): 3.30 M
parameters against GPT's 3.26 M. Measured 2026-12-06 on the 2-core CPU (1 device, jit,
`nice -n 10`, the machine shared with other jobs: load average 5.6 at the start, 9-13 for
most of the run, 6.4 at the end): validation 1.390 / 1.270 / 1.225 nats/byte at steps 200 /
400 / 600 (token accuracy 0.676), 51.8 min wall, an upper bound under that load;
gpt_pydoc's default on the same data and schedule: 1.948 / 1.491 / 1.381 (10.3 min
unloaded), llama_pydoc's 1.509 / 1.308 / 1.256, rwkv_pydoc's 1.297 / 1.198 / 1.194.
`train.bench` the same day under load 7-13: 5.4-5.8 s a step (FFT), 6.9 s (conv=direct),
gpt_pydoc 4.9 s between the two Hyena runs.
"""

from configs import recipes
from train import config_lib

PUBLISHED = ('153m',)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='cpu', tokenizer='')
  published = {}
  if a.variant in PUBLISHED:
    from arch.sequence import hyena
    published = {a.variant: (hyena.VARIANTS[a.variant], 50264, 2049)}
  c = recipes.pydoc_lm(
      'sequence.hyena', a.variant, a.tokenizer, published=published or dict.fromkeys(PUBLISHED),
      cpu=dict(num_layers=4, embed_dim=256, mlp_dim=960, max_length=128, dropout_rate=0.1),
      tiny=dict(num_layers=2, embed_dim=32, mlp_dim=64, max_length=32, pos_dim=5,
                filter_dim=16))
  c.model.conv = 'fft'  # or 'direct'
  return c
