"""DistilBERT (Sanh et al. 2019): the pydoc BERT of configs/bert_pydoc.py distilled with
soft targets at temperature 2, the masked-LM loss and the cosine loss between the last
hidden states (Hugging Face's weights 5 / 2 / 1; arch/compress/distill_lm.py).

  python -m train --config configs/distilbert_pydoc.py --workdir runs/distilbert_pydoc \
      --config.frozen.teacher.workdir=runs/bert_pydoc
  python -m train.summary --config configs/distilbert_pydoc.py:variant=distilbert-base

The teacher is a frozen run, as in configs/tinybert_pydoc.py (trained first into
WORKDIR/frozen_teacher unless `--config.frozen.teacher.workdir` names one).

Arguments: `variant=half|small` (default half, the paper's student: half the teacher's
layers at its width, 2 layers of 128, started from the teacher's layers 0 and 2, its
embeddings and heads; small: 4 layers of width 64, of which only the output biases fit a
teacher tensor, its cosine loss read through a learned 64 -> 128 map; mobile, as in
configs/tinybert_pydoc.py), `method=distilbert|tinybert|none`,
`variant=distilbert-base|tinybert-4l-312d|mobilebert` (published sizes, Hugging Face's
DistilBertModel 66,362,880, BertModel 14,350,248, MobileBertModel 24,844,544, for
train.summary), `tiny` (tests).

Measured on the 2-core CPU (2026-12-06, 1 device, jit) while other jobs shared it, each
from a fresh workdir with the teacher of configs/tinybert_pydoc.py (/work/runs_distill/teacher,
validation masked-token accuracy 0.3645; 0.3435 at its step 400), 400 student steps of
batch 32, AdamW lr 2e-3, validation (496 windows):
  distilbert, half: masked-token accuracy 0.3664 (mlm_loss 2.529), agreeing with the
      teacher on 0.988 of the masked bytes; 10.7 min wall, load average 7.6-13;
  none, half:       0.3420 (mlm_loss 2.669), from its own initialisation; 3.4 min wall,
      load average 5-7.6.
The half-depth student starts from the teacher's layers 0 and 2 and its embeddings and
heads (its train accuracy over the first 100 steps, 0.273, already the teacher's 0.273)
and after 400 steps ends level with the teacher, with 55% of its parameters; trained
alone it ends 0.024 lower.
variant=small (4 layers of 64, nothing copied) was not measured for lack of time; the
same student under TinyBERT reached 0.3571, alone 0.3159 (configs/tinybert_pydoc.py).
"""

from configs import tinybert_pydoc


def get_config(arg=None):
  arg = arg or ''
  if 'variant=' not in arg:
    arg = ','.join(filter(None, ['variant=half', arg]))
  return tinybert_pydoc.build(arg, 'distilbert', 2.0, 'distilbert_pydoc.py')
