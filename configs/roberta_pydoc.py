"""RoBERTa (Liu et al. 2019) pre-trained with masked-LM alone on the pydoc text (byte-level
tokens, windows of 128 consecutive tokens): BERT's network and masked-LM head
(arch/sequence/bert.py with `bert.ROBERTA`'s fields) and BERT's objective
(arch/sequence/mlm.py) with RoBERTa's changes to the training:

  no next-sentence prediction (`nsp=False`): no pooler, no NSP head or loss, one token type;
  FULL-SENTENCES inputs: each window is <s> + 127 consecutive tokens of the split's
      documents, each document closed by </s>, so windows cross document boundaries as in
      fairseq's complete-block packing;
  dynamic masking: the task draws every row's 15% mask (80/10/10) from the step's rng, which
      the loop folds with the step, so a window seen in a later epoch gets a new mask (the
      BERT task already did this: nothing was added for it; tests/test_roberta.py checks it);
  learned positions offset by fairseq's padding index (rows 2..129 for 128 tokens).

  python -m train --config configs/roberta_pydoc.py --workdir runs/roberta_pydoc
  python -m train.summary --config configs/roberta_pydoc.py:variant=base

A separate config rather than an `objective=` argument of bert_pydoc.py: the two differ in
the model fields, the task options and the variants' counts, and each file's docstring
carries its own command and measured numbers.

Arguments: `variant=tiny|base|large` (default tiny: the CPU model below). `base` and `large`
are roberta-base / roberta-large (vocabulary 50265, 514 position rows); `train.summary`
prints Hugging Face RobertaForMaskedLM's counts, 124,697,433 and 355,412,057. They read the
byte-level ids here (a subset of their vocabulary), as bert_pydoc's published sizes do.

The tiny model is bert_pydoc's CPU model with RoBERTa's fields: 4 post-LN layers of width 128
(4 heads, MLP 512) over the 260 byte ids, 860,420 parameters (BERT's 877,062 less the pooler,
the NSP head and a token-type row, plus 2 position rows); batch 32 windows, 800 steps, AdamW
lr 2e-3 (b2 0.98, weight decay 0.01), 100 warmup steps, cosine decay: bert_pydoc's settings.
Measured on a 2-core x86-64 CPU (2026-12-07, 1 device, jit), shared with other jobs (load
average 17 at launch, 3.5 at the end; the run got about 10.5 CPU-minutes): 36 min wall.
Validation (496 windows), masked-token accuracy / mlm_loss:
  RoBERTa (this config): 0.307 / 2.769 at step 400, 0.318 / 2.696 at step 800;
  BERT (bert_pydoc, the same model size and schedule, MLM + NSP; another helper's run of
  2026-12-06, /work/runs_distill/teacher): 0.343 / 2.672 at step 400, 0.364 / 2.562 at step 800 (its docstring: 0.364 / 2.56).
Train-batch accuracy at steps 100 / 300 / 800: RoBERTa 0.185 / 0.262 / 0.268, BERT 0.174 /
0.263 / 0.280. So at these 800 steps MLM alone trails MLM + NSP by 0.046 (one seed each:
how much of that is seed noise was not measured). The two are scored on different inputs
(RoBERTa: <s> + 127 tokens; BERT: the sentence-pair layout, half its B segments from another
window), so the validation numbers compare only roughly. RoBERTa's gains in the paper come
with far more data, steps and larger batches than this run has.
"""

from arch.sequence import bert
from configs import bert_pydoc
from train import config_lib
from train.errors import UserError

# bert_pydoc's CPU model with RoBERTa's fields (positions 2..129 for 128 tokens).
SMALL = dict(bert_pydoc.SMALL, max_length=130, position_offset=2, type_vocab_size=1,
             norm_eps=1e-5, pooler=False)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant='tiny')
  if a.variant == 'tiny':
    model = dict(SMALL)
  elif a.variant in bert.ROBERTA_VARIANTS:
    model = dict(bert.ROBERTA_VARIANTS[a.variant])
  else:
    raise UserError(f'unknown variant {a.variant!r}; valid: tiny, '
                    f'{", ".join(bert.ROBERTA_VARIANTS)}')
  c = bert_pydoc.get_config('variant=tiny')
  c.model = model
  c.task_kwargs = dict(mask_rate=0.15, nsp=False)
  return c
