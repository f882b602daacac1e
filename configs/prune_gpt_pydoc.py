"""Pruning the pydoc GPT of configs/gpt_pydoc.py (arch/compress/prune.py): global magnitude
pruning of every attention and MLP kernel (embeddings, norms and biases stay dense) on Zhu &
Gupta's gradual schedule, fine-tuning the trained dense run, or the lottery ticket's
iterative pruning with rewinding from the initialisation.

  python -m train --config configs/prune_gpt_pydoc.py:sparsity=0.5 --workdir runs/prune_gpt \\
      --config.frozen.dense.workdir=runs/gpt_pydoc

The dense run is a frozen run (by default WORKDIR/frozen_dense, trained there first with
configs/gpt_pydoc.py, about 10 minutes, when it holds no checkpoint). global: 100 steps,
the sparsity rising from 0 at step 0 to `sparsity` at step 60 (masks every 10 steps),
cosine learning rate from 3e-4.

Arguments: `sparsity=S` (default 0.5), `method=global|lottery` (channel pruning is of conv
kernels; the GPT has none), `variant` (gpt_pydoc's: cpu, tiny, ...), `tiny` (= variant=tiny,
for tests).

Prunable: the 3,145,728 attention and MLP kernel weights of the 3,258,880 parameters.

Measured on the shared 2-core CPU (2026-12-06, 1 device, jit; load average 3.8-5.8 from
other jobs, so wall times are upper bounds), 100 steps from the dense run
/work/runs_lead/fp16/fp32 (configs/fp16_gpt_pydoc.py:precision=fp32,steps=200: validation
loss 2.0242 nats/byte, accuracy 0.4477). That run is short of converged, so the fair
comparison is the same 100-step fine-tune at sparsity 0 (`sparsity=0`):
  sparsity   validation loss   accuracy   wall (with start-up and 2 evals)
  0 (dense)  1.9352            0.4709     255 s
  0.5        1.9480            0.4673     266 s
  0.8        2.0319            0.4466     216 s
  0.9        2.2453            0.3958     232 s
(the run it started from: 2.0242 / 0.4477). Half of the weights cost 0.013 nats/byte; at
80% the fine-tune only gets back to where the dense run started, at 90% it is 0.31 behind
the dense fine-tune. Commands:
  python -m train --config configs/prune_gpt_pydoc.py:sparsity=S \\
      --workdir /work/runs_prune/gpt_global_S \\
      --config.frozen.dense.workdir=/work/runs_lead/fp16/fp32 \\
      '--config.frozen.dense.spec=configs/fp16_gpt_pydoc.py:precision=fp32,steps=200'
"""

from configs import gpt_pydoc
from train import config_lib
from train.errors import UserError

METHODS = ('global', 'lottery')


def get_config(arg=None):
  a = config_lib.parse_arg(arg, sparsity=0.5, method='global', variant='cpu', tiny=False)
  if a.method not in METHODS:
    raise UserError(f'unknown method {a.method!r}; valid: {", ".join(METHODS)}')
  variant = 'tiny' if a.tiny else a.variant
  c = gpt_pydoc.get_config(f'variant={variant}')
  base_task, base_kwargs = c.task, dict(c.task_kwargs or {})
  c.task = 'compress.prune'
  c.task_kwargs = dict(base_task=base_task, base_kwargs=base_kwargs, method=a.method,
                       sparsity=a.sparsity)
  c.warmup_steps = 0
  if a.method == 'lottery':  # from scratch, gpt_pydoc's own optimizer
    rounds, round_steps, rewind = 3, 200, 20
    c.task_kwargs.update(rounds=rounds, round_steps=round_steps, rewind_step=rewind)
    c.total_steps = rewind + (rounds + 1) * round_steps
    c.eval_every = round_steps
    c.ckpt_every = round_steps
  else:
    c.frozen.dense = dict(spec=f'configs/gpt_pydoc.py:variant={variant}', workdir='')
    c.task_kwargs.update(begin_step=0, end_step=60, every=10)
    c.total_steps = 100
    c.lr = 3e-4
    c.schedule = 'cosine'
    c.log_every = 20
    c.eval_every = 100
    c.ckpt_every = 100
  return c
