"""Fine-tuning from a run (`config.init_from`): the byte-level GPT of configs/gpt_pydoc.py,
pretrained on English prose (Python's pydoc topics), goes on as a language model of a small
slice of the offline translation pairs (the first `pairs` train pairs as text, each source
and target followed by </s>, packed into 129-byte windows), against the same network from
scratch for the same steps; validation loss (nats per byte) on the 1,000 validation pairs.

  python -m train --config configs/gpt_pydoc.py --workdir runs/gpt_pydoc
  python -m train --config configs/gpt_finetune_translation.py --workdir runs/gpt_ft \\
      --config.init_from.workdir=runs/gpt_pydoc
  python -m train --config configs/gpt_finetune_translation.py --workdir runs/gpt_scratch

Arguments: `pairs` (default 2000), `tiny` (tests: the tiny GPT).

Measured 2026-12-06 (2-core CPU, 1 device, jit; the pretraining run is gpt_pydoc's default,
600 steps, its validation 1.381 nats/byte on pydoc text), validation loss in nats per byte
on the 1,000 validation pairs at steps 100 / 200 / 300:

  from the pydoc GPT (init_from)   0.773 / 0.721 / 0.703   (token accuracy 0.736)
  from scratch                     1.136 / 0.834 / 0.791   (token accuracy 0.716)

The pretrained start is ahead at every eval; after 300 steps the scratch run is still 0.088
nats/byte behind. Other jobs loaded both cores (each run's 300 steps took about 20
minutes), so no wall time is claimed; the step is gpt_pydoc's (same network, batch and
window), whose 600 steps take 10.3 minutes on an idle machine.
"""

from configs import gpt_pydoc
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, pairs=2000, tiny=False)
  c = gpt_pydoc.get_config('variant=tiny' if a.tiny else None)
  c.data.name = 'translation'
  c.data.text_features = ('source', 'target')
  c.data.train_split = f'train[:{a.pairs}]'
  c.data.eval_split = 'validation'
  c.total_steps = 300
  c.log_every = 25
  c.eval_every = 100
  c.ckpt_every = 300
  c.lr = 1e-3
  c.warmup_steps = 30
  c.sample.prompt = 'the 21st of September 1904'
  return c
