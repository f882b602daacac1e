"""NADE (Larochelle & Murray 2011) or a fully visible sigmoid belief net on the offline
8x8 digits, BINARIZED (a pixel is 1 when its uint8 value is > 127; labels unused): exact
likelihood of the 64 binary pixels in raster order (arch/generative/autoregressive.py);
eval: test bits/dim (bits per binary pixel) and nll (nats per image).

  python -m train --config configs/nade_digits.py --workdir runs/nade_digits
  python -m train --config configs/nade_digits.py:model=fvsbn --workdir runs/fvsbn_digits
  python -m train.sample --config configs/nade_digits.py --workdir runs/nade_digits

Arguments: `model=nade|fvsbn`, `tiny` (tests). NADE: 500 hidden units, 6,000 steps of batch
64 (267 epochs), AdamW 3e-3; FVSBN: 3,000 steps at 1e-2; both cosine.

Measured on the 2-core CPU (2026-11, 1 device, jit) while other jobs shared it, fresh
workdirs under /tmp:
  nade   test 0.3745 bits/dim (16.62 nats/image; train 0.306), 3.8 min wall, load average
         1.5 at the start (5.9 at the end), 64,564 params; steps 1000 / 2000 / 3000 / 6000:
         0.399 / 0.382 / 0.376 / 0.3745
  fvsbn  test 0.4119 bits/dim (18.27 nats/image; train 0.394), 0.6 min wall, load average
         5.9, 2,080 params (the 2,016 weights of pixels on earlier pixels and 64 biases);
         steps 1000 / 2000 / 3000: 0.414 / 0.412 / 0.412
Reference point, exact: an independent Bernoulli per pixel fitted to the binarized train
split (add-1/2 counts) gives 0.569 test bits/dim (a constant 1/2: 1).
"""

from arch.generative import autoregressive
from train import config_lib
from train.errors import UserError

MODELS = {'nade': 'generative.autoregressive:NADE', 'fvsbn': 'generative.autoregressive:FVSBN'}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model='nade', tiny=False)
  if a.model not in MODELS:
    raise UserError(f'unknown model {a.model!r}; valid: {", ".join(MODELS)}')
  c = config_lib.base()
  c.task = 'generative.autoregressive'
  c.task_kwargs = dict(input_size=(8, 8), channels=1)
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.model_name = MODELS[a.model]
  c.model = dict(num_pixels=64)
  if a.model == 'nade':
    c.model.hidden = autoregressive.TINY['hidden'] if a.tiny else 500
    c.total_steps = 6000
    c.lr = 3e-3
  else:  # logistic regressions: convex, a larger step size converges sooner
    c.total_steps = 3000
    c.lr = 1e-2
  c.batch_size = 8 if a.tiny else 64
  c.log_every = 100
  c.eval_every = 1000
  c.ckpt_every = 1000
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.0)
  c.sample.num_samples = 16
  return c
