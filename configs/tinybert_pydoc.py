"""TinyBERT (Jiao et al. 2020): the pydoc BERT of configs/bert_pydoc.py distilled into a
4-layer student of width 64 (arch/compress/distill_lm.py): embedding, hidden-state and
attention-score MSE for the first half of the steps, then the prediction layer's soft
targets at the masked positions.

  python -m train --config configs/tinybert_pydoc.py --workdir runs/tinybert_pydoc \
      --config.frozen.teacher.workdir=runs/bert_pydoc
  python -m train.summary --config configs/tinybert_pydoc.py:variant=tinybert-4l-312d

The teacher is a frozen run: by default WORKDIR/frozen_teacher, trained there first (the
800 steps of configs/bert_pydoc.py) when it holds no checkpoint; point
`--config.frozen.teacher.workdir` at an existing bert_pydoc run to reuse it.

Arguments: `method=tinybert|distilbert|none` (none: the same student on the masked-LM loss
alone, the baseline), `variant=small|half|mobile` (the student: 4 layers of width 64, 4
heads, MLP 256, 233,862 parameters, plus the two 64 -> 128 maps' 16,384 while training;
2 layers of the teacher's width, 480,518; a 4-block MobileBERT of inter-block width 128,
bottleneck 32, 311,942), `variant=tinybert-4l-312d|distilbert-base|mobilebert` (the
published encoders, for train.summary: Hugging Face's BertModel of General_TinyBERT_4L_312D
14,350,248, DistilBertModel 66,362,880, MobileBertModel 24,844,544), `tiny` (small nets
and a 2-step teacher, for tests).

Measured on the 2-core CPU (2026-12-06, 1 device, jit) while other jobs shared it, each
from a fresh workdir with the same teacher (/work/runs_distill/teacher: configs/bert_pydoc.py,
800 steps, 22.2 min wall at load average 6-13; validation masked-token accuracy 0.3645,
mlm_loss 2.562), 400 student steps of batch 32, AdamW lr 2e-3, validation (496 windows):
  tinybert, small: masked-token accuracy 0.3571 (mlm_loss 2.646), agreeing with the
      teacher on 0.976 of the masked bytes; 10.4 min wall, load average 6.5-10;
  none, small:     0.3159 (mlm_loss 2.798); 8.1 min wall, load average 12-13.
So the 4-layer width-64 student (a quarter of the teacher's parameters) comes within 0.007
of the teacher's accuracy, where trained alone for as many steps it falls 0.049 short.
What the stages did (no ablation was run): by step 200, the end of the intermediate-layer
stage, the layers had learned the teacher's states (hidden MSE 3.82 -> 0.81, attention
18.7 -> 1.77, means over steps 1-100 and 101-200) but the MLM head none of its output
(train accuracy 0.008); the prediction stage brought it to the teacher's in 200 steps,
while the attention MSE, no longer trained, drifted back up to 9.9.
  tinybert, mobile: 0.3378 (mlm_loss 2.705), agreement 0.922; 4.8 min wall, load 3.3-3.6;
  none, mobile:     0.4867 (mlm_loss 1.918); 3.6 min wall, load 3.3-4.3.
MobileBERT alone beats its teacher by far: its 3-gram embedding hands every position its
neighbours' bytes, which byte-level masked LM mostly needs, while the BERTs must learn to
attend to them; distilled, it is held to the weaker teacher's states and predictions.
arch/sequence/mobilebert.py was checked against Hugging Face's MobileBertForPreTraining
(random weights, a padded row, both segments): logits within 8.3e-7.
"""

from arch.sequence import bert, mobilebert
from configs import bert_pydoc
from train import config_lib
from train.errors import UserError

# The students: 4 layers of width 64 (the teacher's 4 heads, head width 16); DistilBERT's
# shape, half the teacher's layers at its width; a 4-block MobileBERT whose inter-block
# width is the teacher's (as the paper's student shares its IB-BERT teacher's), bottleneck 32.
STUDENTS = {
    'small': dict(bert_pydoc.SMALL, embed_dim=64, mlp_dim=256),
    'half': dict(bert_pydoc.SMALL, num_layers=2),
    'mobile': dict(mobilebert.TINY, num_layers=4, num_heads=4, embed_dim=128,
                   bottleneck_dim=32, embedding_size=32, mlp_dim=128),
}
# For tests: a 2-layer width-32 teacher trained 2 steps, and students of its shapes.
TINY_TEACHER = dict(bert.TINY, num_layers=2, num_heads=2, embed_dim=32, max_length=16)
TINY_STUDENTS = {
    'small': dict(TINY_TEACHER, embed_dim=16),
    'half': dict(TINY_TEACHER, num_layers=1),
    'mobile': dict(mobilebert.TINY, max_length=16),
}
PUBLISHED = ('tinybert-4l-312d', 'distilbert-base', 'mobilebert')


def teacher_config(tiny: bool):
  """The teacher run: configs/bert_pydoc.py, or (tiny) its 2-layer width-32 version."""
  c = bert_pydoc.get_config()
  if tiny:
    c.model = dict(TINY_TEACHER)
    c.data.pack = 16
    c.batch_size = 8
    c.total_steps = 2
    c.eval_every = c.ckpt_every = 2
    c.warmup_steps = 0
  return c


def build(arg, method: str, temperature: float, own_file: str):
  a = config_lib.parse_arg(arg, variant='small', method=method, tiny=False, teacher=False)
  if a.teacher:
    return teacher_config(a.tiny)
  c = teacher_config(a.tiny)
  c.task = 'compress.distill_lm'
  c.task_kwargs = dict(method=a.method, temperature=temperature)
  if a.variant in PUBLISHED:
    if a.variant == 'mobilebert':
      c.model_name = 'sequence.mobilebert'
      c.model = dict(mobilebert.VARIANTS[a.variant], pretraining_heads=False)
    else:
      c.model = dict(bert.VARIANTS[a.variant])
    c.task_kwargs = dict(method='none', nsp=False)
    return c
  students = TINY_STUDENTS if a.tiny else STUDENTS
  if a.variant not in students:
    raise UserError(f'unknown variant {a.variant!r}; valid: {", ".join(students)}, '
                    f'{", ".join(PUBLISHED)}')
  c.model = dict(students[a.variant])
  if a.variant == 'mobile':
    c.model_name = 'sequence.mobilebert'
  if a.method != 'none':
    spec = f'configs/{own_file}:teacher,tiny' if a.tiny else 'configs/bert_pydoc.py'
    c.frozen.teacher = dict(spec=spec, workdir='')
  if a.tiny:
    c.total_steps, c.log_every = 4, 1
  else:
    c.total_steps = 400
    c.eval_every = c.ckpt_every = c.total_steps
  return c


def get_config(arg=None):
  return build(arg, 'tinybert', 1.0, 'tinybert_pydoc.py')
