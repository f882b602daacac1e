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
`task=chapters|order|spell` (default chapters; order: `pydoc_chapters_order`, the same
passages as written or with their words shuffled; spell: `pydoc_chapters_spell`, as written
or with each word's inner letters shuffled; 2 classes that no bag of bytes separates). The
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
`task=spell` takes the bag of bytes away but leaves the bigrams: a logistic regression on
character bigrams (tf-idf) scores 0.966 (on single characters 0.500), and a byte-level
masked LM that reads its context would find scrambled words improbable. Yet from the
step-400 encoder both arms are at 0.500 at step 200 of 400 (seed 0, load 13-15; stopped
there), and a linear probe on its frozen mean output scores 0.497.
The reason (2026-12-07): the step-400 bert_pydoc run predicts masked bytes without reading
their context. Over 200 test passages of pydoc_chapters its masked-byte loss is 3.134
(accuracy 0.192) with the real context and 3.143 (0.191) with the unmasked bytes permuted
within each passage, and its masked-LM loss on scrambled passages equals that on the
originals (3.120 vs 3.127, 400 passages, 4 random masks each). Its train masked accuracy
(0.269 at step 400) is about what a context-free guess scores (the most frequent byte, 0.18,
on the 90% of chosen bytes it cannot see, plus the 10% left unchanged: 0.26). So it has
learned byte frequencies only, which the tagging task can use (a byte's tag follows mostly
from the byte) and no sequence-level task can. Changing one input byte moves the trained
model's masked-LM logits at its masked neighbour by 0.009 (logit scale 5.7). Two other
400-step recipes stay on the same plateau (train masked accuracy 0.272 with
`--config.task_kwargs.mask_rate=0.4`, 0.263 with `--config.lr=5e-4`; masked loss with real
vs permuted context 3.108 vs 3.112 and 3.172 vs 3.172; 5 min each at load 5), while
bart_pydoc leaves it by step 500 (masked accuracy 0.23 at 250, 0.30 at 500, batch 8). The
default schedule stretched to 1,200 steps (`--config.total_steps=1200`, 15 min at load 1-5)
starts to leave it: validation masked accuracy 0.346 / 0.375 / 0.383 at steps 400 / 800 /
1,200, train 0.269 / 0.285 / 0.294, and masked loss with real vs permuted context 3.106 vs
3.229 (accuracy 0.190 vs 0.161). A BERT source that reads context well (longer still, or
whatever lets BART's attention find the neighbouring bytes sooner) is what these tasks need;
BART's 3,000-step encoder gave a small gain, not beyond seed noise in accuracy
(configs/bart_classify_pydoc.py).
From that 1,200-step source, 400 fine-tuning steps (`--config.total_steps=400
--config.eval_every=200`; 4 min wall each, two at a time, load 2-5), seeds 0 / 1:

                   test accuracy (step 200 / 400)   test loss (400)   balanced (400)
  from bert_pydoc  s0 0.383 / 0.402                 1.767             0.236
                   s1 0.397 / 0.397                 1.733             0.227
  from scratch     s0 0.364 / 0.366                 1.813             0.173
                   s1 0.369 / 0.376                 1.792             0.178

A gain in both seeds: +0.036 / +0.021 test accuracy (the arms' seeds differ by 0.005 and
0.010), 0.05-0.06 lower test loss, +0.05-0.06 balanced accuracy (train accuracy at step
400 0.471 / 0.448 vs 0.381 / 0.402). The step-400 source's 0.371 vs 0.349 above was at 200
steps and one seed.
Note that bert_pydoc pre-trained on pydoc_text's train split (71 of the 79 topics), which
holds most test passages' text, unlabelled (so does configs/bert_tag_pydoc.py's test code).
"""

from arch.sequence import encoder_heads
from configs import bert_pydoc, recipes
from train import config_lib
from train.datasets import pydoc_chapters, pydoc_chapters_order, pydoc_chapters_spell
from train.errors import UserError

SOURCE = 'configs/bert_pydoc.py'  # the pre-training run: its encoder is bert_pydoc.SMALL


# task=NAME: (dataset, its class names)
TASKS = {'chapters': ('pydoc_chapters', pydoc_chapters.NAMES),
         'order': ('pydoc_chapters_order', pydoc_chapters_order.NAMES),
         'spell': ('pydoc_chapters_spell', pydoc_chapters_spell.NAMES)}


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
