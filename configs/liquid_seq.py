"""Liquid time-constant network (LTC), closed-form continuous-time network (CfC) and an LSTM
of the same hidden size on the event-based bit-stream XOR (the offline `events` dataset).

  python -m train --config configs/liquid_seq.py:model=ltc --workdir runs/liquid_ltc
  python -m train --config configs/liquid_seq.py:model=cfc --workdir runs/liquid_cfc
  python -m train --config configs/liquid_seq.py:model=lstm --workdir runs/liquid_lstm

Arguments: `model=ltc|cfc|lstm` (default cfc), `tiny` (tests). Each example is a stream of
6-12 random bits sent as events (a run of equal bits -> its bit and its duration, the
elapsed time); the label is the parity of the whole stream, which only the durations of
the 1-events decide (train/datasets/events.py: the best rule that ignores the gaps is
right on 53.5% of the train split). The LTC and the CfC take the duration as the elapsed
time of their step (the LTC's fused solver runs 6 unfolds over it; the CfC's gate reads
it), the LSTM as a second input feature. All three have 32 hidden units and a linear head
on the state after the last event (arch/dynamics/liquid.py); the CfC's backbone has one
layer of 64 units. Batch 128, 3,000 steps of AdamW at 5e-3 (100 warm-up steps, cosine),
gradients clipped at 1; eval `accuracy` over the test split's 4,000 streams.

Measured on a 2-core x86-64 CPU (2026-12-06, 1 device, jit, one seed each) while other
jobs loaded it (load average 11-14 at the start and end of each run, so the times are
upper bounds; the input pipeline, not the model, set the pace of the LSTM and the CfC):

  model   params   test accuracy (at steps 500 / 1000 / 1500 / 2000 / 2500 / 3000)   wall
  ltc      4,388   0.499 / 0.515 / 0.875 / 0.928 / 0.941 / 0.947 (loss 0.1044)      10 min 45 s
  cfc     10,562   0.948 / 0.964 / 0.962 / 0.974 / 0.978 / 0.979 (loss 0.0589)       9 min 20 s
  lstm     4,546   0.519 / 0.861 / 0.895 / 0.920 / 0.929 / 0.931 (loss 0.1359)       9 min 23 s

(the LSTM's wall time includes preparing the dataset, about half a minute). The CfC left
chance within its first 500 steps; the LSTM and the LTC sat at chance for 500-1,000 steps
first. On streams of 8-16 bits the LSTM left chance after about 1,500 steps and the CfC
after about 5,000 (standalone script, train/datasets/events.py); the LTC was not run there.
"""

from train import config_lib
from train.datasets import events


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model='cfc', tiny=False)
  if a.model not in ('ltc', 'cfc', 'lstm'):
    raise config_lib.UserError(f"model={a.model!r}; valid: ltc, cfc, lstm")
  c = config_lib.base()
  c.task = 'dynamics.irregular'
  c.task_kwargs = dict(num_classes=2, length=events.LENGTH, features=1)
  c.data.name = 'events'
  c.data.eval_split = 'test'
  c.model_name = 'dynamics.liquid'
  c.model = dict(cell=a.model, hidden_dim=32, num_classes=2, ode_unfolds=6,
                 backbone_units=64, backbone_layers=1)
  if a.tiny:
    c.model.update(hidden_dim=8, ode_unfolds=3, backbone_units=8)
  c.batch_size = 8 if a.tiny else 128
  c.total_steps = 4 if a.tiny else 3000
  c.log_every = 1 if a.tiny else 100
  c.eval_every = c.total_steps if a.tiny else 500
  c.ckpt_every = 2 if a.tiny else 1000
  c.optax_name = 'adamw'
  c.optax = dict(weight_decay=0.0)
  c.lr = 5e-3
  c.warmup_steps = 0 if a.tiny else 100
  c.grad_clip_norm = 1.0
  return c
