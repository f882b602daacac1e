"""The attribute reader of caption_shapes (arch/vision/attributes.py): a small CNN reading
a 32x32 two-object scene back into its caption's colours, kinds and relation, trained on
`train` and measured on `test`, whose compositions `train` never shows. Text-to-image
models on caption_shapes use it for their prompt-following score
(`arch.vision.attributes.prompt_following`) and as the FD classifier:

  python -m train --config configs/caption_reader_shapes.py --workdir runs/caption_reader
  c.evals.fd = evaluators.entry('fd', classifier='configs/caption_reader_shapes.py')

Arguments: `tiny` for tests. The model fields are the Reader's defaults, so `Reader()`
takes this run's params.

Measured on a 2-core x86-64 CPU shared with other jobs (2026-12-06, 1 device, jit): 1,000
steps of batch 64 (Adam 2e-3, cosine, 100 warm-up), 206,308 parameters, on the 1,000 test
scenes (compositions `train` never shows):

  step   all_correct   colour   kind     axis    loss (sum of 5 cross-entropies)
   250   0.969         0.9935   0.9900   1.000   0.114
   500   0.998         0.9995   0.9995   1.000   0.016
   750   0.999         1.000    0.9995   1.000   0.009
  1000   0.999         1.000    0.9995   1.000   0.009

14.2 min wall (21:53-22:07 UTC) at load average 13.7 at the start and 17.4 at the end
(1.2-2.8 steps/s; an upper bound). `prompt_following` of the real test images against their
own captions: prompt_all 0.999, colour 1.000, kind 0.9995, relation 1.000 (the ceiling a
generator can reach); against the same captions with A and B exchanged (938 images whose
objects differ): prompt_all 0.000, relation 0.000.

As the FD classifier (its 128 features; run in /work/runs_reader/reader): fd_floor, 1,000
train scenes against the 1,000 test scenes, 24.26 (train[1000:2000] against train[:1000],
the same compositions: 20.74; two halves of test: 38.89, smaller samples). For scale, the
1,000 train scenes against test: channels RGB -> GBR (colours moved onto other palette
colours, layout kept) 46.3, a 3x3 box blur 246.5, flipped upside down (triangles inverted)
345.7. FD barely sees wrong colours whose overall mix is right: prompt-following does.
The first object's 18 (colour, kind) classes on test: 45-69 scenes each (class_coverage 1).
"""

from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base()
  c.task = 'vision.attributes'
  c.model_name = 'vision.attributes'
  c.model = dict(widths=(16, 32, 64), hidden=128, norm_groups=4)
  if a.tiny:
    c.model.update(widths=(4, 4, 8), hidden=8)
  c.data.name = 'caption_shapes'
  c.data.eval_split = 'test'

  c.batch_size = 8 if a.tiny else 64
  c.eval_batch_size = 8 if a.tiny else 250
  c.total_steps = 4 if a.tiny else 1000
  c.log_every = 1 if a.tiny else 100
  c.eval_every = c.total_steps if a.tiny else 250
  c.ckpt_every = 2 if a.tiny else 500
  c.optax_name = 'adam'
  c.lr = 2e-3
  c.schedule = 'cosine'
  c.warmup_steps = 0 if a.tiny else 100
  return c
