"""INT8 quantization of the digits ResNet of configs/resnet_digits.py (arch/compress/quant.py):
post-training quantization (`method=ptq`: per-channel int8 weights with BatchNorm folded,
activation ranges calibrated on 8 train batches) or quantization-aware training
(`method=qat`: fake-quantized fine-tuning with straight-through gradients); eval runs the
int8 x int8 -> int32 network.

  python -m train --config configs/int8_resnet_digits.py:method=ptq --workdir runs/int8_ptq \\
      --config.frozen.float.workdir=runs/resnet_digits

The float run is a frozen run: by default WORKDIR/frozen_float, trained there first (about
3 minutes) when it holds no checkpoint; point `--config.frozen.float.workdir` at an existing
resnet_digits run to reuse it.

Arguments: `method=ptq|qat`, `calibration=max|percentile`, `tiny` (small nets for tests).

Measured on the shared 2-core CPU (2026-12-06, 1 device, jit, load average 10-14 from
other jobs, so wall times are upper bounds). The float run (configs/resnet_digits.py, 400
steps, about 5 min wall): test accuracy 0.9972 (359/360), test loss 0.01731.
  ptq (8 calibration batches of 64, 56 s wall with start-up): int8 test accuracy 0.9972,
      agreement with float 1.0, test loss 0.01742 (+0.00011), logits' relative error
      ||z_int8 - z_float|| / ||z_float|| 0.0278; calibration=percentile (99.99th): 0.9972,
      loss 0.01736, relative error 0.0304.
  qat (200 steps, cosine from lr 1e-4, from the float run, about 4 min wall): int8 test accuracy
      0.9972, agreement 1.0, test loss 0.00957 (the fine-tune also lowers the loss; the
      logits moved 0.42 relative to the float run's).
So on digits int8 loses nothing in accuracy (PTQ already matches; QAT has nothing to
recover). Inference speed, batch 256, jitted, same load (arch.compress.quant.inference_speed):
this tiny ResNet 489 images/s float32 vs 322 int8 (0.66x: its small convs pay for the
im2col gather and the requantization); ResNet-18 with the 32px stem (random weights) 23.8
vs 27.8 images/s (1.17x).
"""

from configs import recipes
from configs import resnet_digits
from train import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, method='ptq', calibration='max', tiny=False)
  float_arg = 'tiny' if a.tiny else None
  f = resnet_digits.get_config(float_arg)
  c = config_lib.base()
  recipes.digits(c, size=32, shift=2)
  c.task = 'compress.quant'
  c.task_kwargs = dict(method=a.method, calibration=a.calibration, percentile=99.99,
                       ema_decay=0.9)
  c.model_name = f.model_name
  c.model = f.model.to_dict()
  c.frozen.float = dict(spec='configs/resnet_digits.py' + (':tiny' if a.tiny else ''),
                        workdir='')
  if a.method == 'ptq':  # steps are calibration batches: no gradient, no optimizer use
    c.total_steps = 8
    c.log_every = 8
    c.eval_every = 8
    c.ckpt_every = 8
  else:
    c.total_steps = 200
    c.log_every = 50
    c.eval_every = 100
    c.ckpt_every = 100
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=5e-4)
  c.lr = 1e-4
  c.warmup_steps = 0
  return c
