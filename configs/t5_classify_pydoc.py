"""Fine-tuning T5's encoder for text classification: configs/bert_classify_pydoc.py's task
(the docs file of a pydoc passage, `pydoc_chapters`) on the encoder half of
configs/t5_pydoc.py (its shared embedding and encoder stack with its relative position
bias and final RMS norm; the decoder stays behind), the mean of its outputs over the real
tokens into a new 9-way layer (arch/sequence/encoder_heads.py).

  python -m train --config configs/t5_pydoc.py --workdir runs/t5_pydoc
  python -m train --config configs/t5_classify_pydoc.py:src=runs/t5_pydoc --workdir runs/cls_t5
  python -m train --config configs/t5_classify_pydoc.py:init=scratch --workdir runs/cls_t50

Arguments: `init=t5|scratch` (default t5), `src` (a trained t5_pydoc workdir; empty:
t5_pydoc is trained into WORKDIR/frozen_t5 first), `tiny` (tests: t5_pydoc's tiny sizes,
batch 8), `task` (chapters|order|spell) as configs/bert_classify_pydoc.py's.

Measured on the 2-core CPU (2026-12-07, 1 device, jit, load 10-13), 200 steps of batch 32,
AdamW lr 3e-4 (configs/recipes.py encoder_fine_tuning), seeds 0 and 1; the source the
1,000-step t5_pydoc run (validation token accuracy 0.394):

                   test accuracy (step 100 / 200)        balanced accuracy (200)
  from t5_pydoc    0.362 / 0.395, 0.376 / 0.386          0.205, 0.184
  from scratch     0.361 / 0.414, 0.397 / 0.417          0.216, 0.229

4-8 min wall each. No gain: as for BERT and BART, the pre-trained encoder is no better a
start than a random one on this task (configs/bert_classify_pydoc.py says why). On
`task=order` (seed 0) neither arm leaves chance in 200 steps: 0.502 and 0.502.
"""

from arch.sequence import encoder_heads
from configs import bert_classify_pydoc, t5_pydoc
from train import config_lib
from train.errors import UserError

SOURCE = 'configs/t5_pydoc.py'


def get_config(arg=None):
  a = config_lib.parse_arg(arg, init='t5', src='', tiny=False, task='chapters')
  if a.init not in ('t5', 'scratch'):
    raise UserError(f"init={a.init!r}; valid: 't5', 'scratch'")
  c = bert_classify_pydoc.get_config(f'init=scratch,tiny={a.tiny},task={a.task}')
  variant = 'tiny' if a.tiny else 'small'
  c.model = dict(num_classes=c.model.num_classes, encoder_name='sequence.t5',
                 encoder=dict(t5_pydoc.SIZES[variant], vocab_size=260), pool='mean',
                 dropout_rate=0.1)
  if a.init == 't5':
    c.frozen.t5 = dict(spec=f'{SOURCE}:variant={variant}', workdir=a.src)
    c.init_from.frozen = 't5'
    c.init_from.update(encoder_heads.encoder_decoder_init_from())
  return c
