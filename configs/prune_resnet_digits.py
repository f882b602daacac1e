"""Pruning the digits ResNet of configs/resnet_digits.py (arch/compress/prune.py): masks in
the loop, global magnitude pruning on Zhu & Gupta's gradual schedule (`method=global`),
lottery-ticket iterative pruning with rewinding (`method=lottery`), or L1-norm pruning of
whole conv output channels (`method=channel`).

  python -m train --config configs/prune_resnet_digits.py:sparsity=0.9 --workdir runs/prune90 \\
      --config.frozen.dense.workdir=runs/resnet_digits

global / channel fine-tune the trained dense run (a frozen run: by default
WORKDIR/frozen_dense, trained there first, about 3-5 minutes, when it holds no checkpoint):
200 steps, the sparsity rising from 0 at step 0 to `sparsity` at step 100 (masks every 10
steps), then 100 steps at the final masks; cosine learning rate from 1e-3. lottery trains
from the initialisation: the params at step 20 are the rewind point, 3 rounds of 150 steps
each prune 1 - (1 - s)^(1/3) of the remaining weights and rewind, a 4th round trains the
final ticket (620 steps).

Arguments: `sparsity=S` (default 0.9), `method=global|lottery|channel`, `tiny` (small nets
for tests).

Prunable: the 307,088 conv and Dense kernel weights of the 308,538 parameters (channel: the
305,808 conv kernel weights, the same fraction of output channels in every conv).

Measured on the shared 2-core CPU (2026-12-06, 1 device, jit; load average 5-8 from other
jobs, so wall times are upper bounds), fine-tuning the dense run /work/runs_int8/resnet_digits
(configs/resnet_digits.py, 400 steps: test accuracy 0.9972, test loss 0.01731):
  sparsity   method    test accuracy   test loss   wall (with start-up, 200 steps)
  0 (dense)  -         0.9972          0.01731     (the run it starts from)
  0          global    0.9972          0.01244     78 s (load 3.8-4.4): the same fine-tune
  0.5        global    0.9972          0.01266     66 s (load 4.7-5.4)
  0.8        global    0.9944          0.01812     167 s (load 5.4-7.8)
  0.9        global    0.9944          0.03607     63 s (load 7.8-6.4)
  0.5        channel   0.9944          0.09350     63 s (load 6.3-5.6)
(at step 100, when the masks had just reached the final sparsity: 0.9944 / 0.9944 / 0.9917
for global 0.5 / 0.8 / 0.9). One test example in 360 is 0.0028: global pruning keeps the
accuracy within one example up to 90% sparsity after a 200-step fine-tune; the test loss
grows from 80%. lottery (0.9, from scratch, 620 steps, 148 s wall, load 5.6-6.7): test
accuracy 0.9833 (dense, step 150), 0.9889 (53.6% sparse, step 300), 0.9944 (78.5%, step
450), 0.9917 (90%, step 600), 0.9750 at step 620 (the constant learning rate 3e-3 leaves
the last steps noisy; no random-reinitialisation control was run, so this does not test the
lottery-ticket claim itself).

  python -m train --config configs/prune_resnet_digits.py:sparsity=S \\
      --workdir /work/runs_prune/digits_global_S \\
      --config.frozen.dense.workdir=/work/runs_int8/resnet_digits
(channel: `:method=channel,sparsity=0.5`; lottery: `:method=lottery,sparsity=0.9`, no dense run.)
"""

from configs import resnet_digits
from train import config_lib
from train.errors import UserError

METHODS = ('global', 'lottery', 'channel')


def get_config(arg=None):
  a = config_lib.parse_arg(arg, sparsity=0.9, method='global', tiny=False)
  if a.method not in METHODS:
    raise UserError(f'unknown method {a.method!r}; valid: {", ".join(METHODS)}')
  dense_spec = 'configs/resnet_digits.py' + (':tiny' if a.tiny else '')
  c = resnet_digits.get_config('tiny' if a.tiny else None)
  base_task, base_kwargs = c.task, c.task_kwargs.to_dict()
  c.task = 'compress.prune'
  c.task_kwargs = dict(base_task=base_task, base_kwargs=base_kwargs, method=a.method,
                       sparsity=a.sparsity)
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=5e-4)
  c.warmup_steps = 0
  if a.method == 'lottery':  # from scratch, resnet_digits' own learning rate
    rounds, round_steps, rewind = 3, 150, 20
    c.task_kwargs.update(rounds=rounds, round_steps=round_steps, rewind_step=rewind)
    c.total_steps = rewind + (rounds + 1) * round_steps
    c.lr = 3e-3
    c.schedule = 'constant'
    c.log_every = 50
    c.eval_every = round_steps
    c.ckpt_every = round_steps
  else:  # fine-tuning the dense run
    c.frozen.dense = dict(spec=dense_spec, workdir='')
    c.task_kwargs.update(begin_step=0, end_step=100, every=10)
    c.total_steps = 200
    c.lr = 1e-3
    c.schedule = 'cosine'
    c.log_every = 20
    c.eval_every = 100
    c.ckpt_every = 100
  return c
