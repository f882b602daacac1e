"""Fine-tuning BERT for text classification (`config.init_from`): which file of the Python
docs a 126-byte pydoc passage comes from (`pydoc_chapters`: 9 chapters, e.g.
reference/datamodel or library/stdtypes; test passages are held-out blocks of the same
chapters), the [CLS] token's pooled vector into a new 9-way layer
(arch/sequence/encoder_heads.py, arch/sequence/text_classification.py), the encoder either
configs/bert_pydoc.py's pre-trained one or random.

  python -m train --config configs/bert_pydoc.py --workdir runs/bert_pydoc
  python -m train --config configs/bert_classify_pydoc.py:src=runs/bert_pydoc \\
      --workdir runs/cls_bert
  python -m train --config configs/bert_classify_pydoc.py:init=scratch --workdir runs/cls_scratch

Arguments: `init=bert|scratch` (default bert), `src` (a trained bert_pydoc workdir; empty:
bert_pydoc is trained into WORKDIR/frozen_bert first), `tiny` (tests: batch 8),
`task=chapters|order` (default chapters; order: `pydoc_chapters_order`, the same passages
as written or with their words shuffled, 2 classes that no bag of bytes separates). The
encoder's params (embeddings, blocks, pooler) come from the run (`init_from.source` and
`target` pairs, `bert_init_from`); its masked-LM and next-sentence heads stay behind and
the new layer keeps its initialisation.

Measured on the 2-core CPU (2026-12-07, 1 device, jit, shared with other jobs: load
11-17), 200 steps of batch 32 (about 2.7 passes over the 2,386 train passages), AdamW lr
3e-4, fresh workdirs, one seed; the source was a bert_pydoc run stopped at its step-400
checkpoint (of 800; validation masked-token accuracy 0.344, against 0.364 at 800):

                   test accuracy (step 100 / 200)   balanced accuracy (200)
  from bert_pydoc  0.320 / 0.371                    0.199
  from scratch     0.287 / 0.349                    0.166
  (majority class, reference/datamodel: 0.287 of the 585 test passages)

28 and 18 min wall. Both arms are still close to guessing the two largest chapters at this
budget (only datamodel, stdtypes and library/string have recall above 0). The pooler was
trained on next-sentence prediction, which stayed at chance; with the mean of the outputs
instead (`--config.model.pool=mean`, 8 min each at load 8-9) the order flips: 0.352 from
bert_pydoc vs 0.374 from scratch (balanced 0.189 vs 0.178; 0.321 vs 0.330 at step 100).
So at 200 steps pre-training gives no reliable gain on this task (one seed each).

Why (diagnostics, 2026-12-07, load 10-19): the task is learnable but mostly by which
bytes occur: a logistic regression on byte counts (scikit-learn, C=1) scores 0.506 test
accuracy (balanced 0.424; class-weighted 0.451 / 0.472), above every fine-tuned encoder
here, which still underfit at 200 steps (train accuracy 0.35-0.41). The step-400
encoder's features are no better than random ones: a
logistic regression on the frozen encoder's mean output (standardised, C=0.1) scores 0.438
(balanced 0.319) from bert_pydoc and 0.482 (0.365) from the same encoder at its random
initialisation (the mean of random byte embeddings is a random projection of the byte
counts); on the [CLS] output 0.414 (0.235), so NSP left [CLS] no better. Not the
fine-tuning step size either: a 10x larger Adam step for the new layer alone
(`--config.model.head_lr_scale=10`) gave 0.379 (balanced 0.210) against 0.371 (0.199).
`task=order` takes the bag of bytes away, but at this recipe both arms stay at chance
(0.497 from bert_pydoc, 0.500 from scratch; seed 0, 9 min each at load 9-12), though a
logistic regression on the frozen step-400 encoder's features scores 0.530.
Note that bert_pydoc pre-trained on pydoc_text's train split (71 of the 79 topics), which
holds most test passages' text, unlabelled (so does configs/bert_tag_pydoc.py's test code).
"""

from arch.sequence import encoder_heads
from configs import bert_pydoc, recipes
from train import config_lib
from train.datasets import pydoc_chapters, pydoc_chapters_order
from train.errors import UserError

SOURCE = 'configs/bert_pydoc.py'  # the pre-training run: its encoder is bert_pydoc.SMALL


# task=NAME: (dataset, its class names)
TASKS = {'chapters': ('pydoc_chapters', pydoc_chapters.NAMES),
         'order': ('pydoc_chapters_order', pydoc_chapters_order.NAMES)}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, init='bert', src='', tiny=False, task='chapters')
  if a.task not in TASKS:
    raise UserError(f"task={a.task!r}; valid: {', '.join(TASKS)}")
  dataset, names = TASKS[a.task]
  c = config_lib.base()
  encoder = dict(bert_pydoc.SMALL)
  num_classes = len(names)
  c.task = 'sequence.text_classification'
  c.task_kwargs = dict(num_classes=num_classes, length=pydoc_chapters.LENGTH)
  c.model_name = 'sequence.encoder_heads:Classifier'
  c.model = dict(num_classes=num_classes, encoder=encoder, pool='pooler', dropout_rate=0.1)
  recipes.encoder_fine_tuning(c, dataset=dataset, init=a.init, src=a.src, source='bert',
                              source_spec=SOURCE,
                              init_paths=encoder_heads.bert_init_from(encoder['num_layers']))
  c.batch_size = 8 if a.tiny else 32
  return c
