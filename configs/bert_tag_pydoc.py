"""Fine-tuning BERT for token tagging (`config.init_from`): each byte of the Python code in
pydoc's help() topics tagged as identifier, keyword, string literal, number, comment or
other token text, the labels Python's own `tokenize` gives (`pydoc_code`: 126-byte windows
of 92 distinct snippets, a fifth of the snippets held out), by a new per-token layer on the
encoder (arch/sequence/encoder_heads.py `Tagger`, arch/sequence/tagging.py), the encoder
either configs/bert_pydoc.py's pre-trained one or random.

  python -m train --config configs/bert_pydoc.py --workdir runs/bert_pydoc
  python -m train --config configs/bert_tag_pydoc.py:src=runs/bert_pydoc --workdir runs/tag_bert
  python -m train --config configs/bert_tag_pydoc.py:init=scratch --workdir runs/tag_scratch

Arguments as configs/bert_classify_pydoc.py's: `init=bert|scratch`, `src` (empty: bert_pydoc
trained into WORKDIR/frozen_bert first), `tiny` (tests: batch 8). Eval: accuracy over the
tagged (non-whitespace) bytes of the test windows; precision, recall and F1 of tag 1
(identifier).

Measured on the 2-core CPU (2026-12-07, 1 device, jit, load 11-17), 200 steps of batch 16
(about 21 passes over the 149 train windows), AdamW lr 3e-4, one seed, the source the
step-400 bert_pydoc run of configs/bert_classify_pydoc.py; 35 test windows (2,120 tagged
bytes, 0.316 of them identifiers):

                   accuracy (step 100 / 200)   identifier P / R / F1 (200)
  from bert_pydoc  0.656 / 0.693               0.720 / 0.709 / 0.714
  from scratch     0.579 / 0.575               0.561 / 0.782 / 0.653

About 13 and 9.5 min wall. Both fit the train windows better (train accuracy 0.756 / 0.743
at step 200): with 98 train snippets the pre-trained encoder generalises 11.8 points better.
"""

from arch.sequence import encoder_heads
from configs import bert_pydoc, recipes
from configs.bert_classify_pydoc import SOURCE
from train import config_lib
from train.datasets import pydoc_code


def get_config(arg=None):
  a = config_lib.parse_arg(arg, init='bert', src='', tiny=False)
  c = config_lib.base()
  encoder = dict(bert_pydoc.SMALL)
  num_tags = len(pydoc_code.TAGS)
  c.task = 'sequence.tagging'
  c.task_kwargs = dict(num_tags=num_tags, length=pydoc_code.LENGTH)
  c.model_name = 'sequence.encoder_heads:Tagger'
  c.model = dict(num_tags=num_tags, encoder=encoder, dropout_rate=0.1)
  recipes.encoder_fine_tuning(c, dataset='pydoc_code', init=a.init, src=a.src, source='bert',
                              source_spec=SOURCE,
                              init_paths=encoder_heads.bert_init_from(encoder['num_layers']))
  c.batch_size = 8 if a.tiny else 16
  return c
