"""An energy-based model of the offline 8x8 digits (labels unused; arch/generative/ebm.py):
contrastive divergence with Langevin MCMC and persistent chains (default), or
noise-contrastive estimation (`method=nce`); eval: the Fréchet distance of Langevin
samples to the test digits ('fd', with its floor and class coverage) and mean energies.

  python -m train --config configs/ebm_digits.py --workdir runs/ebm_digits
  python -m train.sample --config configs/ebm_digits.py --workdir runs/ebm_digits

Arguments: `method=cd|nce`, `tiny` (tests).
"""

from train import config_lib
from train.errors import UserError


def get_config(arg=None):
  a = config_lib.parse_arg(arg, method='cd', tiny=False)
  if a.method not in ('cd', 'nce'):
    raise UserError(f"unknown method {a.method!r}; valid: cd, nce")
  c = config_lib.base()
  c.task = 'generative.ebm'
  c.task_kwargs = dict(input_size=(8, 8), channels=1, method=a.method, langevin_steps=20,
                       step_size=1.0, noise=0.01, energy_reg=1.0, buffer_size=2048,
                       reinit=0.05, data_noise=0.005, nce_ratio=1, nce_shrinkage=0.1,
                       sample_steps=100)
  c.data.name = 'digits'
  c.data.eval_split = 'test'
  c.model_name = 'generative.ebm'
  c.model = dict(features=(32, 64, 128))
  if a.tiny:
    c.model.features = (4, 8)
    c.task_kwargs.update(langevin_steps=2, buffer_size=16, sample_steps=3)
  c.batch_size = 8 if a.tiny else 64
  c.total_steps = 3000
  c.log_every = 100
  c.eval_every = 1000
  c.ckpt_every = 1000
  c.optax_name = 'adam'
  c.optax = dict(b1=0.0, b2=0.999)
  c.lr = 1e-4
  c.schedule = 'constant'
  c.evaluators = () if a.tiny else ('fd',)  # (tests opt in)
  c.sample.num_samples = 64
  return c
