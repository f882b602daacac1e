"""An energy-based model of the offline 8x8 digits (labels unused; arch/generative/ebm.py):
contrastive divergence with Langevin MCMC and persistent chains (default), or
noise-contrastive estimation (`method=nce`); eval: the Fréchet distance of Langevin
samples to the test digits ('fd', with its floor and class coverage) and mean energies.

  python -m train --config configs/ebm_digits.py --workdir runs/ebm_digits
  python -m train.sample --config configs/ebm_digits.py --workdir runs/ebm_digits

Arguments: `method=cd|nce`, `tiny` (tests). Both: the energy network of 3x3 convolutions
32 -> 64 -> 128 with SiLU (92,801 params; NCE adds log Z), Adam 1e-4 with beta1 = 0
(as the IGEBM and JEM code), batch 64, 3,000 steps. CD: 20 Langevin steps of size 1 and
noise 0.01 per training step (JEM's), a 2,048-image persistent buffer with 5% restarts
from uniform noise, energy regularisation 1; samples continue the buffer's chains for 100
steps. NCE: one noise draw per data image from a full-covariance Gaussian fitted to the
first batch; samples start from that Gaussian and take 200 steps of unadjusted Langevin at
temperature 1 (step 1e-3, noise sqrt(2e-3)), since NCE fits a normalised density.

Measured on the 2-core CPU (2026-11, 1 device, jit), fresh workdirs:
  cd   fd 8.72 (floor 4.77; 13.82 / 8.18 at steps 1000 / 2000), class coverage 1.0;
       8.6 min wall (6.0 min CPU, user) with one other training job beside it (1-minute
       load average 3.3 at the start, 3.9 to 5.7 during the run); the same numbers in
       26.8 min under four to six other jobs (load 12-17). The samples are clear digits.
  nce  fd 17.52 with the sampler above (its noise Gaussian alone: 20.46), coverage 0.6 at
       the training run's own evals (which sampled with CD's settings: fd 54.8); 10.5 min
       wall at load 12-17, 3.0 min CPU; its data-vs-noise accuracy climbs to 0.93 (0.71 at step 1000).
       Against a Gaussian noise in 64 dimensions NCE's samples improve little on that
       Gaussian: once the two are easy to tell apart the loss says little more about
       the data (Gutmann & Hyvärinen's advice: noise close to the data).
"""

from train import config_lib, evaluators
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
  if a.method == 'nce':  # sampling only: unadjusted Langevin at temperature 1
    c.task_kwargs.update(step_size=1e-3, noise=(2e-3) ** 0.5, sample_steps=200)
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
  c.evals.fd = evaluators.entry('fd', every=-1 if a.tiny else 0)  # (tests switch it on)
  c.sample.num_samples = 64
  return c
