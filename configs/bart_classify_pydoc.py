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
(chapters|order|spell) as configs/bert_classify_pydoc.py's.

Measured on the 2-core CPU (2026-12-07, 1 device, jit, load 7-17), 200 steps of batch 32,
AdamW lr 3e-4, one seed; the source a bart_pydoc run of 600 steps
(`--config.total_steps=600`: validation token accuracy 0.384, masked 0.385):

                   test accuracy (step 100 / 200)   balanced accuracy (200)
  from bart_pydoc  0.333 / 0.349                    0.171
  from scratch     0.323 / 0.361                    0.166

4 and 14 min wall. No gain at this budget: as with BERT, both arms are near the two
largest chapters (majority 0.287).

From the full 3,000-step bart_pydoc run (the default; validation token accuracy 0.702,
copied bytes 0.774, infilled 0.538), 2026-12-07, load 6-17, fresh workdirs:

                          test accuracy                           test loss   balanced
  200 steps, seed 0       (step 100 / 200)                        (at the end)
    from bart_pydoc       0.330 / 0.354                           1.792       0.178
    from scratch          0.323 / 0.361                           1.832       0.166
  600 steps (`--config.total_steps=600 --config.eval_every=200`; steps 200 / 400 / 600)
    from bart_pydoc  s0   0.378 / 0.438 / 0.417                   1.639       0.259
                     s1   0.397 / 0.434 / 0.438                   1.662       0.282
                     s2   0.398 / 0.422 / 0.414                   1.675       0.269
    from scratch     s0   0.371 / 0.412 / 0.421                   1.697       0.245
                     s1   0.373 / 0.415 / 0.400                   1.728       0.230
                     s2   0.388 / 0.419 / 0.422                   1.687       0.247

(200 steps: 5 min wall each at load 14; 600 steps: 14 min each for seed 0 at load 13-17, 8
min for seed 1 at load 6-12, 5 min for seed 2 at load 5; two at a time.) The pre-trained
encoder fits the training passages faster (train accuracy at step 600 0.524 / 0.527 / 0.523
vs 0.471 / 0.464 / 0.487) and is ahead in every seed in test loss (mean 1.659 vs 1.704) and
balanced accuracy (0.270 vs 0.241), but not in test accuracy (mean 0.423 vs 0.414; -0.004,
+0.038, -0.008 by seed; at step 400 +0.026, +0.019, +0.003): a small gain in loss and in the
smaller chapters, none beyond seed noise in accuracy.
`task=spell` (configs/bert_classify_pydoc.py; 400 steps, seed 0, 9 min at load 13-14):
0.500 from bart_pydoc vs 0.502 from scratch, both at chance throughout, though a
logistic regression on character bigrams separates it (0.966).
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
