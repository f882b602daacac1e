"""Fine-tuning BART's encoder for text classification: configs/bert_classify_pydoc.py's task
(the docs file of a pydoc passage, `pydoc_chapters`) on the encoder half of
configs/bart_pydoc.py (its shared embedding and encoder stack; the decoder stays behind),
the mean of its outputs over the real tokens into a new 9-way layer.

  python -m train --config configs/bart_pydoc.py --workdir runs/bart_pydoc
  python -m train --config configs/bart_classify_pydoc.py:src=runs/bart_pydoc \\
      --workdir runs/cls_bart
  python -m train --config configs/bart_classify_pydoc.py:init=scratch --workdir runs/cls_bart0

Arguments: `init=bart|scratch` (default bart), `src` (a trained bart_pydoc workdir; empty:
bart_pydoc is trained into WORKDIR/frozen_bart first), `tiny` (tests: batch 8), `task`
(chapters|order) as configs/bert_classify_pydoc.py's.

Measured on the 2-core CPU (2026-12-07, 1 device, jit, load 7-17), 200 steps of batch 32,
AdamW lr 3e-4, one seed; the source a bart_pydoc run of 600 steps
(`--config.total_steps=600`: validation token accuracy 0.384, masked 0.385):

                   test accuracy (step 100 / 200)   balanced accuracy (200)
  from bart_pydoc  0.333 / 0.349                    0.171
  from scratch     0.323 / 0.361                    0.166

4 and 14 min wall. No gain at this budget: as with BERT, both arms are near the two
largest chapters (majority 0.287).
"""

from arch.sequence import encoder_heads
from configs import bart_pydoc, bert_classify_pydoc
from train import config_lib
from train.errors import UserError

SOURCE = 'configs/bart_pydoc.py'  # variant=small: bart_pydoc.SMALL over the 260 byte ids


def get_config(arg=None):
  a = config_lib.parse_arg(arg, init='bart', src='', tiny=False, task='chapters')
  if a.init not in ('bart', 'scratch'):
    raise UserError(f"init={a.init!r}; valid: 'bart', 'scratch'")
  c = bert_classify_pydoc.get_config(f'init=scratch,tiny={a.tiny},task={a.task}')
  c.model = dict(num_classes=c.model.num_classes, encoder_name='sequence.bart',
                 encoder=dict(bart_pydoc.SMALL, vocab_size=260), pool='mean', dropout_rate=0.1)
  if a.init == 'bart':
    c.frozen.bart = dict(spec=SOURCE, workdir=a.src)
    c.init_from.frozen = 'bart'
    c.init_from.update(encoder_heads.encoder_decoder_init_from())
  return c
