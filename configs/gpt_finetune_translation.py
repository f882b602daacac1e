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
