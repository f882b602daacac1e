"""Mixed precision on configs/gpt_pydoc.py's GPT: float16 compute on float32 master weights
with dynamic loss scaling (Micikevicius et al. 2018; train/precision.py), bfloat16 compute
(no scaling: bfloat16 keeps float32's exponent range), or float32, otherwise the same run.

  python -m train --config configs/fp16_gpt_pydoc.py:precision=fp16 --workdir runs/fp16_gpt

Arguments: `precision=fp16|bf16|fp32` (default fp16), `variant` (gpt_pydoc's: cpu, tiny,
gpt2, ...), `steps` (default gpt_pydoc's 600).

The logits, the loss, softmax statistics and normalisation run in float32 whatever the
compute dtype (the models cast them), so float16 matters for the matmuls and activations.
Train lines log `loss_scale` and `overflow` (1 on a step the scaler skipped).

Measured on the 2-core CPU (2026-12-06, 1 device, jit, `steps=200`: the cosine schedule
over 200 steps; other jobs shared the machine, load average 4-5), validation loss at step
200 (nats per byte):

  precision   val loss   accuracy   wall     train.bench ms/step (back to back, load 4)
  fp32        2.0242     0.4477     706 s    1,813
  fp16        2.0211     0.4479     415 s    1,961
  bf16        2.0157     0.4498     570 s    1,719

float16 with dynamic loss scaling trains to the float32 loss (the scale stayed at 2^15,
no overflow at the logged steps); the walls differ with the load, and the back-to-back
step times show no speed-up from either 16-bit type on this CPU.

bfloat16 on the chip's matrix units (2026-12-07, #11): XLA:CPU runs a bfloat16 dot on the
AMX units only with a float32 result (docs/speed.md), so the weight layers' products now
go through arch/layers/matmul.py (float32-accumulated, rounded to bfloat16: the same sums
XLA computed before, by a faster route) and bias gradients sum in float32. Back to back at
the top CPU priority beside a load of 15 (docs/findings.md), gpt_pydoc's step without
dropout: float32 771 / 779 / 753 ms, bfloat16 645 / 646 / 620 (1.2x; 853 ms before the
change, slower than float32); with dropout 976 against 756 (1.29x). `steps=200`:

  precision   val loss   accuracy   wall (compile and evals included)
  fp32        2.0242     0.4477     220 s
  bf16        2.0251     0.4461     169 s

float16 keeps the bfloat16 -> bfloat16 route's speed (XLA:CPU's float16 dots have no
such path).
"""

from configs import gpt_pydoc
from train import config_lib
from train.errors import UserError

PRECISIONS = {'fp16': ('float16', 'dynamic'), 'bf16': ('bfloat16', ''), 'fp32': ('float32', '')}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, precision='fp16', variant='cpu', steps=600)
  if a.precision not in PRECISIONS:
    raise UserError(f'unknown precision {a.precision!r}; valid: {", ".join(PRECISIONS)}')
  c = gpt_pydoc.get_config(f'variant={a.variant}')
  c.compute_dtype, c.loss_scale = PRECISIONS[a.precision]
  c.param_dtype = 'float32'
  c.total_steps = a.steps
  return c
