"""A continuous normalizing flow (FFJORD, Grathwohl et al. 2019; arch/dynamics/cnf.py) and
RealNVP (Dinh et al. 2017; arch/dynamics/density.py) fitted by maximum likelihood to a 2-D
density of the offline toy2d set (train/datasets/toy2d.py); eval: the exact test NLL in
nats per point (the CNF's exact Jacobian trace), sampled through `train.sample`.

  python -m train --config configs/cnf_2d.py --workdir runs/cnf_2d
  python -m train --config configs/cnf_2d.py:model=realnvp --workdir runs/cnf_2d_realnvp
  python -m train --config configs/cnf_2d.py:density=checkerboard --workdir runs/cnf_2d_cb
  python -m train.sample --config configs/cnf_2d.py --workdir runs/cnf_2d --num_samples 4000

Arguments: `model=cnf|realnvp`; `density=eight_gaussians|moons|checkerboard|pinwheel`;
`tiny` (tests). The CNF is FFJORD's toy model: a 64-64-64 concat-squash MLP with tanh,
integrated over [0, 1] by Tsit5 with rtol = atol = 1e-5, trained with Hutchinson's
Rademacher estimator and gradients through the solver; RealNVP has 8 couplings of a
64-64 ReLU MLP. Both: Adam 1e-3, cosine schedule, batch 256.

Measured 2026-12-06 on the shared 2-core CPU (1 device, jit; nice 10 beside other agents'
jobs, so the wall times are upper bounds), 2,000 steps of batch 256, fresh workdirs, exact
test NLL in nats per point over the 5,000 test points (steps 500 / 1000 / 1500 / 2000):
  eight_gaussians (true density's NLL on the same points: 2.832, see toy2d.log_density)
    cnf      2.862 (3.006 / 2.889 / 2.866 / 2.862)  15.6 min wall, 6.9 min CPU, load 5.0-12.4
             9,224 params; 8.9 solver steps per test solve at the end, no failed solve
    realnvp  3.037 (3.327 / 3.102 / 3.058 / 3.037)  10.8 min wall, 2.5 min CPU, load 11.6-13.4
             36,912 params
  Samples (4,000 each, `train.sample` as above; docs/samples/cnf_2d.png and realnvp_2d.png):
  the CNF's show 8 separate blobs; RealNVP's the 8 modes joined by bridges of mass (a coupling flow's known failure on separated modes). The true
  density's mean NLL of the samples: cnf 2.92, realnvp 3.35 (data: 2.83).
  checkerboard (`density=checkerboard`; exact entropy log 32 = 3.466)
    cnf      3.843 (4.122 / 3.894 / 3.849 / 3.843)  15.0 min wall, 6.7 min CPU, load 10.6-13.4
    realnvp  3.728 (3.936 / 3.794 / 3.750 / 3.728)   6.3 min wall, 2.3 min CPU, load 11.3-13.4
  Samples: 79% (cnf) and 85% (realnvp) of them on the dark squares. Neither has learned the sharp edges in 2,000 steps
  (FFJORD trains its toy densities for 10,000): here the larger, cheaper RealNVP wins.
Re-timed alone on the idle machine (2026-12-06, nothing else running): the default (cnf,
eight_gaussians) in 4.3 min wall (7.2 min CPU), test NLL 2.8623.
The CNF's train loss is Hutchinson's (unbiased) estimate, its eval the exact trace; its
solves never hit max_steps (eval `failed` 0). `--config.parallelism=pmap` needs
`--config.model.adjoint=backsolve` (see arch/dynamics/cnf.py).
"""

from train import config_lib
from train.errors import UserError

DENSITIES = ('eight_gaussians', 'moons', 'checkerboard', 'pinwheel')
MODELS = {
    'cnf': ('dynamics.cnf', dict(hidden=(64, 64, 64), activation='tanh', time_length=1.0,
                                 solver='tsit5', rtol=1e-5, atol=1e-5, max_steps=1000,
                                 adjoint='recursive')),
    'realnvp': ('dynamics.density:RealNVP', dict(num_couplings=8, hidden=(64, 64))),
}
TINY = {'cnf': dict(hidden=(8, 8), rtol=1e-4, atol=1e-4, max_steps=200),
        'realnvp': dict(num_couplings=4, hidden=(8,))}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model='cnf', density='eight_gaussians', tiny=False)
  if a.model not in MODELS:
    raise UserError(f'unknown model {a.model!r}; valid: {", ".join(MODELS)}')
  if a.density not in DENSITIES:
    raise UserError(f'unknown density {a.density!r}; valid: {", ".join(DENSITIES)}')
  model_name, model = MODELS[a.model]
  c = config_lib.base()
  c.task = 'dynamics.density'
  c.task_kwargs = dict(density=a.density, trace='hutchinson', noise='rademacher')
  c.data.name = 'toy2d'
  c.data.eval_split = 'test'
  c.model_name = model_name
  c.model = dict(model, **TINY[a.model]) if a.tiny else dict(model)
  c.batch_size = 16 if a.tiny else 256
  c.eval_batch_size = 16 if a.tiny else 1000
  c.total_steps = 4 if a.tiny else 2000
  c.log_every = 1 if a.tiny else 100
  c.eval_every = c.total_steps if a.tiny else 500
  c.ckpt_every = 2 if a.tiny else 1000
  c.optax_name = 'adam'
  c.lr = 1e-3
  c.schedule = 'cosine'
  c.warmup_steps = 0 if a.tiny else 100
  c.sample.num_samples = 16 if a.tiny else 4000
  return c
